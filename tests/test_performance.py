"""The fast paths' behaviour on real photos and real weights: the feature cache
is found again and invalidated when it should be, the decoded-image cache gives
the same pixels as the disk and steps aside when memory is short, and runs one
after another do not keep memory. No timings here: speed is measured by
`python -m bench`, side by side in one process (see the README's "Speed")."""

from __future__ import annotations

import gc
import multiprocessing.reduction
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import core.images
from core.features import FeatureBatches, inference_blocks
from core.loading import ImageDataset, collate_skip_broken, make_transform
from core.models import build_model
from core.scan import scan_and_decode, scan_folder
from tests.folders import small_copy
from tests.train_here import train_in

REPO = Path(__file__).resolve().parent.parent
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def copy_photos(src: Path, dst: Path, per_class: int) -> Path:
    """The first per_class photos of each class, in train/ and in val/."""
    return small_copy(src, dst, train=per_class, val=per_class)


# --------------------------------------------------------------------------
# Feature cache


def test_feature_cache_is_reused_and_invalidated(hymenoptera, offline_weights, tmp_path):
    data = copy_photos(hymenoptera, tmp_path / "data", per_class=4)

    _, first = train_in(tmp_path, data)
    record = first.status["feature_cache"]
    assert record["used"] and record["train"] and record["val"]
    assert record["hit"] is False
    assert "What they made is kept" in record["note"]

    # Another head, learning rate and optimiser, and a strategy that freezes
    # the same blocks: the stored features serve them all.
    for overrides in (
        {"head_hidden": 32, "head_dropout": 0.2, "lr": 3e-3, "optimizer": "sgd"},
        {"strategy": "custom", "trained_blocks": {"head": True}, "augment": "none"},
    ):
        job, run = train_in(tmp_path, data, **overrides)
        record = run.status["feature_cache"]
        assert record["hit"] is True, overrides
        assert record["prefix_blocks"] == first.status["feature_cache"]["prefix_blocks"]
        assert "earlier run" in record["note"]
        assert job.snapshot()["feature_cache"]["hit"] is True  # what the app shows while it trains

    # Anything that changes the stored outputs makes a new entry.
    _, run = train_in(tmp_path, data, image_size=160)
    assert run.status["feature_cache"]["hit"] is False
    _, run = train_in(tmp_path, data, backbone="efficientnet_lite0")
    assert run.status["feature_cache"]["hit"] is False

    photo = next((data / "train" / "bees").iterdir())
    os.utime(photo, ns=(photo.stat().st_atime_ns, photo.stat().st_mtime_ns + 10**9))  # same bytes, touched
    _, run = train_in(tmp_path, data)
    assert run.status["feature_cache"]["hit"] is False
    _, run = train_in(tmp_path, data)
    assert run.status["feature_cache"]["hit"] is True  # and the new entry is found again

    # A photo replaced by another (different content).
    shutil.copy(next((data / "train" / "ants").iterdir()), photo)
    _, run = train_in(tmp_path, data)
    assert run.status["feature_cache"]["hit"] is False


def test_augmented_fine_tune_caches_only_validation(hymenoptera, offline_weights, tmp_path):
    data = copy_photos(hymenoptera, tmp_path / "data", per_class=4)
    # New random changes every epoch (augment_views=0); stored versions: tests/test_augmented_views.py
    job, run = train_in(tmp_path, data, strategy="last-2", augment="light", augment_views=0)
    record = run.status["feature_cache"]
    assert record["used"] and record["val"] and not record["train"]
    assert "augmentation" in record["why_not"]
    decoded = run.status["decoded_images"]
    assert decoded["used"] and decoded["images"] == 16  # decoded by the scan, once
    assert decoded["read_every_epoch"] == 8  # the training images; the validation ones only for their features
    assert len(run.evaluation["predictions"]) == 8  # evaluated on the cached validation features


def test_feature_batches_cover_every_sample_once_per_epoch():
    features = torch.arange(10, dtype=torch.float32).unsqueeze(1).repeat(1, 3)
    labels = torch.arange(10) % 2
    indices = torch.arange(100, 110)
    batches = FeatureBatches(features, labels, indices, batch_size=4, shuffle=True, seed=0, device="cpu")
    assert len(batches) == 3
    epochs = []
    for _ in range(2):
        seen = []
        for x, y, idx, failed in batches:
            assert failed == [] and x.dtype == torch.float32 and len(x) <= 4
            assert torch.equal(x[:, 0].long() + 100, idx) and torch.equal(y, (idx - 100) % 2)
            seen += idx.tolist()
        assert sorted(seen) == list(range(100, 110))
        epochs.append(seen)
    assert epochs[0] != epochs[1]  # reshuffled every epoch
    again = FeatureBatches(features, labels, indices, batch_size=4, shuffle=True, seed=0, device="cpu")
    assert [i for _, _, idx, _ in again for i in idx.tolist()] == epochs[0]  # and the same for the same seed
    in_order = FeatureBatches(features.half(), labels, indices, batch_size=4, shuffle=False, seed=0, device="cpu")
    assert [i for _, _, idx, _ in in_order for i in idx.tolist()] == list(range(100, 110))


