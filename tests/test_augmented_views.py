"""Stored augmented views (core.augmented_views): a fine-tune of the top
blocks with augmentation runs the frozen blocks once over K randomly changed
versions of each training picture, on real photos and real weights. Each
epoch takes one version of each picture; the versions are the same for the
same seed (tests/test_performance.py, test_an_augmented_run_is_the_same_with_the_same_seed,
runs with them), are found again in the feature cache, and step aside (with a
reason) when they would not fit in memory."""

from __future__ import annotations

import torch

from core import devices
from core.augmented_views import ViewBatches, stack_views, view_seeds
from core.decisions import views_that_fit
from core.evaluation import predict_paths
from tests.folders import small_copy
from tests.train_here import train_in


def train(tmp_path, data, **overrides):
    """A last-2 fine-tune with the tutorial's light augmentation, 2 epochs on 96-pixel pictures."""
    settings = dict(strategy="last-2", augment="light", epochs=2, image_size=96)
    return train_in(tmp_path, data, **{**settings, **overrides})


def test_a_fine_tune_trains_on_stored_versions_found_again_by_the_next_run(hymenoptera, offline_weights, tmp_path):
    data = small_copy(hymenoptera, tmp_path / "data", train=4, val=2)
    _, run = train(tmp_path, data, augment_views=2)
    record = run.status["feature_cache"]
    assert record["used"] and record["train"] and record["train_views"] == 2
    assert record["hit"] is False
    assert "2 randomly changed versions of each training image" in record["note"]
    assert run.status["decisions"]["train_views"] == 2
    assert run.status["decoded_images"]["read_every_epoch"] == 0  # no picture is read during the epochs
    assert len(run.metrics) == 2 and all(r["train_loss"] > 0 for r in run.metrics)

    _, again = train(tmp_path, data, augment_views=2, lr=3e-4)  # another rate, the same versions
    assert again.status["feature_cache"]["hit"] is True

    _, third = train(tmp_path, data, augment_views=3, epochs=3)  # a third version is new
    assert third.status["feature_cache"]["hit"] is False

    _, off = train(tmp_path, data, augment_views=0)
    record = off.status["feature_cache"]
    assert record["used"] and not record["train"] and "augmentation" in record["why_not"]
    assert off.status["decoded_images"]["read_every_epoch"] == 8  # the training pictures, every epoch


def test_versions_in_the_cpus_fast_precision_and_figures_in_float32(hymenoptera, offline_weights, tmp_path):
    # Where the CPU has bf16 units (this project's machine: a Xeon with AMX)
    # the versions go through the frozen blocks in bf16; the run's validation
    # figures stay those of float32 predictions, which the Playground gives.
    data = small_copy(hymenoptera, tmp_path / "data", train=4, val=3)
    _, run = train(tmp_path, data, augment_views=2)
    decisions = run.status["decisions"]
    fast = "bfloat16" if devices.cpu_has_bf16_units() else "float32"
    assert (decisions["feature_autocast"], decisions["autocast"]) == (fast, "float32")
    rows = run.evaluation["predictions"]
    later = {row["path"]: dict(row["top"]) for row in predict_paths(run.path, data / "val", k=2)}
    assert len(rows) == len(later) == 6
    for row in rows:  # stored features are kept in float16: equal to a few decimals, not bit for bit
        assert abs(row["confidence"] - later[row["path"]][row["predicted"]]) < 0.01


def test_each_picture_meets_each_of_its_versions_once_in_k_epochs():
    views, pictures = 3, 5
    # Version v of picture p is the row v * pictures + p; its value says which it is.
    features = torch.tensor([[float(v * 100 + p)] for v in range(views) for p in range(pictures)])
    labels = torch.arange(pictures) % 2
    indices = torch.arange(pictures) + 10
    batches = ViewBatches(features, labels, indices, views, batch_size=2, seed=0, device="cpu")
    assert len(batches) == 3
    met = {p: [] for p in range(pictures)}
    for _ in range(views):
        seen = []
        for x, y, idx, failed in batches:
            assert failed == [] and x.dtype == torch.float32
            picture = idx - 10
            assert torch.equal(x[:, 0].long() % 100, picture) and torch.equal(y, picture % 2)
            for p, value in zip(picture.tolist(), x[:, 0].long().tolist()):
                met[p].append(value // 100)
            seen += picture.tolist()
        assert sorted(seen) == list(range(pictures))  # every picture once an epoch
    assert all(sorted(v) == list(range(views)) for v in met.values())


def test_versions_are_stacked_without_pictures_that_failed_in_any():
    def view(value, indices, failed):
        return torch.full((len(indices), 2), float(value)), torch.tensor(indices) % 2, torch.tensor(indices), failed

    features, labels, indices, failed = stack_views([view(0, [0, 1, 3], [2]), view(1, [0, 3, 1], [2])])
    assert indices.tolist() == [0, 1, 3] and failed == [2]
    assert features[:, 0].tolist() == [0, 0, 0, 1, 1, 1] and labels.tolist() == [0, 1, 1]


def test_how_many_versions_fit():
    assert views_that_fit(4, 10, 100, 1000, 10**9) == (4, None)
    assert views_that_fit(4, 3, 100, 1000, 10**9) == (3, None)  # no more than the epochs use
    assert views_that_fit(4, 1, 100, 1000, 10**9) == (1, None)  # one epoch: one random version, as without
    assert views_that_fit(4, 10, 100, 1000, 300_000) == (3, None)  # as many as fit
    views, why = views_that_fit(4, 10, 100, 1000, 150_000)
    assert views == 0 and "MB" in why  # fewer than two: new changes every epoch instead
    assert views_that_fit(0, 10, 100, 1000, 10**9)[0] == 0
    assert view_seeds(0, 0, 4) == view_seeds(0, 0, 4) != view_seeds(0, 1, 4)
