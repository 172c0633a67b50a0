"""The warm path: what a second linear probe on the same pictures skips.

`python -m core --help` loads no torch; a scan of a folder whose files are all
unchanged since a training's scan decodes none of them (its verdicts are kept
in the cache folder) and says the same; any changed, added or removed file and
it decodes again; a warm linear probe decodes nothing, while a run whose
epochs read pictures still gets them decoded once. Speed itself is measured by
`python -m bench.warm`, never asserted here.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import core.scan_cache
from core.checkpoints import EpochFiles, RunWriter
from core.config import TrainConfig
from core.evaluation import metrics_from_predictions
from core.jobs import train_blocking
from core.runs import RunStore, prepare_run
from core.scan import scan_and_decode, scan_folder, scan_if_checked_before
from core.scan_cache import CHECKED_BEFORE
from tests.folders import PACKAGED_BACKBONE, PHOTOS, small_copy

REPO = Path(__file__).resolve().parent.parent

_MODULES_AFTER = """
import runpy, sys
sys.argv = ["core", *sys.argv[1:]]
try:
    runpy.run_module("core", run_name="__main__")
except SystemExit:
    pass
print("MODULES", " ".join(sorted(m for m in sys.modules if "." not in m)), file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["adapt", "--help"]])
def test_help_imports_no_torch(args):
    done = subprocess.run(
        [sys.executable, "-c", _MODULES_AFTER, *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "usage: python -m core" in done.stdout
    modules = done.stderr.split("MODULES", 1)[1].split()
    assert "core" in modules
    assert not {"torch", "torchvision", "sklearn"} & set(modules)


# --------------------------------------------------------------------------
# The scan's verdicts, kept and reused


@pytest.fixture()
def decodes(monkeypatch) -> list[str]:
    """The paths the scan decodes, in order (the real decoder runs)."""
    seen: list[str] = []
    real = core.scan_cache.verify_image

    def counting(path, *args, **kwargs):
        seen.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(core.scan_cache, "verify_image", counting)
    return seen


def _folder_with_a_broken_file(tmp_path: Path) -> Path:
    data = small_copy(PHOTOS, tmp_path / "data", train=4, val=2)
    (data / "train" / "hat" / "notes.jpg").write_text("not a picture, a note saved as .jpg\n")
    return data


def _scan(data: Path, cache: Path, decodes: list[str]):
    decodes.clear()
    return scan_and_decode(data, 64, reuse_checks_from=cache)


def test_an_unchanged_folder_is_not_decoded_again(tmp_path, decodes):
    data, cache = _folder_with_a_broken_file(tmp_path), tmp_path / "cache"
    first, decoded, why = _scan(data, cache, decodes)
    pictures = len(decodes)
    assert pictures == 4 * 6 + 1 and decoded is not None and why is None  # every picture, the broken one too
    broken = str(data / "train" / "hat" / "notes.jpg")
    assert broken in {s.path for s in first.skipped}
    assert list((cache / "scans").glob("*.json"))

    again, decoded, why = _scan(data, cache, decodes)
    assert decodes == [] and decoded is None and why == CHECKED_BEFORE
    assert again.to_dict() == first.to_dict()  # the broken file still listed as skipped, with its reason

    # `python -m core scan` checks every file for real; the Data page reuses the verdicts
    # (and the sidebar asks for nothing else), unless its "Check this folder" asks for all.
    decodes.clear()
    assert scan_folder(data).to_dict() == first.to_dict() and len(decodes) == pictures
    decodes.clear()
    assert scan_folder(data, reuse_checks_from=cache).to_dict() == first.to_dict() and decodes == []
    assert scan_if_checked_before(data, 0.2, 0, cache).to_dict() == first.to_dict() and decodes == []
    assert scan_folder(data, reuse_checks_from=cache, decode_all=True).to_dict() == first.to_dict()
    assert len(decodes) == pictures
    (data / "train" / "hat" / "notes.jpg").touch()  # changed: the quick scan declines, decoding nothing
    decodes.clear()
    assert scan_if_checked_before(data, 0.2, 0, cache) is None and decodes == []


def test_any_change_to_the_files_brings_the_decoding_back(tmp_path, decodes):
    data, cache = _folder_with_a_broken_file(tmp_path), tmp_path / "cache"
    _scan(data, cache, decodes)

    # A picture replaced by a broken file of the same name.
    victim = sorted((data / "train" / "pants").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:300])  # a truncated JPEG
    report, decoded, _ = _scan(data, cache, decodes)
    assert len(decodes) == 4 * 6 + 1 and decoded is not None
    assert str(victim) in {s.path for s in report.skipped}
    assert str(victim) not in {p for p, _ in report.train}
    _scan(data, cache, decodes)
    assert decodes == []  # and the new verdicts are kept in turn

    # A new picture is decoded (and the rest with it). Once it is removed again, every
    # picture left is one whose kept verdict still holds: the walk drops the removed one.
    before = scan_folder(data).to_dict()
    new = data / "train" / "shoes" / "new.jpg"
    shutil.copy(sorted((data / "train" / "shoes").iterdir())[0], new)
    report, _, _ = _scan(data, cache, decodes)
    assert len(decodes) == 4 * 6 + 2 and str(new) in {p for p, _ in report.train}
    new.unlink()
    report, _, _ = _scan(data, cache, decodes)
    assert decodes == [] and report.to_dict() == before

    # A damaged verdicts file is never trusted.
    for kept in (cache / "scans").glob("*.json"):
        kept.write_text("{not json")
    _scan(data, cache, decodes)
    assert len(decodes) == 4 * 6 + 1


# --------------------------------------------------------------------------
# Training: a warm linear probe decodes nothing; epochs that read pictures get them


def _train(data: Path, tmp_path: Path, **settings):
    config = TrainConfig(
        data_dir=str(data),
        backbone=PACKAGED_BACKBONE,
        epochs=2,
        device="cpu",
        seed=0,
        cache_dir=str(tmp_path / "cache"),
        **settings,
    )
    job, run = train_blocking(config, runs_dir=tmp_path / "runs")
    assert job.state == "finished", job.snapshot()["reason"]
    return job.snapshot()["result"], run


def test_a_warm_linear_probe_decodes_nothing(tmp_path, empty_torch_home, decodes):
    data = _folder_with_a_broken_file(tmp_path)
    cold, cold_run = _train(data, tmp_path, strategy="linear")
    assert cold_run.status["decoded_images"]["used"] is True
    decodes.clear()
    warm, warm_run = _train(data, tmp_path, strategy="linear")
    assert decodes == []
    assert warm_run.status["feature_cache"]["hit"] is True
    assert warm_run.status["decoded_images"] == {"used": False, "why_not": CHECKED_BEFORE}
    assert warm["val_accuracy"] == cold["val_accuracy"] and warm["skipped_files"] == cold["skipped_files"] == 1
    assert warm_run.scan == cold_run.scan
    assert warm_run.evaluation == cold_run.evaluation

    # Augmented epochs read the training pictures every epoch: they are decoded, once.
    decodes.clear()
    _, augmented = _train(data, tmp_path, strategy="last-1", augment="light")
    record = augmented.status["decoded_images"]
    assert record["used"] is True and record["images"] == 4 * 6 and len(decodes) == 4 * 6


# --------------------------------------------------------------------------
# What else the warm path skips: scikit-learn, and checkpoints the disk cannot keep up with


@pytest.mark.filterwarnings("ignore:A single label was found")  # scikit-learn on a one-class draw
def test_metrics_count_as_scikit_learn_does():
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    rng = random.Random(0)
    for _ in range(200):
        n, m = rng.randint(1, 6), rng.randint(1, 40)
        labels = [rng.randrange(n) for _ in range(m)]
        preds = [rng.randrange(n) if rng.random() < 0.5 else t for t in labels]
        got = metrics_from_predictions(labels, preds, [f"class {i}" for i in range(n)])
        ids = list(range(n))
        assert got["confusion"] == confusion_matrix(labels, preds, labels=ids).tolist()
        precision, recall, f1, support = precision_recall_fscore_support(labels, preds, labels=ids, zero_division=0)
        for i, row in enumerate(got["per_class"]):
            assert row["precision"] == float(precision[i]) and row["recall"] == float(recall[i])
            assert row["f1"] == float(f1[i]) and row["support"] == int(support[i])
    assert metrics_from_predictions([], [], ["a", "b"])["confusion"] == [[0, 0], [0, 0]]


def test_epoch_files_waiting_for_the_disk_give_way_to_newer_ones(tmp_path):
    import torch

    run, lock = prepare_run(TrainConfig(data_dir=str(tmp_path)), RunStore(tmp_path / "runs"))
    heard: list[tuple[int, int]] = []  # (the epoch the progress hears of, the epoch of last.pt then)
    disk_busy = threading.Event()

    def hear(epoch: int) -> None:
        heard.append((epoch, torch.load(run.path / "last.pt", weights_only=True)["epoch"]))

    def files(epoch: int, best: bool) -> EpochFiles:
        payload = {"epoch": epoch, "model": {"w": torch.full((2,), float(epoch))}}
        numbers = dict.fromkeys(("train_loss", "val_loss", "train_accuracy", "val_accuracy"), 0.5)
        history = [{"epoch": e, **numbers} for e in range(1, epoch + 1)]  # whole rows: others read as damaged
        return EpochFiles(run, lambda: None, payload if best else None, payload, history, {"epochs_done": epoch})

    try:
        with RunWriter() as writer:
            writer.submit(disk_busy.wait)  # the disk is slow: nothing is written until it is free
            for epoch, best in ((1, True), (2, True), (3, False), (4, False)):
                writer.submit_files(files(epoch, best))
                writer.submit(hear, epoch)
            disk_busy.set()
            writer.flush()
    finally:
        lock.release()
    # The four epochs' files waited together: one write of the newest, before the progress heard of any.
    assert heard == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert torch.load(run.path / "last.pt", weights_only=True)["epoch"] == 4
    assert torch.load(run.path / "best.pt", weights_only=True)["epoch"] == 2  # the newest best, kept
    assert [r["epoch"] for r in run.metrics] == [1, 2, 3, 4]
    assert json.loads((run.path / "status.json").read_text())["epochs_done"] == 4


# --------------------------------------------------------------------------
# The garbage collector in the app's process (core.collection)


class _Node:
    def __init__(self):
        self.me = self  # a reference cycle: only a collection frees it


def test_the_app_freezes_what_lives_through_a_job_and_frees_old_cycles_later(tmp_path, empty_torch_home):
    import gc
    import weakref

    from core import collection
    from core.jobs import JobManager

    manager = JobManager(tmp_path / "runs")  # freezes what the process holds now
    assert gc.get_freeze_count() > 1000
    old = _Node()
    old_alive = weakref.ref(old)

    data = small_copy(PHOTOS, tmp_path / "data", train=3, val=2)
    config = TrainConfig(data_dir=str(data), backbone=PACKAGED_BACKBONE, epochs=1, device="cpu", seed=0)
    config.cache_dir = str(tmp_path / "cache")
    job = manager.submit(config)
    assert job.wait(600) and job.state == "finished", job.snapshot()["reason"]
    manager.wait_idle()  # its clean-up: what is new collected, the survivors (the node) frozen
    del old
    gc.collect()  # an ordinary collection skips frozen objects: the dropped cycle stays
    assert old_alive() is not None

    # Once the frozen objects have grown by a quarter, the next clean-up collects them all.
    grown = [[] for _ in range(int(gc.get_freeze_count() * (collection.FULL_AFTER_GROWTH - 1)) + 1000)]
    fulls = [collection.collect_and_freeze() for _ in range(2)]  # the first freezes them, at the latest
    assert any(fulls)
    assert old_alive() is None
    del grown
