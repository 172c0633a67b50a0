"""Comparing runs: leaderboard with measured speed, curves, backbone sweeps."""

from __future__ import annotations

import json

import pytest

from core.compare import (
    SPEED_FILE,
    curves,
    inference_ms,
    leaderboard,
    queue_sweep,
    sweep_configs,
    sweep_runs,
)
from core.config import TrainConfig
from core.jobs import JobManager
from core.runs import open_run
from tests.folders import small_copy
from ui.charts import curves_figure


@pytest.fixture(scope="module")
def run_dir(fine_tuned_run):
    return fine_tuned_run


def test_leaderboard_row_and_cached_speed(run_dir):
    run = open_run(run_dir)
    (rows,) = leaderboard([run_dir, run_dir.parent / "no-such-run"])
    assert rows["backbone"] == "mobilenet_v2" and rows["backbone_title"] == "MobileNetV2"
    assert rows["strategy"] == "last-1" and rows["state"] == "finished"
    assert rows["trainable_params"] == run.status["trainable_params"] < rows["total_params"]
    assert rows["best_val_accuracy"] == pytest.approx(run.evaluation["accuracy"])
    assert rows["macro_f1"] == pytest.approx(run.evaluation["macro_f1"])
    assert rows["training_seconds"] > 0
    assert rows["ms_per_image"] > 0

    # Measured once, then read back from speed.json without measuring again.
    speed_file = run.path / SPEED_FILE
    saved = json.loads(speed_file.read_text())
    (entry,) = saved.values()
    assert entry["ms_per_image"] == rows["ms_per_image"] and entry["image_size"] == 224
    mtime = speed_file.stat().st_mtime_ns
    assert leaderboard([run_dir])[0]["ms_per_image"] == rows["ms_per_image"]
    assert inference_ms(run_dir) == rows["ms_per_image"]
    assert speed_file.stat().st_mtime_ns == mtime
    assert leaderboard([run_dir], measure_speed=False)[0]["ms_per_image"] == rows["ms_per_image"]


def test_curves_long_format(run_dir):
    rows = curves([run_dir])
    assert len(rows) == 2 * 4  # 2 epochs x train/val x loss/accuracy
    assert {r["metric"] for r in rows} == {"train_loss", "val_loss", "train_accuracy", "val_accuracy"}
    assert {r["epoch"] for r in rows} == {1, 2}
    val_acc = [r["value"] for r in rows if r["metric"] == "val_accuracy"]
    assert max(val_acc) == pytest.approx(open_run(run_dir).status["best_val_accuracy"])
    fig = curves_figure(rows, "loss")
    assert len(fig.data) == 2  # one run: val and train


def test_sweep_configs_cover_every_choice_and_check_names():
    base = TrainConfig(data_dir="/data", backbone="resnet18", strategy="linear", epochs=3, lr=0.01)
    configs = sweep_configs(base, ["mobilenet_v2", "efficientnet_lite0", "mobilenet_v2"], ["linear", "last-2"])
    assert [(c.backbone, c.strategy) for c in configs] == [
        ("mobilenet_v2", "linear"),
        ("mobilenet_v2", "last-2"),
        ("efficientnet_lite0", "linear"),
        ("efficientnet_lite0", "last-2"),
    ]
    assert all(c.epochs == 3 and c.lr == 0.01 and c.data_dir == "/data" for c in configs)
    assert base.backbone == "resnet18"  # the base config is left alone
    assert [c.strategy for c in sweep_configs(base, ["vgg16"])] == ["linear"]
    with pytest.raises(ValueError, match="alexnet"):
        sweep_configs(base, ["mobilenet_v2", "alexnet"])
    with pytest.raises(ValueError, match="strategy"):
        sweep_configs(base, ["mobilenet_v2"], ["freeze-everything"])
    with pytest.raises(ValueError):
        sweep_configs(base, [])


def test_a_sweep_queues_one_run_per_backbone_that_finish_in_order(hymenoptera, offline_weights, tmp_path):
    data = small_copy(hymenoptera, tmp_path / "data", train=6, val=4)
    base = TrainConfig(data_dir=str(data), strategy="linear", epochs=1, device="cpu", cache_dir=str(tmp_path / "cache"))
    manager = JobManager(tmp_path / "runs")
    jobs = queue_sweep(manager, base, ["mobilenet_v2", "efficientnet_lite0"])
    assert len(jobs) == 2
    for job in jobs:
        assert job.wait(timeout=300), "the sweep did not finish in time"
    snaps = [j.snapshot() for j in jobs]
    assert [s["state"] for s in snaps] == ["finished", "finished"], [s["reason"] for s in snaps]
    assert snaps[1]["started"] >= snaps[0]["ended"]  # one device, one run at a time, in order
    assert [open_run(j.run_dir).config["backbone"] for j in jobs] == ["mobilenet_v2", "efficientnet_lite0"]

    sweep = json.loads((open_run(jobs[0].run_dir).path / "sweep.json").read_text())
    found = sweep_runs(tmp_path / "runs", sweep["sweep"])
    assert [str(r.path) for r in found] == [j.run_dir for j in jobs]

    board = leaderboard([j.run_dir for j in jobs])
    assert {r["backbone"] for r in board} == {"mobilenet_v2", "efficientnet_lite0"}
    assert all(r["ms_per_image"] > 0 and r["state"] == "finished" for r in board)
    accs = [r["best_val_accuracy"] for r in board]
    assert accs == sorted(accs, reverse=True)
