"""Progressive resizing (core.progressive): when the pictures go through the
whole network every epoch, the first epochs train on smaller ones, on real
photos and weights; validation stays at full size."""

from __future__ import annotations

import torch

from core import progressive
from core.config import TrainConfig
from core.jobs import train_blocking
from tests.folders import small_copy


def test_sizes_grow_from_half_to_full_and_the_last_epoch_is_full():
    assert progressive.epoch_image_sizes(224, 6, 0.5) == [112, 144, 192, 224, 224, 224]
    assert progressive.epoch_image_sizes(224, 1, 0.9) == [224]  # one epoch: full size
    assert progressive.epoch_image_sizes(224, 4, 0.0) == [224] * 4
    # The share counts the epochs in which the pretrained blocks learn: 3 head-only epochs of 7 leave 4,
    # half of them small; the head-only epochs before take the first small size.
    assert progressive.epoch_image_sizes(224, 7, 0.5, head_epochs=3) == [112, 112, 112, 112, 160, 224, 224]
    assert progressive.epoch_image_sizes(224, 4, 0.5, head_epochs=3) == [224] * 4  # one learning epoch: full
    assert all(side % 16 == 0 for side in progressive.epoch_image_sizes(240, 10, 0.8))
    assert progressive.describe([224, 224]) is None
    assert "epochs 1 to 3" in progressive.describe([112, 144, 192, 224])


def test_a_shrunk_batch_keeps_its_layout():
    batch = torch.rand(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    small = progressive.shrink(batch, 32)
    assert small.shape == (2, 3, 32, 32) and small.is_contiguous(memory_format=torch.channels_last)
    assert progressive.shrink(batch, 64) is batch


def test_a_full_fine_tune_trains_its_first_epochs_small_and_says_so(hymenoptera, offline_weights, tmp_path):
    data = small_copy(hymenoptera, tmp_path / "data", train=4, val=2)
    config = TrainConfig(
        data_dir=str(data),
        strategy="full",
        epochs=3,  # a head-only first epoch (the default), then 2 in which every block learns
        image_size=96,
        progressive_resizing=0.5,
        device="cpu",
        cache_dir=str(tmp_path / "cache"),
    )
    job, run = train_blocking(config, runs_dir=tmp_path / "runs")
    assert job.state == "finished", job.snapshot()["reason"]
    assert run.status["decisions"]["epoch_image_sizes"] == [48, 48, 96]
    assert "epochs 1 to 2 learn from smaller pictures (48 px)" in job.snapshot()["resizing_note"]
    assert len(run.metrics) == 3

    # With stored features nothing is resized: they were computed at full size.
    config.strategy, config.progressive_resizing = "last-1", 0.5
    job, run = train_blocking(config, runs_dir=tmp_path / "runs")
    assert run.status["decisions"]["epoch_image_sizes"] is None and job.snapshot().get("resizing_note") is None
