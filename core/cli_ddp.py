"""`python -m core train | resume` when torchrun started several processes.

torchrun starts the command once per process (rank). Rank 0 makes (or takes)
the run folder and holds its lock, tells every rank where it is, writes every
file, prints the epochs and the final JSON line (with `world_size`); the other
ranks train beside it through DistributedDataParallel and write nothing
(core.distributed.PeerRun).

When a rank dies, nothing hangs and the run ends as failed with a reason:
- the others' next collective fails at once (gloo: the connection closes;
  NCCL: its watchdog, at the latest the process group's timeout), and torchrun
  itself stops the remaining ranks with SIGTERM, which here becomes a
  TrainingError, so rank 0 writes "failed" and why;
- when rank 0 itself is the one killed, nobody is left to write: a surviving
  rank sees the run's lock dropped (the operating system frees it with the
  dead process) while status.json still says it is running, takes the lock
  and writes "failed" with the reason. Had no rank survived, the run reads
  "interrupted" (core.runs), resumable like any other.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from . import distributed, training
from .errors import TrainingError
from .jobs import Job, run_job
from .run_lock import RunLock, is_locked
from .runs import ACTIVE_STATES, Run, RunStore, prepare_run

# Set by whoever starts torchrun (the app): written to status.json, so the
# starter finds the run folder rank 0 made.
LAUNCH_ENV = "TRANSFER_STUDIO_LAUNCH_ID"

_TOLD_TO_STOP = (
    "torchrun stopped this training because another of its {n} processes ended (it crashed, ran out of "
    "memory, or was killed). The last finished epoch is saved: you can resume the run."
)
_RANK0_LOST = (
    "The main process (rank 0) of this {n}-process training ended without saying why (it was killed, or "
    "crashed), so the other processes stopped too. The last finished epoch is saved: you can resume the run."
)


def _stop_on_sigterm(world_size: int) -> None:
    """torchrun ends the other ranks with SIGTERM when one fails: end the run
    with a reason instead of dying mid-write."""

    def handler(signum, frame):
        # Raised only inside the training itself (core.training.train), where
        # run_job turns it into the run's end; anywhere else the run is
        # already ending (a peer's error came first) and its end is written.
        if sys.exc_info()[0] is None and _inside_training(frame):
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: let the ending be written
            raise TrainingError(_TOLD_TO_STOP.format(n=world_size))

    signal.signal(signal.SIGTERM, handler)


def _inside_training(frame) -> bool:
    trainer = training.train.__code__
    while frame is not None:
        if frame.f_code is trainer:
            return True
        frame = frame.f_back
    return False


def train(config, runs_dir: str, on_epoch) -> tuple[Job, Run]:
    """A new run trained by every rank. Returns this rank's (job, run)."""
    world = distributed.init_from_env(config.device)
    _stop_on_sigterm(world.world_size)
    run = lock = None
    if world.main:
        run, lock = prepare_run(config, RunStore(runs_dir))
        run.update_status(world_size=world.world_size, launch_id=os.environ.get(LAUNCH_ENV))
    path = distributed.share_path(str(run.path) if run else None)
    return _run(
        Job(config, run_dir=path, on_epoch=on_epoch if world.main else None, lock=lock, mirror=world.main), world
    )


def resume(run_dir: str, epochs: int | None, on_epoch) -> tuple[Job, Run, int]:
    """Resume a run with every rank: rank 0 checks it and takes its lock,
    then the others follow. Returns (job, run, epochs done before)."""
    from .config import TrainConfig
    from .resume import prepare_resume

    world = distributed.init_from_env(Run(Path(run_dir)).config.get("device", "auto"))
    _stop_on_sigterm(world.world_size)
    plan = prepare_resume(run_dir, epochs) if world.main else None
    if plan is not None:
        plan.run.update_status(world_size=world.world_size)
    shared = [None]
    if plan is not None:
        shared = [(str(plan.run.path), plan.config.to_dict(), plan.before, plan.epochs_done)]
    distributed.dist.broadcast_object_list(shared, src=0)
    path, config, before, done = shared[0]
    job = Job(
        TrainConfig.from_dict(config),
        run_dir=path,
        resume=True,
        on_epoch=on_epoch if world.main else None,
        lock=plan.lock if plan else None,
        before_resume={**before, "epochs_done": done},
        mirror=world.main,
    )
    job, run = _run(job, world)
    return job, run, done


def _run(job: Job, world) -> tuple[Job, Run]:
    run = Run(Path(job.run_dir)) if world.main else distributed.PeerRun(Path(job.run_dir))
    try:
        run_job(job, run)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the end is written (or about to be): finish it
        if not world.main and job.state == "failed":
            _write_if_rank0_died(run.path, world.world_size)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        distributed.finish()
    return job, run


def _write_if_rank0_died(path: Path, world_size: int, wait_s: float = 3.0) -> None:
    """Rank 0 writes how the run ended, unless it is dead: then its lock is
    free and status.json still says the run is active. Write it for it."""
    deadline = time.monotonic() + wait_s
    while is_locked(path):
        if time.monotonic() > deadline:
            return  # rank 0 is alive and writes the end itself
        time.sleep(0.1)
    run = Run(path)
    if run.status.get("state") not in ACTIVE_STATES:
        return  # rank 0 wrote the end before it went
    try:
        lock = RunLock(path).acquire(wait=0)
    except Exception:  # noqa: BLE001 - someone else (the app, a resume) took it meanwhile
        return
    try:
        run.update_status(state="failed", reason=_RANK0_LOST.format(n=world_size), ended=time.time())
    finally:
        lock.release()
    print(f"Run failed: {_RANK0_LOST.format(n=world_size)}", file=sys.stderr)
