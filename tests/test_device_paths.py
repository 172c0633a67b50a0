"""What the CPU can show of the GPU path: which device and dtype each piece
of stored features ends up in, that copies made for a pass are freed, and
that a batch order travels to the features' device once per epoch."""

from __future__ import annotations

import torch

from core.features import FeatureBatches, _storage_form, inference_blocks, release_copy
from core.models import build_model


def test_feature_maps_stored_half_without_overflow():
    # bf16 (or float32) values beyond float16's range must not become inf.
    maps = torch.full((2, 96, 14, 14), 1e6, dtype=torch.bfloat16)
    stored = _storage_form(maps)
    assert stored.dtype == torch.float16
    assert torch.isfinite(stored).all()
    vectors = torch.randn(2, 1280, dtype=torch.bfloat16)
    assert _storage_form(vectors).dtype == torch.float32


def test_folded_copy_is_freed_and_model_untouched():
    model = build_model("efficientnet_lite0", num_classes=3, init="random").eval()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    runner = inference_blocks(model, 0, 3)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        expected = model.forward_to(3, x)
        assert torch.allclose(runner(x), expected, atol=1e-3)
    copies = [p for p in runner.parameters()]
    assert copies, "efficientnet-lite0's stem has BatchNorm: inference_blocks makes a folded copy"
    release_copy(runner)
    assert all(p.numel() == 0 for p in runner.parameters())
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]), name


def test_release_leaves_the_models_own_blocks_alone():
    model = build_model("efficientnet_lite0", num_classes=3, init="random").eval()
    own = torch.nn.Sequential(*list(model.blocks.values())[-2:])  # no BatchNorm in pool/head: no copy
    n = sum(p.numel() for p in model.parameters())
    release_copy(own)
    assert sum(p.numel() for p in model.parameters()) == n


def test_feature_batches_shuffle_keeps_rows_together():
    features = torch.arange(20, dtype=torch.float32).unsqueeze(1).repeat(1, 4)
    labels = torch.arange(20) % 3
    indices = torch.arange(100, 120)
    batches = FeatureBatches(features, labels, indices, batch_size=6, shuffle=True, seed=1, device="cpu")
    seen = []
    for x, y, idx, bad in batches:
        assert not bad
        assert x.dtype == torch.float32
        rows = (idx - 100).tolist()
        assert torch.equal(x[:, 0], torch.tensor(rows, dtype=torch.float32))
        assert torch.equal(y, torch.tensor(rows) % 3)
        seen += rows
    assert sorted(seen) == list(range(20)) and seen != list(range(20))
