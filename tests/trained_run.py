"""One small real training run shared by the explain, export and compare tests.

A fine-tune of MobileNetV2's last block (`last-1`, no augmentation, so the
frozen prefix is computed once through the feature cache) on a smaller copy of
the real hymenoptera photos. It is trained once per test session, the first
time a test asks for it, and reused: every test that reads it only reads.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

TRAIN_PER_CLASS = 30
VAL_PER_CLASS = 20

_made: dict[str, Path] = {}


def small_copy(src: Path, dst: Path, train: int, val: int) -> Path:
    """The first `train`/`val` photos of each class of a train/ + val/ folder."""
    for split, count in (("train", train), ("val", val)):
        for class_dir in sorted((src / split).iterdir()):
            files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() == ".jpg")[:count]
            out = dst / split / class_dir.name
            out.mkdir(parents=True)
            for f in files:
                shutil.copy(f, out / f.name)
    return dst


def trained_run(hymenoptera: Path, torch_home: Path, tmp_path_factory) -> Path:
    """The run folder (trained on first use)."""
    if "run" in _made and (_made["run"] / "eval.json").exists():
        return _made["run"]
    from core.config import TrainConfig
    from core.jobs import train_blocking

    root = tmp_path_factory.mktemp("trained-run")
    data = small_copy(hymenoptera, root / "data", TRAIN_PER_CLASS, VAL_PER_CLASS)
    config = TrainConfig(data_dir=str(data), backbone="mobilenet_v2", strategy="last-1", augment="none",
                         epochs=2, lr=1e-3, device="cpu", seed=0, cache_dir=str(root / "cache"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(torch_home))
        job, run = train_blocking(config, runs_dir=root / "runs")
    assert job.state == "finished", job.snapshot()["reason"]
    _made["run"] = run.path
    return run.path
