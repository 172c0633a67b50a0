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
command line's through `train_blocking` / `resume_blocking`) and records how
it ended. A job holds its run's lock (core.run_lock) from the moment it is
queued until its end is written, so no other window or process can resume
or delete the run meanwhile, and a run whose process died reads as
interrupted.
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

from . import follow
from .collection import collect_and_freeze
from .config import TrainConfig
from .devices import device_key, release_device_memory
from .errors import friendly
from .progress import LossCurve
from .resume import ResumePlan, prepare_resume, restore_run
from .run_lock import RunLock
from .runs import DEFAULT_RUNS_DIR, Run, RunStore, prepare_run
from .training import train

ACTIVE = ("queued", "running", "stopping")
ENDED = ("stopped", "finished", "failed")

_ids = itertools.count(1)


class Job:
    """Thread-safe status of one training: state, progress, metric history.
    Implements core.progress.Progress."""

    def __init__(
        self,
        config,
        run_dir: str | None = None,
        resume: bool = False,
        on_epoch=None,
        lock: RunLock | None = None,
        before_resume: dict | None = None,
        mirror: bool = True,
    ):
        self.id = f"job-{next(_ids)}"
        self._on_epoch = on_epoch  # called in the training thread after each epoch (the CLI prints)
        self.config = config
        self.resume = resume
        self._run_lock = lock  # the run's lock, held until the job's end is written
        # A resume's run as it was before ({"status", "config", "epochs_done"}),
        # put back when the resume ends without a new epoch (core.resume.restore_run).
        self.before_resume = before_resume
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._losses = LossCurve()  # the per-batch losses, status["batch_losses"] its points
        # Followed from the run folder by other processes (core.follow): the live
        # fields mirrored to live.json (mirror=False: a rank other than 0), and a
        # stop.request file there works like request_stop().
        self._mirror = follow.LiveMirror(run_dir) if run_dir and mirror else None
        self._stop_file = follow.StopWatch(run_dir) if run_dir else None
        if resume and lock is not None and run_dir:  # a stop asked of its last training, whose process died
            follow.clear_stop(run_dir)
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
            "eta_at_least": False,  # the time left is a floor: more blocks join in later
            "learning_now": None,  # which blocks learn now and which start next, where that changes in the run
            "download": None,  # {"file": name, "done": bytes, "total": bytes}
            # The step before or after the epochs that counts pictures (Job.phase):
            # {"name", "done", "total", "started", "rate" (pictures/s), "eta" (s)}.
            "counted": None,
            "phase_since": time.time(),  # when the phase began
            "history": [],  # one dict per finished epoch
            "batch_losses": [],  # [step, loss] every few batches, the whole run's (LossCurve)
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
            if changes.get("phase", self._status["phase"]) != self._status["phase"]:
                # A new step: its speed and time left are not the last step's.
                self._status.update(
                    phase_since=time.time(), images_per_second=None, eta_seconds=None, eta_at_least=False
                )
            self._status.update(changes)
        self._mirror_live()

    def _mirror_live(self, force: bool = False) -> None:
        if self._mirror is not None and self._mirror.due(force):
            with self._lock:
                live = copy.deepcopy({k: self._status.get(k) for k in follow.LIVE_KEYS})
            self._mirror.write(live)

    def phase(self, name: str, done: int, total: int) -> None:
        now = time.time()
        with self._lock:
            if self._status["state"] == "stopping":  # it says so until it has stopped
                return
            since = self._status["phase_since"] if self._status["phase"] == name else now
            self._status.update(phase=name, phase_since=since)
            self._status.update(phase_progress(self._status["counted"], name, done, total, now, since))

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
            if self._losses.add(step, loss):  # the whole run's curve, in a bounded number of points
                self._status["batch_losses"] = self._losses.points
        self._mirror_live()

    def set_batch_losses(self, points: list[list[float]], per_point: int) -> None:
        with self._lock:
            self._losses = LossCurve(points, per_point)
            self._status["batch_losses"] = self._losses.points

    def add_skipped(self, paths: list[str]) -> None:
        if paths:
            with self._lock:
                known = set(self._status["skipped_files"])
                self._status["skipped_files"].extend(p for p in paths if p not in known)

    def finish(self, state: str, reason: str | None = None, result: dict | None = None) -> None:
        with self._lock:
            self._status.update(
                state=state,
                reason=reason,
                result=result,
                ended=time.time(),
                phase={"finished": "Done", "stopped": "Stopped", "failed": "Failed"}.get(state, state),
            )
        self._done.set()

    @property
    def owns_run(self) -> bool:
        """Whether this job holds its run's lock (rank 0 of a torchrun training, or any other job)."""
        return self._run_lock is not None and self._run_lock.held

    def release_lock(self) -> None:
        if self._run_lock is not None:
            self._run_lock.release()

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
        if not self._stop.is_set() and self._stop_file is not None and self._stop_file.asked():
            self.request_stop()  # a Stop from another process (core.follow.request_stop)
        return self._stop.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    @property
    def done(self) -> bool:
        return self._done.is_set()


