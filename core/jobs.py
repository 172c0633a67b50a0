"""Background training jobs.

A `Job` is the only thing the training thread and the pages share; it is the
`core.progress.Progress` the loop (core.training) reports to. The thread
writes to it through its methods, which take a lock; a page reads a
`snapshot()`, a plain dict copied under the same lock. The training thread never
touches Streamlit.

A `JobManager` runs one worker thread per device: one job trains on a device at
a time, the others wait in that device's queue. A job that raises ends as
"failed" with a readable reason and the worker goes on with the next one.

`run_job` runs one job to its end in the calling thread (a worker's, or the
command line's through `train_blocking`) and records how it ended.
"""
from __future__ import annotations

import copy
import itertools
import queue
import threading
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from .config import TrainConfig
from .devices import device_key, release_device_memory
from .errors import friendly
from .runs import DEFAULT_RUNS_DIR, Run, RunStore, open_run, owner, prepare_run
from .training import train

ACTIVE = ("queued", "running", "stopping")
ENDED = ("stopped", "finished", "failed")

_ids = itertools.count(1)

# How many per-batch losses a job keeps for the live chart (older ones thinned).
MAX_BATCH_POINTS = 2000


class Job:
    """Thread-safe status of one training: state, progress, metric history.
    Implements core.progress.Progress."""

    def __init__(self, config, run_dir: str | None = None, resume: bool = False, on_epoch=None):
        self.id = f"job-{next(_ids)}"
        self._on_epoch = on_epoch  # called in the training thread after each epoch (the CLI prints)
        self.config = config
        self.resume = resume
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._status: dict[str, Any] = {
            "id": self.id,
            "state": "queued",
            "reason": None,
            "phase": "Waiting for its turn",
            "run_dir": run_dir,
            "device": None,
            "device_name": None,
            "device_memory_gb": None,
            "epoch": 0,
            "epochs": getattr(config, "epochs", None),
            "batch": 0,
            "batches": 0,
            "images_per_second": None,
            "eta_seconds": None,
            "download": None,  # {"file": name, "done": bytes, "total": bytes}
            "history": [],  # one dict per finished epoch
            "batch_losses": [],  # [step, loss] every few batches
            "skipped_files": [],
            "feature_cache": None,
            "result": None,
            "created": time.time(),
            "started": None,
            "ended": None,
        }

    # --- written by the training thread ------------------------------------
    def update(self, **changes) -> None:
        with self._lock:
            self._status.update(changes)

    def add_epoch(self, row: dict) -> None:
        with self._lock:
            self._status["history"].append(dict(row))
        if self._on_epoch is not None:
            self._on_epoch(dict(row))

    def set_history(self, rows: list[dict]) -> None:
        with self._lock:
            self._status["history"] = [dict(r) for r in rows]

    def add_batch_loss(self, step: int, loss: float) -> None:
        with self._lock:
            points = self._status["batch_losses"]
            points.append([step, loss])
            if len(points) > MAX_BATCH_POINTS:
                del points[::2]  # keep the whole curve, at half the resolution

    def add_skipped(self, paths: list[str]) -> None:
        if paths:
            with self._lock:
                known = set(self._status["skipped_files"])
                self._status["skipped_files"].extend(p for p in paths if p not in known)

    def finish(self, state: str, reason: str | None = None, result: dict | None = None) -> None:
        with self._lock:
            self._status.update(state=state, reason=reason, result=result, ended=time.time(),
                                phase={"finished": "Done", "stopped": "Stopped", "failed": "Failed"}.get(state, state))
        self._done.set()

    # --- read by pages and the command line --------------------------------
    def snapshot(self) -> dict:
        with self._lock:
            return copy.deepcopy(self._status)

    @property
    def state(self) -> str:
        with self._lock:
            return self._status["state"]

    @property
    def run_dir(self) -> str | None:
        with self._lock:
            return self._status["run_dir"]

    def request_stop(self) -> None:
        """Ask the training to stop; it does so before its next batch."""
        self._stop.set()
        with self._lock:
            if self._status["state"] == "running":
                self._status["state"] = "stopping"
                self._status["phase"] = "Stopping after this batch"

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    @property
    def done(self) -> bool:
        return self._done.is_set()