@pytest.mark.parametrize("backbone", ["mobilenet_v2", "efficientnet_lite0", "resnet18", "mobilenet_v3_small"])
def test_frozen_blocks_with_batchnorm_folded_compute_the_same(backbone, request):
    """The feature pass runs the frozen blocks with BatchNorm folded into the
    convolutions: the same function, whatever the network's structure (ResNet's
    blocks, EfficientNet-Lite's input-dependent padding, MobileNetV3's
    squeeze-excite)."""
    if backbone == "mobilenet_v2":
        request.getfixturevalue("offline_weights")  # its pretrained weights are in ../shared only
    init = "pretrained" if backbone in ("mobilenet_v2", "efficientnet_lite0") else "random"
    model = build_model(backbone, 3, init=init).eval()
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():  # random weights: statistics far from 0 and 1, so folding them matters
        if isinstance(module, torch.nn.BatchNorm2d) and init == "random":
            module.running_mean.uniform_(-0.5, 0.5, generator=generator)
            module.running_var.uniform_(0.5, 2.0, generator=generator)
    prefix = len(model.block_names) - 1
    folded = inference_blocks(model, 0, prefix)
    assert not [m for m in folded.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    x = torch.randn(2, 3, 128, 128, generator=generator)
    with torch.inference_mode():
        expected, got = model.forward_to(prefix, x), folded(x)
    assert (got - expected).abs().max() <= 1e-4 * expected.abs().max()
    # The model itself is untouched: its own BatchNorm layers are still there.
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


# --------------------------------------------------------------------------
# Decoded-image cache


def _mixed_folder(hymenoptera: Path, dst: Path) -> Path:
    """Two class folders of big and small JPEGs, the GIF placeholder and a
    truncated JPEG (which the scan leaves out)."""

    def pixels(path: Path) -> int:
        with Image.open(path) as img:  # the header is enough
            return img.size[0] * img.size[1]

    ants = hymenoptera / "train" / "ants"
    by_pixels = sorted(ants.glob("*.jpg"), key=pixels)
    for name, files in (("small", by_pixels[:3]), ("big", by_pixels[-3:] + [ants / "imageNotFound.gif"])):
        (dst / name).mkdir(parents=True)
        for f in files:
            shutil.copy(f, dst / name / f.name)
    (dst / "big" / "truncated.jpg").write_bytes(by_pixels[-1].read_bytes()[:2000])
    return dst


def test_decoded_images_give_the_same_tensors_as_the_disk(hymenoptera, tmp_path):
    data = _mixed_folder(hymenoptera, tmp_path / "data")
    for image_size, resize in ((224, 256), (160, 182)):
        report, cache, why = scan_and_decode(data, resize, val_fraction=0.5)
        samples = report.train + report.val
        assert (
            why is None
            and len(samples) == 7
            and [s.path for s in report.skipped] == [str(data / "big" / "truncated.jpg")]
        )  # the scan still checks every file
        assert len(cache) == 7 and cache.nbytes == sum(3 * w * h for w, h in (cache.get(p).size for p, _ in samples))
        assert max(min(cache.get(p).size) for p, _ in samples) == resize  # the big photos were brought down
        assert min(min(cache.get(p).size) for p, _ in samples) < resize  # the small ones kept their size

        tf = make_transform(image_size, resize, IMAGENET_MEAN, IMAGENET_STD)
        from_disk = ImageDataset(samples, tf, max_side=resize)
        from_memory = ImageDataset(samples, tf, max_side=resize, decoded=cache)
        for i, (path, _) in enumerate(samples):
            assert torch.equal(from_disk[i][0], from_memory[i][0]), (path, image_size)

    # Augmented training crops the images in memory: right shape, a new crop each time.
    train_tf = make_transform(160, 182, IMAGENET_MEAN, IMAGENET_STD, augment="light", train=True)
    augmented = ImageDataset(samples, train_tf, max_side=182, decoded=cache)
    first, second = augmented[3][0], augmented[3][0]
    assert first.shape == (3, 160, 160) and not torch.equal(first, second)
    # A file not held in memory is read from disk, and reported as broken if it is.
    missing = ImageDataset([(str(tmp_path / "gone.jpg"), 0)], tf, max_side=182, decoded=cache)
    assert missing[0][0] is None

    with pytest.raises(ValueError, match="182"):  # images kept for another resize size are not reused
        ImageDataset(samples, tf, max_side=256, decoded=cache)


def test_decoded_images_reach_worker_processes_through_shared_memory(hymenoptera, tmp_path):
    """A DataLoader's worker processes (on a GPU) get the decoded images. With
    spawn or forkserver (macOS, Windows, Linux from Python 3.14) the dataset
    is pickled to each worker: the pixels must travel as shared memory, not as
    a copy per worker, and the workers must see the same pictures."""
    data = copy_photos(hymenoptera, tmp_path / "data", per_class=3)
    report, cache, _ = scan_and_decode(data, 256)
    samples = report.train + report.val
    tf = make_transform(224, 256, IMAGENET_MEAN, IMAGENET_STD)
    dataset = ImageDataset(samples, tf, max_side=256, decoded=cache)
    expected = [dataset[i][0] for i in range(len(samples))]

    pickled = multiprocessing.reduction.ForkingPickler.dumps(dataset)  # what a spawned worker receives
    assert cache.nbytes > 1_000_000 and len(pickled) < cache.nbytes / 50, (len(pickled), cache.nbytes)

    loader = torch.utils.data.DataLoader(
        dataset, batch_size=4, num_workers=2, multiprocessing_context="spawn", collate_fn=collate_skip_broken
    )
    got = {int(i): x for images, _, indices, _ in loader for x, i in zip(images, indices)}
    assert sorted(got) == list(range(len(samples)))
    assert all(torch.equal(got[i], expected[i]) for i in got)

    # Keeping some of the images frees the rest; keeping most shares them.
    few = cache.subset([p for p, _ in samples[:2]])
    assert len(few) == 2 and few.nbytes < cache.nbytes / 2
    assert all(torch.equal(ImageDataset(samples[:2], tf, max_side=256, decoded=few)[i][0], expected[i]) for i in (0, 1))
    assert cache.subset([p for p, _ in samples[1:]]) is cache


def test_decoded_cache_steps_aside_when_memory_is_short(hymenoptera, offline_weights, tmp_path, monkeypatch):
    data = _mixed_folder(hymenoptera, tmp_path / "mixed")
    report, cache, why = scan_and_decode(data, 256, val_fraction=0.5, budget=100_000)
    assert cache is None and "read from disk" in why
    assert report.to_dict() == scan_folder(data, val_fraction=0.5).to_dict()  # the same scan otherwise

    # A whole run on a machine that can spare little memory reads from disk instead.
    data = copy_photos(hymenoptera, tmp_path / "data", per_class=3)
    monkeypatch.setattr(core.images, "DECODED_CACHE_MAX_BYTES", 100_000)
    # head_epochs=0: every epoch trains every block (the default head-only first epoch would store features)
    _, run = train_in(tmp_path, data, strategy="full", augment="light", batch_size=4, head_epochs=0)
    decoded = run.status["decoded_images"]
    assert decoded["used"] is False and "MB" in decoded["why_not"]
    assert run.status["feature_cache"]["used"] is False  # nothing stays frozen in a full fine-tune
    assert run.status["best_val_accuracy"] is not None


# --------------------------------------------------------------------------
# Memory


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads resident memory from /proc (Linux)")
def test_five_runs_in_a_row_do_not_grow_memory(hymenoptera, offline_weights, tmp_path):
    data = copy_photos(hymenoptera, tmp_path / "data", per_class=6)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # The heavier path: augmented images decoded in memory, cached validation
    # features, a fine-tune of the last blocks.
    common = dict(strategy="last-2", augment="light", augment_views=0, batch_size=4, device=device)
    rss, gpu = [], []
    for _ in range(5):
        train_in(tmp_path, data, **common)
        gc.collect()
        rss.append(_rss_bytes())
        if device == "cuda":
            gpu.append(torch.cuda.memory_allocated())
    # The first runs fill one-off caches (imports, oneDNN kernels, allocator
    # pools, cuBLAS workspaces); after that a run must leave nothing behind.
    # A run that kept its model (and the folded copy of its frozen blocks)
    # alive would add about 28 MB each time.
    growth = rss[-1] - rss[1]
    assert growth < 24 * 2**20, f"resident memory after each run: {[r // 2**20 for r in rss]} MB"
    if device == "cuda":
        assert len(set(gpu[1:])) == 1, f"GPU memory still allocated after each run: {gpu}"
        assert torch.cuda.memory_reserved() - torch.cuda.memory_allocated() < 2**24  # the cache was handed back


# --------------------------------------------------------------------------
# The benchmark runs (its figures are for the README, not asserted here)


def test_bench_quick_prints_every_row_of_issue_15s_targets(hymenoptera, shared_torch_home, tmp_path):
    """The default run, as a smoke run: the fine-tune against the tutorial, the
    full fine-tune against fastai (or why it was skipped), the cold linear
    probe against the floor with decoding counted, the warm path (or why it
    was not measured), the targets line and the whole run's time."""
    import importlib.util
    import json

    env = {**os.environ, "TORCH_HOME": str(shared_torch_home)}
    out = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--data", str(hymenoptera), "--json", str(tmp_path / "bench.json")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr + out.stdout
    rows = [
        "fine-tune (last-2, augmented)",
        "(a) tutorial loop, same blocks trained",
        "(b) Transfer Studio, cold cache",
        "(a)/(b)",
        "full fine-tune, 2 passes",
        "(b) Transfer Studio, full",
        "linear probe, 2 epochs",
        "(b) again, warm feature cache",
        "floor: forward pass",
        "(b)/floor",
        "the same, BatchNorm folded",
        "decoding alone",
        "warm path",
        "import torch + build one optimizer",
        "Targets (--quick",
        "The whole benchmark took",
    ]
    if importlib.util.find_spec("fastai"):
        rows += ["(c) fastai fine_tune ", "(c)/(b)", "full >= 2x faster than fastai's fine_tune"]
    else:
        rows += ["(c) fastai fine_tune: skipped"]
    missing = [text for text in rows if text not in out.stdout]
    assert not missing, f"missing {missing} in:\n{out.stdout}"
    results = json.loads((tmp_path / "bench.json").read_text())
    assert {"linear", "finetune", "full", "warm"} <= set(results)
    assert "cold linear probe <= 1.2x the floor (decoding counted)" in results["checks"]
    assert results["full"]["epochs"] == 2 and results["wall_seconds"] > 0


def test_a_bench_cut_short_prints_and_saves_the_sections_it_finished(hymenoptera, shared_torch_home, tmp_path):
    """On a lent GPU machine the bench runs under `timeout`: its SIGTERM in a
    later section must leave the finished sections' rows, on screen and in
    the JSON file, with what stopped it (the run of 2026-11-30 lost them all)."""
    import json
    import signal
    import time

    saved = tmp_path / "bench.json"
    env = {**os.environ, "TORCH_HOME": str(shared_torch_home)}
    args = [sys.executable, "-m", "bench", "--quick", "--data", str(hymenoptera), "--json", str(saved)]
    bench = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 600
        while not saved.exists() and bench.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)  # the file appears once the first section (the linear probe) is done
        assert bench.poll() is None, bench.communicate()[0]
        bench.send_signal(signal.SIGTERM)
        out, _ = bench.communicate(timeout=300)
    finally:
        bench.kill()
    assert bench.returncode == 1, out
    assert "did not finish (stopped)" in out and "Results (incomplete)" in out, out
    assert "(b) again, warm feature cache" in out  # the linear probe's rows
    results = json.loads(saved.read_text())
    assert "linear" in results and results["stopped_during"]["why"] == "stopped"
    assert results["stopped_during"]["section"] in ("finetune", "full", "warm")


# --------------------------------------------------------------------------
# Reproducible augmentation


def test_an_augmented_run_is_the_same_with_the_same_seed(hymenoptera, offline_weights, tmp_path):
    """Several threads crop the training pictures at once; each picture's
    random crop and flip come from its own seed, not from whichever thread
    reaches torch's global generator first, so a run can be repeated."""
    data = copy_photos(hymenoptera, tmp_path / "data", per_class=8)
    config = dict(strategy="last-1", augment="light", epochs=2, batch_size=4, image_size=128, num_workers=0)
    runs = [train_in(tmp_path, data, **config)[1] for _ in range(2)]
    first, second = ([(r["train_loss"], r["val_loss"]) for r in run.metrics] for run in runs)
    assert first == second
    _, other = train_in(tmp_path, data, **config, seed=1)
    assert [(r["train_loss"], r["val_loss"]) for r in other.metrics] != first  # the seed does matter
