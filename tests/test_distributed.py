"""One run trained by two processes under torchrun (gloo on this CPU; the
NCCL path is the same code with another backend): the same numbers as one
process, one run folder, resume, and a killed rank that ends the run as
failed with a reason instead of hanging.

Real processes, real weights (EfficientNet-Lite0, shipped in a package), real
photos (the hymenoptera ants and bees for the accuracy comparison, assets/examples/clothes
for the kill), small pictures so it stays cheap.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core import cli
from core.follow import LIVE_FILE
from core.runs import Run, RunStore, read_json
from tests.folders import HYMENOPTERA, PACKAGED_BACKBONE, PHOTOS, small_copy

REPO = Path(__file__).resolve().parent.parent
SETTINGS = ["--backbone", PACKAGED_BACKBONE, "--image-size", "96", "--batch-size", "8", "--device", "cpu"]


def _env(tmp: Path, cache: str) -> dict:
    env = dict(os.environ, TRANSFER_STUDIO_CACHE=str(tmp / cache), OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop("TRANSFER_STUDIO_DEBUG", None)
    return env


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]


def _result(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return small_copy(PHOTOS, tmp_path_factory.mktemp("ddp") / "photos", train=10, val=4)


@pytest.fixture(scope="module")
def ants_and_bees() -> Path:
    if not HYMENOPTERA.is_dir():
        pytest.skip(f"needs the hymenoptera photos at {HYMENOPTERA} (../shared)")
    return HYMENOPTERA


def test_two_processes_train_one_run_like_one_process_and_resume(ants_and_bees, tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs-ddp"
    command = ["train", str(ants_and_bees), "--epochs", "3", "--runs-dir", str(runs), *SETTINGS]
    two = subprocess.run(
        _torchrun("-m", "core", *command),
        cwd=REPO,
        env=_env(tmp_path, "cache-ddp"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    ddp = _result(two)
    # The same command in one process: this one (cli.main, as `python -m core` runs it; no third
    # interpreter to start), with its own feature pass, not the gathered one.
    monkeypatch.setenv("TRANSFER_STUDIO_CACHE", str(tmp_path / "cache-one"))
    capsys.readouterr()
    assert cli.main([*command[: -len(SETTINGS) - 2], "--runs-dir", str(tmp_path / "runs-one"), *SETTINGS]) == 0
    one = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert ddp["world_size"] == 2 and one["world_size"] == 1
    assert abs(ddp["val_accuracy"] - one["val_accuracy"]) <= 0.02
    assert [r for r in RunStore(runs).list()] == [Run(Path(ddp["run_dir"]))]  # one run folder, not two
    run = Run(Path(ddp["run_dir"]))
    assert run.state == "finished" and run.status["world_size"] == 2 and len(run.metrics) == 3
    val_pictures = sum(1 for p in (ants_and_bees / "val").rglob("*") if p.is_file())
    assert run.evaluation["count"] == val_pictures  # rank 0 evaluated every validation picture, not its share
    assert two.stdout.count("epoch ") == 3  # rank 0 alone prints

    again = subprocess.run(
        _torchrun("-m", "core", "resume", str(run.path), "--epochs", "4"),
        cwd=REPO,
        env=_env(tmp_path, "cache-ddp"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    resumed = _result(again)
    assert resumed["world_size"] == 2 and resumed["epochs_done"] == 4
    assert [r["epoch"] for r in run.metrics] == [1, 2, 3, 4] and run.state == "finished"


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.parametrize("killed", ["rank 1", "rank 0"])
def test_a_killed_rank_ends_the_run_as_failed_with_a_reason(photos, tmp_path, killed):
    runs = tmp_path / "runs"
    launcher = subprocess.Popen(
        _torchrun(
            "-m",
            "core",
            "train",
            str(photos),
            "--epochs",
            "200",
            "--no-feature-cache",
            "--runs-dir",
            str(runs),
            *SETTINGS,
        ),
        cwd=REPO,
        env=_env(tmp_path, "cache"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 240
        run = None
        while time.time() < deadline and launcher.poll() is None:
            listed = RunStore(runs).list()
            run = listed[0] if listed else None
            live = read_json(run.path / LIVE_FILE, {}, dict) if run is not None else {}
            if live.get("phase") == "Training" and (live.get("batch") or 0) >= 1:  # the ranks are training
                break
            time.sleep(0.3)
        assert run is not None and run.status.get("state") == "running", launcher.communicate()
        rank0 = run.status["pid"]
        ranks = _children(launcher.pid)
        assert rank0 in ranks and len(ranks) == 2
        victim = rank0 if killed == "rank 0" else next(p for p in ranks if p != rank0)
        os.kill(victim, signal.SIGKILL)
        killed_at = time.time()
        out, err = launcher.communicate(timeout=60)
        assert time.time() - killed_at < 45, "the other rank took too long to give up"
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    assert launcher.returncode != 0
    status = run.status
    assert status["state"] == "failed" and run.state == "failed", (status, err[-3000:])
    assert "process" in status["reason"] and "resume" in status["reason"]
    assert "Traceback" not in status["reason"]