class JobManager:
    """Queues jobs per device and runs each in a background thread."""

    def __init__(self, runs_dir: str | Path = DEFAULT_RUNS_DIR):
        self.store = RunStore(runs_dir)
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._queues: dict[str, queue.Queue] = {}
        self._workers: dict[str, threading.Thread] = {}

    def submit(self, config, resume_run: str | Path | None = None) -> Job:
        """Queue a training (or the resumption of a run). The run folder is made
        now, so the job is visible in the runs list while it waits."""
        if resume_run is not None:
            run = open_run(resume_run)
            job = Job(config, run_dir=str(run.path), resume=True)
            run.update_status(state="queued", reason=None, **owner())
        else:
            run = prepare_run(config, self.store)
            job = Job(config, run_dir=str(run.path))
        key = device_key(config.device)
        with self._lock:
            self._jobs[job.id] = job
            if key not in self._queues:
                self._queues[key] = queue.Queue()
                worker = threading.Thread(target=self._work, args=(key,), name=f"train-{key}", daemon=True)
                self._workers[key] = worker
                worker.start()
            self._queues[key].put(job)
        return job

    def _work(self, key: str) -> None:
        while True:
            job = self._queues[key].get()
            try:
                if job.stop_requested:  # stopped while it was still waiting
                    job.finish("stopped", "Stopped before it started.")
                    open_run(job.run_dir).update_status(state="stopped", reason="Stopped before it started.")
                    continue
                run_job(job)
            except BaseException as exc:  # the worker must outlive any job
                if not job.done:
                    job.finish("failed", f"Unexpected error: {exc}")
                traceback.print_exc()
            finally:
                self._queues[key].task_done()

    def jobs(self) -> list[Job]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.snapshot()["created"])

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def job_for_run(self, run_dir: str | Path) -> Job | None:
        target = str(Path(run_dir).resolve())
        for job in reversed(self.jobs()):
            if job.run_dir and str(Path(job.run_dir).resolve()) == target:
                return job
        return None

    def active_jobs(self) -> list[Job]:
        return [j for j in self.jobs() if j.state in ACTIVE]

    def latest_job(self) -> Job | None:
        jobs = self.jobs()
        return jobs[-1] if jobs else None

    def alive_run_dirs(self) -> set[str]:
        return {str(Path(j.run_dir).resolve()) for j in self.active_jobs() if j.run_dir}


_managers: dict[str, JobManager] = {}
_managers_lock = threading.Lock()


def get_job_manager(runs_dir: str | Path = DEFAULT_RUNS_DIR) -> JobManager:
    """One manager per runs folder per process, so every page, tab and rerun
    finds the same jobs."""
    key = str(Path(runs_dir).resolve())
    with _managers_lock:
        if key not in _managers:
            _managers[key] = JobManager(runs_dir)
        return _managers[key]


def config_dict(config) -> dict:
    return asdict(config)


# --- running a job ---------------------------------------------------------------

def run_job(job: Job) -> None:
    """Run one job to its end. Never raises: every outcome lands in the job and
    the run's status.json."""
    run = open_run(job.run_dir)
    config = job.config
    if job.resume:  # the clock goes on from the time the run had already trained
        run.update_status(seconds_before_resume=run.status.get("seconds") or 0)
    # The run's files are written before the job says it ended, so whoever
    # waits on the job finds them final.
    try:
        result = train(config, run, job, resume=job.resume)
    except InterruptedError:
        reason = "Stopped by you. The last finished epoch is saved; you can resume it."
        _end_run(run, "stopped", reason)
        job.finish("stopped", reason)
    except BaseException as exc:  # noqa: BLE001 - a job must never take the app down
        reason = friendly(exc)
        run.write_json("error.json", {"reason": reason, "traceback": traceback.format_exc()})
        _end_run(run, "failed", reason)
        job.finish("failed", reason)
    else:
        run.update_status(state="finished", reason=None, ended=time.time(), seconds=result["seconds"],
                          best_val_accuracy=result["val_accuracy"], best_epoch=result["best_epoch"],
                          macro_f1=result["macro_f1"],
                          **{k: v for k, v in result.items() if k.startswith("test_")})
        job.finish("finished", None, result)
    finally:
        release_device_memory(torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))


def _end_run(run: Run, state: str, reason: str) -> None:
    status = run.status
    started = status.get("started") or time.time()
    run.update_status(state=state, reason=reason, ended=time.time(),
                      seconds=round((status.get("seconds_before_resume") or 0) + time.time() - started, 2))


def train_blocking(config: TrainConfig, runs_dir: str | Path = "runs", on_epoch=None, run: Run | None = None,
                   resume: bool = False) -> tuple[Job, Run]:
    """Train in the calling thread (the command line). Same files, same job."""
    store = RunStore(runs_dir)
    run = run or prepare_run(config, store)
    job = Job(config, run_dir=str(run.path), resume=resume, on_epoch=on_epoch)
    run_job(job)
    return job, run
