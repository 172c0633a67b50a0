"""One training run in the test's own folders, trained to its end in this
process: the engine's defaults for a quick CPU run (MobileNetV2 linear probe,
one epoch, seed 0), any setting overridden by keyword."""

from __future__ import annotations

from pathlib import Path

from core.config import TrainConfig
from core.jobs import train_blocking


def train_in(tmp_path: Path, data: Path, **settings):
    """(job, run) of a finished run with its cache and runs folders under
    tmp_path; fails the test with the run's reason if it did not finish."""
    config = dict(
        data_dir=str(data),
        backbone="mobilenet_v2",
        strategy="linear",
        epochs=1,
        device="cpu",
        cache_dir=str(tmp_path / "cache"),
        seed=0,
    )
    config.update(settings)
    job, run = train_blocking(TrainConfig(**config), runs_dir=tmp_path / "runs")
    assert job.state == "finished", job.snapshot()["reason"]
    return job, run
