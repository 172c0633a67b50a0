"""Training end to end on real photos with real pretrained weights."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from core.config import TrainConfig
from core.jobs import JobManager, train_blocking
from core.runs import open_run
from tests.folders import PHOTO_CLASSES, small_copy

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_linear_probe_beats_random_init(hymenoptera, offline_weights, tmp_path):
    """What transfer buys: the same budget from pretrained vs random weights."""
    common = dict(
        data_dir=str(hymenoptera),
        backbone="mobilenet_v2",
        strategy="linear",
        epochs=5,
        lr=1e-3,
        cache_dir=str(tmp_path / "cache"),
        seed=0,
    )
    job, run = train_blocking(TrainConfig(**common), runs_dir=tmp_path / "runs")
    result = job.snapshot()["result"]
    assert job.state == "finished", job.snapshot()["reason"]
    assert result["val_accuracy"] >= 0.90
    assert result["feature_cache"] is True
    assert run.status["feature_cache"]["used"] is True
    # The run's decisions, made once, are recorded with it.
    decisions = run.status["decisions"]
    assert decisions["cache_train"] and decisions["cache_val"] and decisions["augment"] == "none"
    assert decisions["frozen_prefix"] == len(run.status["blocks"]) - 1  # all but the head

    job_r, _ = train_blocking(TrainConfig(**common, init="random"), runs_dir=tmp_path / "runs")
    random_acc = job_r.snapshot()["result"]["val_accuracy"]
    assert random_acc <= result["val_accuracy"] - 0.2, (random_acc, result["val_accuracy"])

    # The run folder holds everything, readable after the process is gone.
    assert json.loads((run.path / "classes.json").read_text()) == ["ants", "bees"]
    assert [r["epoch"] for r in run.metrics] == [1, 2, 3, 4, 5]
    evaluation = run.evaluation
    assert evaluation["accuracy"] == pytest.approx(result["val_accuracy"])
    assert len(evaluation["predictions"]) == 153
    assert {c["class"] for c in evaluation["per_class"]} == {"ants", "bees"}


@pytest.mark.slow
def test_partial_fine_tune_learns_clothing10(clothing10, offline_weights, tmp_path):
    # Half the pictures (20 + 15 of each class, 346 in all) show it learns: measured 0.66 (chance 0.1).
    data = small_copy(clothing10, tmp_path / "clothing10", train=20, val=15)
    config = TrainConfig(
        data_dir=str(data),
        backbone="mobilenet_v2",
        strategy="last-1",
        epochs=3,
        lr=1e-3,
        augment="none",
        cache_dir=str(tmp_path / "cache"),
    )
    job, run = train_blocking(config, runs_dir=tmp_path / "runs")
    assert job.state == "finished", job.snapshot()["reason"]
    result = job.snapshot()["result"]
    assert result["val_accuracy"] > 0.5  # chance is 0.1
    assert run.status["trainable_params"] < run.status["total_params"]
    assert len(run.evaluation["confusion"]) == 10


def _wait(predicate, timeout=120.0, every=0.05):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(every)
    return False


def test_stop_ends_within_one_batch_and_queued_job_waits(small_data, tmp_path):
    manager = JobManager(tmp_path / "runs")
    slow = dict(
        data_dir=str(small_data),
        backbone="efficientnet_lite0",
        strategy="full",
        epochs=50,
        batch_size=4,
        augment="light",
        feature_cache=False,
        device="cpu",
    )
    first = manager.submit(TrainConfig(**slow))
    second = manager.submit(TrainConfig(**slow))

    assert _wait(lambda: first.snapshot()["batch"] >= 2 and first.state == "running")
    assert second.state == "queued"  # one job per device at a time
    assert open_run(second.run_dir).state == "queued"

    batch_at_request = first.snapshot()["batch"]
    epoch_at_request = first.snapshot()["epoch"]
    first.request_stop()
    assert first.wait(60)
    snap = first.snapshot()
    assert snap["state"] == "stopped"
    assert snap["epoch"] == epoch_at_request and snap["batch"] <= batch_at_request + 1
    assert open_run(first.run_dir).state == "stopped"
    if epoch_at_request <= 1:  # stopped inside the first epoch: nothing was saved, and it says so
        assert "nothing to resume" in snap["reason"], snap["reason"]

    # The queued job now gets the device.
    assert _wait(lambda: second.state == "running" and second.snapshot()["batch"] >= 1)
    second.request_stop()
    assert second.wait(60)
    assert second.state == "stopped"


def test_failure_is_readable_and_manager_lives_on(tmp_path, small_data):
    manager = JobManager(tmp_path / "runs")
    no_classes = tmp_path / "no-class-folders"  # a folder that is there: the scan finds nothing to learn
    no_classes.mkdir()
    bad = manager.submit(TrainConfig(data_dir=str(no_classes), backbone="efficientnet_lite0"))
    assert bad.wait(60)
    assert bad.state == "failed"
    assert f"No class folders were found in {no_classes}" in bad.snapshot()["reason"]
    assert "Traceback" not in bad.snapshot()["reason"]
    assert open_run(bad.run_dir).state == "failed"

    one_class = tmp_path / "one"
    shutil.copytree(small_data / "train" / "hat", one_class / "hat")
    single = manager.submit(TrainConfig(data_dir=str(one_class), backbone="efficientnet_lite0"))
    assert single.wait(60)
    assert single.state == "failed"
    assert "two classes" in single.snapshot()["reason"]

    good = manager.submit(
        TrainConfig(
            data_dir=str(small_data), backbone="efficientnet_lite0", epochs=1, cache_dir=str(tmp_path / "cache")
        )
    )
    assert good.wait(120)
    assert good.state == "finished", good.snapshot()["reason"]


def test_missing_weights_fail_with_the_file_name(tmp_path, small_data, empty_torch_home):
    job, run = train_blocking(
        TrainConfig(data_dir=str(small_data), backbone="resnet18", epochs=1), runs_dir=tmp_path / "runs"
    )
    assert job.state == "failed"
    reason = job.snapshot()["reason"]
    assert "resnet18" in reason and str(empty_torch_home) in reason
    assert run.status["reason"] == reason


def _run_cli(*args, env=None, **kw):
    return subprocess.run(
        [sys.executable, "-m", "core", *map(str, args)], cwd=REPO, env=env, capture_output=True, text=True, **kw
    )


def _cli_here(capsys, *args) -> tuple[int, str, str]:
    """`python -m core ARGS` run inside this process (the same cli.main; no second
    interpreter to start): exit code, stdout, stderr."""
    from core import cli

    capsys.readouterr()  # what came before is not this command's
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_killed_run_leaves_readable_files_and_resumes(tmp_path, hymenoptera, shared_torch_home, monkeypatch, capsys):
    data = small_copy(hymenoptera, tmp_path / "data", train=12, val=12)
    runs = tmp_path / "runs"
    env = {**os.environ, "TORCH_HOME": str(shared_torch_home), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "core",
            "train",
            data,
            "--backbone",
            "mobilenet_v2",
            "--strategy",
            "last-2",
            "--epochs",
            "4",
            "--augment",
            "light",
            "--batch-size",
            "8",
            "--runs-dir",
            runs,
            "--device",
            "cpu",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def one_epoch_done():
            found = list(runs.glob("*/metrics.jsonl"))
            return bool(found) and found[0].read_text().count("\n") >= 1

        assert _wait(one_epoch_done, timeout=300, every=0.02), proc.stdout.read() if proc.poll() is not None else ""
        time.sleep(0.3)  # into the next epoch
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()

    run = open_run(next(runs.iterdir()))
    # Every file is whole: JSON parses, the checkpoint loads.
    assert run.config["backbone"] == "mobilenet_v2"
    assert run.classes == ["ants", "bees"]
    done = len(run.metrics)
    assert 1 <= done < 4
    ckpt = torch.load(run.last_checkpoint, weights_only=True)
    assert ckpt["epoch"] == done
    assert run.state == "interrupted" and run.can_resume
    assert not [p for p in run.path.iterdir() if p.name.endswith(".tmp")]
    first_rows = run.metrics

    # Resumed from the files alone (the killed process is gone), by `resume` run in this process.
    monkeypatch.setenv("TORCH_HOME", str(shared_torch_home))
    code, out, err = _cli_here(capsys, "resume", run.path)
    assert code == 0, err + out
    assert f"after epoch {done}" in out
    result = json.loads(out.strip().splitlines()[-1])
    assert result["epochs_done"] == 4
    rows = run.metrics
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert rows[:done] == first_rows  # the epochs before the kill were kept, not redone
    assert run.state == "finished"


def test_cli_train_scan_predict(tmp_path, small_data, empty_torch_home, monkeypatch, capsys):
    data = small_data
    env = {**os.environ, "TORCH_HOME": str(empty_torch_home), "TRANSFER_STUDIO_CACHE": str(tmp_path / "cache")}
    monkeypatch.setenv("TRANSFER_STUDIO_CACHE", env["TRANSFER_STUDIO_CACHE"])
    code, out, _ = _cli_here(capsys, "scan", data)
    assert code == 0 and "hat" in out and "shoes" in out

    # Training goes through a real `python -m core` process: its exit code and printed lines.
    # Small pictures: nothing here depends on how well it learns.
    out = _run_cli(
        "train",
        data,
        "--backbone",
        "efficientnet_lite0",
        "--strategy",
        "linear",
        "--epochs",
        "2",
        "--image-size",
        "64",
        "--runs-dir",
        tmp_path / "runs",
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    assert "epoch   1" in out.stdout and "epoch   2" in out.stdout
    last = next(line for line in out.stdout.splitlines() if line.startswith("epoch   2"))
    start, end = map(float, re.search(r"lr (\S+)->(\S+)", last).groups())
    assert start > end >= 0  # the last epoch's rate, from its first step to its last (a cosine ends at 0)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"run_dir", "val_accuracy", "best_epoch", "seconds", "device"} <= result.keys()

    image = sorted((data / "val" / "shoes").iterdir())[0]
    code, out, err = _cli_here(capsys, "predict", result["run_dir"], image, "--json", "--top-k", "4")  # all 4: sum 1
    assert code == 0, err
    row = json.loads(out.strip().splitlines()[0])
    assert row["top"][0][0] in PHOTO_CLASSES and abs(sum(p for _, p in row["top"]) - 1) < 1e-4

    code, out, _ = _cli_here(capsys, "predict", result["run_dir"], data / "val")
    assert code == 0 and out.count("\n") == 16

    code, _, err = _cli_here(capsys, "scan", tmp_path / "nowhere")
    assert code != 0 and "nowhere" in err
    code, _, err = _cli_here(capsys, "export", tmp_path / "no-run")
    assert code != 0 and "no-run" in err and ".." not in err  # one sentence, one full stop


def test_cli_train_options_come_from_the_config():
    """Every TrainConfig setting with a flag is a `train` option, and the
    parsed options make the same config as the fields say."""
    from dataclasses import fields

    from core import cli

    parser = cli.build_parser()
    args = parser.parse_args(
        [
            "train",
            "data",
            "--backbone",
            "resnet18",
            "--batch-size",
            "0",
            "--no-amp",
            "--no-feature-cache",
            "--class-weighted",
            "--image-size",
            "160",
            "--lr",
            "0.01",
        ]
    )
    config = cli._config_from_args(args)
    assert (config.backbone, config.batch_size, config.image_size, config.lr) == ("resnet18", 0, 160, 0.01)
    assert config.mixed_precision is False and config.feature_cache is False and config.class_weighted is True
    assert config.data_dir == str(Path("data").resolve())

    plain = cli._config_from_args(parser.parse_args(["train", "data", "--backbone", "resnet18"]))
    assert plain == TrainConfig(data_dir=plain.data_dir, backbone="resnet18")
    offered = {f.name for f, _, _ in cli._train_fields()}
    assert offered == {f.name for f in fields(TrainConfig) if f.metadata.get("cli", True) is not False}
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "data", "--optimizer", "nope"])


def test_settings_outside_their_limits_are_refused_before_any_run_folder(tmp_path, small_data):
    """Each number setting carries its limits; the command line names every
    wrong one, and a job (the app's, the API's) is refused with the same
    words, before a run folder is made. Before, `--epochs 0` made a run that
    failed with 'best.pt missing' and `--batch-size -3` trained as if unset."""
    from dataclasses import fields
    from typing import get_type_hints

    from core.config import check_settings, setting_problems

    assert setting_problems(TrainConfig(data_dir="x")) == {}  # the defaults are within their limits
    hints = get_type_hints(TrainConfig)
    numbers = {f.name for f in fields(TrainConfig) if {int, float} & set(getattr(hints[f.name], "__args__", ()))}
    numbers |= {f.name for f in fields(TrainConfig) if hints[f.name] in (int, float)}
    assert numbers == {f.name for f in fields(TrainConfig) if f.metadata.get("limits")}  # every number has them

    wrong = TrainConfig(data_dir=str(small_data), epochs=0, batch_size=-3, lr=-1.0, optimizer="nope", image_size=None)
    assert set(setting_problems(wrong)) == {"epochs", "batch_size", "lr", "optimizer"}
    with pytest.raises(ValueError, match="epochs is 0; it can be 1 to 500"):
        check_settings(wrong)
    manager = JobManager(tmp_path / "runs")
    with pytest.raises(ValueError, match="batch_size is -3"):
        manager.submit(wrong)
    assert not list((tmp_path / "runs").glob("*/config.json"))

    out = subprocess.run(
        [sys.executable, "-m", "core", "train", str(small_data), "--epochs", "0", "--head-dropout", "0.95"]
        + ["--runs-dir", str(tmp_path / "cli-runs")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0
    assert "--epochs is 0; it can be 1 to 500" in out.stderr and "--head-dropout is 0.95" in out.stderr, out.stderr
    assert not (tmp_path / "cli-runs").exists()


def test_a_data_folder_that_is_not_there_is_named_and_leaves_no_run(tmp_path):
    """A mistyped folder is a mistake to fix, not a training that failed:
    before, it left a failed run in the Runs list for each try."""
    from core.scan import DataFolderError

    nowhere = tmp_path / "my photos" / "nowhere"
    with pytest.raises(DataFolderError, match="does not exist"):
        JobManager(tmp_path / "runs").submit(TrainConfig(data_dir=str(nowhere)))
    (tmp_path / "a file.jpg").write_bytes(b"not a folder")
    with pytest.raises(DataFolderError, match="is a file, not a folder"):
        JobManager(tmp_path / "runs").submit(TrainConfig(data_dir=str(tmp_path / "a file.jpg")))
    assert not list((tmp_path / "runs").glob("*/config.json"))

    out = subprocess.run(
        [sys.executable, "-m", "core", "train", str(nowhere), "--runs-dir", str(tmp_path / "cli-runs")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and f"{nowhere} does not exist" in out.stderr, out.stderr
    assert not list((tmp_path / "cli-runs").glob("*/config.json"))


def test_the_command_line_trains_into_the_apps_runs_folder(tmp_path, small_data, shared_torch_home):
    # TRANSFER_STUDIO_RUNS names the app's runs folder; a command-line run
    # without --runs-dir goes there too, so the app lists it.
    runs = tmp_path / "the app's runs"
    env = {**os.environ, "TORCH_HOME": str(shared_torch_home), "TRANSFER_STUDIO_RUNS": str(runs)}
    env["TRANSFER_STUDIO_CACHE"] = str(tmp_path / "cache")
    out = _run_cli("train", small_data, "--epochs", "1", env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    run_dir = Path(json.loads(out.stdout.strip().splitlines()[-1])["run_dir"])
    assert run_dir.parent == runs and (run_dir / "best.pt").exists()
    listed = _run_cli("runs", env=env, timeout=120)
    assert run_dir.name in listed.stdout, listed.stdout


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    from core.files import atomic_write, atomic_write_bytes

    target = tmp_path / "status.json"
    atomic_write_bytes(target, b"old")

    def fails(tmp):
        Path(tmp).write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, fails)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]