def phase_progress(
    before: dict | None, name: str, done: int, total: int, now: float, since: float | None = None
) -> dict:
    """The status fields for a counted phase: its count, its rate, and the
    time it has left (and, as the run's own speed and time left until the
    epochs report theirs, the same). The first report is timed from the
    phase's start (at `since`, else now); later ones from the first report,
    so one-time costs (threads starting, the first batch's warm-up) do not
    weigh on the rate for the rest of the phase."""
    if not before or before["name"] != name or done < before["done"]:
        before = {"name": name, "done": 0, "started": now if since is None else since, "first": None}
    first = before.get("first")
    if first and done > first[0] and now > first[1]:
        rate = (done - first[0]) / (now - first[1])
    else:
        elapsed = now - before["started"]
        rate = done / elapsed if done and elapsed > 0 else None
        first = [done, now] if done and first is None else first
    eta = max(0.0, (total - done) / rate) if rate else None
    counted = {"name": name, "done": done, "total": total, "started": before["started"], "first": first}
    counted.update(rate=rate, eta=eta)
    return {"counted": counted, "images_per_second": rate, "eta_seconds": eta, "eta_at_least": False}


class JobManager:
    """Queues jobs per device and runs each in a background thread."""

    def __init__(self, runs_dir: str | Path = DEFAULT_RUNS_DIR):
        collect_and_freeze()  # the process's objects so far: the first job's collections skip them
        self.store = RunStore(runs_dir)
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._queues: dict[str, queue.Queue] = {}
        self._workers: dict[str, threading.Thread] = {}

    def submit(self, config, resume_run: str | Path | None = None) -> Job:
        """Queue a training (or the resumption of a run, to config.epochs in
        all). The run folder is made now, so the job is visible in the runs
        list while it waits."""
        if resume_run is not None:
            return self.resume(resume_run, epochs=config.epochs)
        run, lock = prepare_run(config, self.store)
        return self._queue(Job(config, run_dir=str(run.path), lock=lock))

    def resume(self, run_dir: str | Path, epochs: int | None = None) -> Job:
        """Queue the resumption of a run (to `epochs` in all, when given).
        Raises a UserError when it cannot be resumed: trained or queued by a
        live process (its lock), no whole last.pt, already finished."""
        plan = prepare_resume(run_dir, epochs)
        return self._queue(
            Job(
                plan.config,
                run_dir=str(plan.run.path),
                resume=True,
                lock=plan.lock,
                before_resume={**plan.before, "epochs_done": plan.epochs_done},
            )
        )

    def _queue(self, job: Job) -> Job:
        try:
            key = device_key(job.config.device)
        except BaseException:
            job.release_lock()
            raise
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
                    state, reason, _ = _end_run(job, Run(Path(job.run_dir)), "stopped", "Stopped before it started.")
                    job.release_lock()
                    job.finish(state, reason)
                    continue
                run_job(job)
            except BaseException as exc:  # noqa: BLE001 - the worker must outlive any job
                job.release_lock()
                if not job.done:
                    job.finish("failed", f"Unexpected error: {exc}")
                traceback.print_exc()
            finally:
                self._queues[key].task_done()

    def wait_idle(self) -> None:
        """Return once every job queued so far has ended, its clean-up (the
        memory given back after it said it ended) included: for scripts and
        measurements that start the next job on an idle app, as a person's
        next click would."""
        with self._lock:
            queues = list(self._queues.values())
        for jobs in queues:
            jobs.join()

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


