"""Runs that stay whole: one damaged run never hides the others, resuming
never damages a run, and the command line answers a mistake with one line.

Real runs: MobileNetV2 linear probes on a few dozen real hymenoptera photos,
trained on the CPU with the shared offline weights.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core import cli
from core.config import TrainConfig
from core.errors import UserError
from core.jobs import JobManager, resume_blocking, train_blocking
from core.resume import prepare_resume
from core.run_lock import RunBusyError, RunLock
from core.runs import RunStore, open_run

REPO = Path(__file__).resolve().parent.parent
PER_CLASS = 12


def _pictures(hymenoptera: Path, dst: Path, per_class: int = PER_CLASS, start: int = 0) -> Path:
    """Class folders straight in dst (so the scan splits them at random)."""
    for class_dir in sorted((hymenoptera / "train").iterdir()):
        out = dst / class_dir.name
        out.mkdir(parents=True, exist_ok=True)
        for f in sorted(class_dir.glob("*.jpg"))[start : start + per_class]:
            shutil.copy(f, out / f.name)
    return dst


def _config(data: Path, cache: Path, **changes) -> TrainConfig:
    values = dict(
        data_dir=str(data),
        backbone="mobilenet_v2",
        strategy="linear",
        epochs=2,
        device="cpu",
        lr=1e-3,
        seed=0,
        cache_dir=str(cache),
    )
    return TrainConfig(**{**values, **changes})


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, hymenoptera, shared_torch_home) -> Path:
    """One finished 2-epoch cosine linear probe, trained once; tests copy it."""
    root = tmp_path_factory.mktemp("whole")
    data = _pictures(hymenoptera, root / "data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(shared_torch_home))
        job, run = train_blocking(_config(data, root / "cache"), runs_dir=root / "runs")
    assert job.state == "finished", job.snapshot()["reason"]
    return run.path


def _copy(run: Path, runs: Path, name: str) -> Path:
    dst = runs / name
    shutil.copytree(run, dst)
    return dst


def _cli(*args, env=None, timeout=600):
    env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "core", *map(str, args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _cli_started(*args, env=None) -> subprocess.Popen:
    """`python -m core ARGS` started, not waited for (communicate() reads its output)."""
    return subprocess.Popen(
        [sys.executable, "-m", "core", *map(str, args)],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# --- one damaged run never hides the others ------------------------------------------------


def _damage(runs: Path, finished_run: Path) -> dict[str, Path]:
    made = {
        name: _copy(finished_run, runs, f"2026-{i}-{name}")
        for i, name in enumerate(
            ["good", "status-not-utf8", "status-a-list", "config-a-list", "config-deleted", "best-empty", "metrics-cut"]
        )
    }
    (made["status-not-utf8"] / "status.json").write_bytes(b'{"state": "fin\xff\xfeished"}')
    (made["status-a-list"] / "status.json").write_text("[1, 2]")
    (made["config-a-list"] / "config.json").write_text('["mobilenet_v2"]')
    (made["config-deleted"] / "config.json").unlink()
    (made["best-empty"] / "best.pt").write_bytes(b"")
    metrics = made["metrics-cut"] / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])
    return made


def test_one_damaged_run_never_hides_the_others(tmp_path, finished_run, capsys):
    from core.compare import curves, leaderboard
    from core.evaluation import load_run_model

    runs = tmp_path / "runs"
    made = _damage(runs, finished_run)
    listed = {r.name: r for r in RunStore(runs).list()}
    assert set(listed) == {p.name for p in made.values()}  # none vanishes, not even without config.json

    summaries = {name: listed[path.name].summary() for name, path in made.items()}
    assert summaries["good"]["state"] == "finished" and summaries["good"]["reason"] is None
    expected = {
        "status-not-utf8": "status.json is not text",
        "status-a-list": "status.json holds a list",
        "config-a-list": "config.json holds a list",
        "config-deleted": "config.json is missing",
        "best-empty": "best.pt is empty",
        "metrics-cut": "metrics.jsonl line 2 is cut off",
    }
    for name, words in expected.items():
        assert summaries[name]["state"] == "damaged", name
        assert words in summaries[name]["reason"], (name, summaries[name]["reason"])
    # The cut-off epoch is reported; the good one is kept.
    assert [r["epoch"] for r in open_run(made["metrics-cut"]).metrics] == [1]
    assert "the 1 epochs before it are kept" in summaries["metrics-cut"]["reason"]
    # A damaged run whose last.pt is whole can be resumed; every one can be deleted.
    assert open_run(made["config-deleted"]).can_resume and not open_run(made["good"]).can_resume

    board = leaderboard(list(made.values()), measure_speed=False)
    assert len(board) == len(made)
    good = next(r for r in board if r["run"] == made["good"].name)
    assert good["best_val_accuracy"] is not None and good["state"] == "finished"
    assert {r["state"] for r in board if r["run"] != made["good"].name} == {"damaged"}
    assert {r["run"] for r in curves(list(made.values()))} >= {made["good"].name, made["metrics-cut"].name}

    with pytest.raises(UserError, match="best.pt is empty"):
        load_run_model(made["best-empty"])

    capsys.readouterr()
    assert cli.main(["runs", "--runs-dir", str(runs)]) == 0  # `python -m core runs`, in this process
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(made) and sum("damaged" in line for line in lines) == len(made) - 1

    store = RunStore(runs)
    for name in expected:
        store.delete(open_run(made[name]))
    assert [r.name for r in store.list()] == [made["good"].name]


def test_a_damaged_run_resumes_from_its_last_checkpoint(tmp_path, finished_run, offline_weights):
    run_dir = _copy(finished_run, tmp_path / "runs", "damaged")
    config = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").unlink()
    (run_dir / "status.json").write_bytes(b"\xff\xfe not json")
    (run_dir / "best.pt").write_bytes(b"")
    assert open_run(run_dir).can_resume
    with pytest.raises(UserError, match="best.pt is empty"):  # no new epoch could make a new best model
        prepare_resume(run_dir)

    job, run = resume_blocking(prepare_resume(run_dir, epochs=3))
    assert job.state == "finished", job.snapshot()["reason"]
    assert run.state == "finished" and run.status["epochs_done"] == 3 and run.problems == []
    assert run.config == {**config, "epochs": 3}  # rebuilt from last.pt
    assert [r["epoch"] for r in run.metrics] == [1, 2, 3]
    assert run.status["best_epoch"] == 3  # the new epoch made the new best.pt


# --- resume never damages a run -------------------------------------------------------------


def test_resuming_with_more_epochs_keeps_cosine_going_down(tmp_path, finished_run, offline_weights):
    run_dir = _copy(finished_run, tmp_path / "runs", "cosine")
    job, run = resume_blocking(prepare_resume(run_dir, epochs=4))
    assert job.state == "finished", job.snapshot()["reason"]
    lrs = [r["lr"] for r in run.metrics]
    assert len(lrs) == 4
    # The new epochs follow a cosine over the new total: down, and to zero at the end.
    assert lrs[3] < lrs[2] and lrs[3] < 1e-6


def test_resuming_a_one_cycle_run_with_more_epochs_finishes(tmp_path, hymenoptera, offline_weights):
    data = _pictures(hymenoptera, tmp_path / "data")
    job, run = train_blocking(
        _config(data, tmp_path / "cache", schedule="onecycle", epochs=1), runs_dir=tmp_path / "runs"
    )
    assert job.state == "finished", job.snapshot()["reason"]
    job, run = resume_blocking(prepare_resume(run.path, epochs=3))
    assert job.state == "finished", job.snapshot()["reason"]
    assert run.state == "finished" and [r["epoch"] for r in run.metrics] == [1, 2, 3]
    assert run.metrics[-1]["lr"] < run.metrics[1]["lr"]  # annealed at the end of the new cycle


def test_a_resumed_run_keeps_its_split(tmp_path, hymenoptera, offline_weights):
    data = _pictures(hymenoptera, tmp_path / "data")
    job, run = train_blocking(_config(data, tmp_path / "cache", epochs=1), runs_dir=tmp_path / "runs")
    assert job.state == "finished", job.snapshot()["reason"]
    scan_before = (run.path / "scan.json").read_text()
    split = json.loads(scan_before)
    # Pictures added to the folder since, and one of the run's training pictures gone.
    _pictures(hymenoptera, data, per_class=3, start=PER_CLASS)
    gone = split["train"][0][0]
    Path(gone).unlink()

    job, run = resume_blocking(prepare_resume(run.path, epochs=2))
    assert job.state == "finished", job.snapshot()["reason"]
    assert (run.path / "scan.json").read_text() == scan_before
    evaluated = sorted(p["path"] for p in run.evaluation["predictions"])
    assert evaluated == sorted(p for p, _ in split["val"])  # the same validation pictures, nothing new
    note = run.status["resume_note"]
    assert "6 pictures were added" in note and "1 picture of this run is gone" in note
    assert gone in job.snapshot()["skipped_files"]


def test_a_failed_resume_leaves_a_finished_run_finished(tmp_path, finished_run, offline_weights):
    run_dir = _copy(finished_run, tmp_path / "runs", "moved-data")
    config = json.loads((run_dir / "config.json").read_text())
    config["data_dir"] = str(tmp_path / "moved-away")  # the pictures are not there any more
    (run_dir / "config.json").write_text(json.dumps(config))
    before = open_run(run_dir).status

    out = _cli("resume", run_dir, "--epochs", "4", env={"TORCH_HOME": str(offline_weights)})
    assert out.returncode == 1 and "Traceback" not in out.stderr
    run = open_run(run_dir)
    assert run.state == "finished"
    assert "moved-away" in run.status["reason"] and "as it was before" in run.status["reason"]
    assert {k: run.status[k] for k in ("best_val_accuracy", "epochs_done", "seconds")} == {
        k: before[k] for k in ("best_val_accuracy", "epochs_done", "seconds")
    }
    assert json.loads((run_dir / "config.json").read_text())["epochs"] == 2


def _wait(condition, timeout: float) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_resume_is_refused_while_another_process_trains(tmp_path, hymenoptera, offline_weights, capsys):
    data = _pictures(hymenoptera, tmp_path / "data")
    runs = tmp_path / "runs"
    env = {**os.environ, "TORCH_HOME": str(offline_weights), "TRANSFER_STUDIO_CACHE": str(tmp_path / "cache")}
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
            "linear",
            "--epochs",
            "200",
            "--no-feature-cache",
            "--augment",
            "light",
            "--batch-size",
            "4",
            "--device",
            "cpu",
            "--runs-dir",
            runs,
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def training():
            found = list(runs.glob("*/metrics.jsonl"))
            return bool(found) and open_run(found[0].parent).state == "running"

        assert _wait(training, 300)
        run_dir = next(runs.iterdir())
        metrics_before = (run_dir / "metrics.jsonl").read_text()

        # `resume` in this process (cli.main, as `python -m core` runs it): the lock it meets is
        # the other process's all the same. (Real processes answer mistakes in the test below.)
        capsys.readouterr()
        assert cli.main(["resume", str(run_dir)]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and "being trained" in err and len(err.strip().splitlines()) == 1
        with pytest.raises(RunBusyError):
            JobManager(runs).resume(run_dir)
        with pytest.raises(RunBusyError):
            RunStore(runs).delete(open_run(run_dir))
        assert open_run(run_dir).state == "running"
        assert (run_dir / "metrics.jsonl").read_text().startswith(metrics_before.rstrip("\n"))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    # The dead process keeps nothing: the run reads as interrupted and can be resumed.
    run = open_run(run_dir)
    assert run.state == "interrupted" and run.can_resume


def test_a_reused_pid_does_not_keep_a_run_running(tmp_path, finished_run):
    run = open_run(_copy(finished_run, tmp_path / "runs", "reused-pid"))
    # The status names a live process (this one), but nobody holds the run's lock.
    run.update_status(state="running", pid=os.getpid())
    assert run.state == "interrupted" and run.can_resume
    lock = RunLock(run.path).acquire()
    try:
        assert run.state == "running" and not run.can_resume
    finally:
        lock.release()


def test_leftover_temporary_files_are_removed_when_a_run_is_opened(tmp_path, finished_run):
    run_dir = _copy(finished_run, tmp_path / "runs", "killed")
    leftovers = [run_dir / ".status.json.k2j_8xQa.tmp", run_dir / ".last.pt.a1b2c3d4.tmp"]
    for p in leftovers:
        p.write_bytes(b"half")
    lock = RunLock(run_dir).acquire()  # while a process trains it, they may be its writes in progress
    try:
        open_run(run_dir)
        assert all(p.exists() for p in leftovers)
    finally:
        lock.release()
    run = open_run(run_dir)
    assert not any(p.exists() for p in leftovers)
    assert run.state == "finished"


# --- the command line: one line for a mistake ---------------------------------------------------


def test_the_cli_answers_mistakes_with_one_line(tmp_path, finished_run, hymenoptera, offline_weights):
    data = _pictures(hymenoptera, tmp_path / "data", per_class=4)
    not_a_folder = tmp_path / "a-file"  # a runs folder inside a file: unwritable even for root
    not_a_folder.write_text("x")
    garbage = tmp_path / "weights.pt"
    garbage.write_bytes(b"not weights at all")
    run_dir = _copy(finished_run, tmp_path / "runs", "done")
    env = {"TORCH_HOME": str(offline_weights), "TRANSFER_STUDIO_CACHE": str(tmp_path / "cache")}
    cases = {
        "runs folder it may not write": (
            "train",
            data,
            "--backbone",
            "mobilenet_v2",
            "--epochs",
            "1",
            "--runs-dir",
            not_a_folder / "runs",
        ),
        "unreadable weights": (
            "train",
            data,
            "--backbone",
            "mobilenet_v2",
            "--epochs",
            "1",
            "--init",
            garbage,
            "--runs-dir",
            tmp_path / "runs2",
        ),
        "missing run": ("resume", tmp_path / "nowhere"),
        "finished run": ("resume", run_dir),
        "missing folder": ("predict", run_dir, tmp_path / "nowhere"),
    }
    # Each case is a process of its own, whose whole stderr is read. They run side by side (most of
    # each is starting Python and loading torch), each with its own feature cache: they share nothing
    # they write.
    started = {
        what: _cli_started(*args, env={**env, "TRANSFER_STUDIO_CACHE": str(tmp_path / f"cache-{i}")})
        for i, (what, args) in enumerate(cases.items())
    }
    try:
        for what, proc in started.items():
            _, err = proc.communicate(timeout=600)
            assert proc.returncode != 0, what
            assert "Traceback" not in err, (what, err)
            lines = err.strip().splitlines()
            assert len(lines) == 1, (what, err)
    finally:
        for proc in started.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert open_run(run_dir).state == "finished"