def run_job(job: Job, run: Run | None = None) -> None:
    """Run one job to its end. Never raises: every outcome lands in the run's
    status.json, then the run's lock is released, then the job says it ended
    (so whoever waits on the job finds the files final and the run free).
    `run`: the run folder as this process sees it (core.distributed.PeerRun
    on ranks other than 0)."""
    run = run or Run(Path(job.run_dir))
    device = None
    try:
        state, reason, result = _train_run(job, run)
    except BaseException as exc:  # noqa: BLE001 - writing the end failed (a full disk, a deleted folder)
        state, reason, result = "failed", friendly(exc), None
    finally:
        if job.owns_run:  # a stop asked through the folder is done with
            follow.clear_stop(run.path)
        job.release_lock()
        # The job's own device only (never raises): a CPU job leaves the GPUs alone.
        device = _device_used(job)
        if device is not None and device.type == "cuda":
            release_device_memory(device)
    job.finish(state, reason, result)
    # The run's cycles are collected after the job says it ended, since a
    # full collection of a process that imported torch takes longer than a
    # warm linear probe's epochs; what is left is frozen (core.collection).
    collect_and_freeze()


def _train_run(job: Job, run: Run) -> tuple[str, str | None, dict | None]:
    """Train, and write how it ended: (state, reason, result) for the job."""
    if job.resume:  # the clock goes on from the time the run had already trained
        run.update_status(seconds_before_resume=run.status.get("seconds") or 0)
    try:
        result = train(job.config, run, job, resume=job.resume)
    except InterruptedError:
        return _end_run(job, run, "stopped", _stopped_reason(run))
    except BaseException as exc:  # noqa: BLE001 - a job must never take the app down
        reason = friendly(exc)
        run.write_json("error.json", {"reason": reason, "traceback": traceback.format_exc()})
        return _end_run(job, run, "failed", reason)
    run.update_status(
        state="finished",
        reason=None,
        ended=time.time(),
        seconds=result["seconds"],
        best_val_accuracy=result["val_accuracy"],
        best_epoch=result["best_epoch"],
        macro_f1=result["macro_f1"],
        **{k: v for k, v in result.items() if k.startswith("test_")},
    )
    return "finished", None, result


def _stopped_reason(run: Run) -> str:
    """What is true after a stop: resumable only once an epoch has finished."""
    if run.metrics:
        done, planned = run.metrics[-1].get("epoch", len(run.metrics)), run.config.get("epochs")
        of = f" of {planned}" if planned else ""
        return f"Stopped by you after epoch {done}{of}, which is saved; you can resume it."
    return "Stopped by you before the first epoch ended, so there is nothing to resume: start it again."


def _device_used(job: Job) -> torch.device | None:
    """The device the training picked (it reports it first thing), or None if
    it ended before picking one."""
    name = job.snapshot().get("device")
    try:
        return torch.device(name) if name else None
    except (RuntimeError, TypeError):
        return None


def _end_run(job: Job, run: Run, state: str, reason: str) -> tuple[str, str, None]:
    """Write a run's end when it did not finish. A resume never makes a run
    worse than it was: without a new epoch the run is put back as it was
    (core.resume.restore_run); with new epochs, they are kept and a failure
    leaves it stopped, resumable again."""
    status = run.status
    before = job.before_resume
    if before is not None:
        done = status.get("epochs_done")
        if not isinstance(done, int) or done <= before["epochs_done"]:
            return state, restore_run(run, before, reason), None
        if state == "failed":
            reason = (
                f"Resuming stopped after epoch {done}: {reason} The epochs up to {done} are saved; "
                "you can resume it again."
            )
            state = "stopped"
    started = status.get("started") or time.time()
    run.update_status(
        state=state,
        reason=reason,
        ended=time.time(),
        seconds=round((status.get("seconds_before_resume") or 0) + time.time() - started, 2),
    )
    return state, reason, None


def train_blocking(config: TrainConfig, runs_dir: str | Path = "runs", on_epoch=None) -> tuple[Job, Run]:
    """Train a new run in the calling thread (the command line). Same files, same job."""
    run, lock = prepare_run(config, RunStore(runs_dir))
    job = Job(config, run_dir=str(run.path), on_epoch=on_epoch, lock=lock)
    run_job(job)
    return job, run


def resume_blocking(plan: ResumePlan, on_epoch=None) -> tuple[Job, Run]:
    """Resume a run in the calling thread (the command line), from the plan
    core.resume.prepare_resume made (it holds the run's lock)."""
    job = Job(
        plan.config,
        run_dir=str(plan.run.path),
        resume=True,
        on_epoch=on_epoch,
        lock=plan.lock,
        before_resume={**plan.before, "epochs_done": plan.epochs_done},
    )
    run_job(job)
    return job, plan.run
