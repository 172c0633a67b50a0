"""Following a run from its folder alone, whoever trains it: this app, the
command line, torchrun, another app process or another machine writing to
the same runs folder.

The process that trains a run keeps two small files there besides the run's
own (core.runs):

- `live.json`: what changes every batch (phase, epoch, batch, speed, time
  left, the recent batch losses), written at most once a second by its Job
  (`LiveMirror`); status.json and metrics.jsonl hold the rest.
- `stop.request`: written by anyone who wants the run to stop
  (`request_stop`); the trainer's Job looks for it (`StopWatch`, at most
  twice a second, from the loop's per-batch check) and stops as if its own
  Stop had been pressed. The owner removes it when the run ends.

`snapshot(run_dir)` reads them back into the same shape as a Job's snapshot,
so the pages show a run trained elsewhere the way they show their own.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

from .files import atomic_write_json
from .runs import ACTIVE_STATES, Run, RunStore, owner, read_json

LIVE_FILE = "live.json"
STOP_FILE = "stop.request"
MIRROR_EVERY_S = 1.0
STOP_CHECK_EVERY_S = 0.5
_LIVE_FIELDS = (
    "phase",
    "epoch",
    "epochs",
    "batch",
    "batches",
    "images_per_second",
    "eta_seconds",
    "eta_at_least",
    "learning_now",
    "download",
    "device",
    "device_name",
    "device_memory_gb",
)
_LOSS_POINTS = 400  # the recent batch losses live.json carries
LIVE_KEYS = (*_LIVE_FIELDS, "batch_losses")  # what a Job hands to its LiveMirror


# --- the trainer's side ------------------------------------------------------------


class LiveMirror:
    """Writes a Job's live fields to the run's live.json, at most once every
    MIRROR_EVERY_S (the last write of a burst may wait for the next call)."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LIVE_FILE
        self._last = 0.0
        self._lock = threading.Lock()

    def due(self, force: bool = False) -> bool:
        """Whether to write now (and, if so, not again for a while)."""
        now = time.monotonic()
        with self._lock:
            if not force and now - self._last < MIRROR_EVERY_S:
                return False
            self._last = now
            return True

    def write(self, status: dict) -> None:
        """status: a Job's fields (LIVE_KEYS), copied; call when due()."""
        live = {k: status.get(k) for k in _LIVE_FIELDS}
        live["batch_losses"] = [list(p) for p in (status.get("batch_losses") or [])[-_LOSS_POINTS:]]
        live["updated"] = time.time()
        with contextlib.suppress(OSError):  # a follower misses one update; the training goes on
            atomic_write_json(self.path, live)


class StopWatch:
    """Whether someone asked, through the run folder, for the run to stop."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / STOP_FILE
        self._next = 0.0
        self._seen = False

    def asked(self) -> bool:
        now = time.monotonic()
        if not self._seen and now >= self._next:
            self._next = now + STOP_CHECK_EVERY_S
            self._seen = self.path.exists()
        return self._seen


def request_stop(run_dir: str | Path) -> None:
    """Ask whoever trains the run to stop after its current batch."""
    atomic_write_json(Path(run_dir) / STOP_FILE, {"asked": time.time(), **owner()})


def clear_stop(run_dir: str | Path) -> None:
    with contextlib.suppress(OSError):
        (Path(run_dir) / STOP_FILE).unlink(missing_ok=True)


# --- the follower's side -----------------------------------------------------------


def snapshot(run_dir: str | Path) -> dict:
    """A run as its files say now, in the shape of core.jobs.Job.snapshot()."""
    run = Run(Path(run_dir))
    status = run.status
    state = run.state
    live = read_json(run.path / LIVE_FILE, {}, dict) if state in ACTIVE_STATES else {}
    stop_asked = (run.path / STOP_FILE).exists()
    if state == "running" and stop_asked:
        state = "stopping"
    history = run.metrics
    snap = {
        "id": f"run-{run.name}",
        "state": state,
        "reason": run.summary()["reason"] if state in ("damaged", "failed", "stopped") else status.get("reason"),
        "run_dir": str(run.path),
        "history": history,
        **_loss_curve(run, live),
        "skipped_files": [],
        "feature_cache": status.get("feature_cache"),
        "world_size": status.get("world_size") or 1,
        "pid": status.get("pid"),
        "host": status.get("host"),
        "stop_asked": stop_asked,
        "result": None,
        "epochs": run.config.get("epochs"),
    }
    for key in _LIVE_FIELDS:
        snap[key] = live.get(key, status.get(key))
    snap["epochs"] = snap["epochs"] or run.config.get("epochs")
    snap["phase"] = snap["phase"] or ("Stopping after this batch" if state == "stopping" else None)
    if state == "finished":
        snap["result"] = {
            "val_accuracy": status.get("best_val_accuracy"),
            "best_epoch": status.get("best_epoch"),
            "epochs_done": history[-1]["epoch"] if history else status.get("epochs_done"),
            "seconds": status.get("seconds"),
            "device": status.get("device_name"),
        }
    return snap


def _loss_curve(run: Run, live: dict) -> dict:
    """The whole run's per-batch losses: its file's (up to its last finished
    epoch), then live.json's recent ones after them."""
    saved = run.batch_losses
    after = saved.points[-1][0] if saved.points else -1
    recent = [list(p) for p in live.get("batch_losses") or [] if isinstance(p, list) and p and p[0] > after]
    return {"batch_losses": saved.points + recent, "steps_per_epoch": saved.steps_per_epoch}


def active_runs(runs_dir: str | Path, skip: set[str] = frozenset()) -> list[Run]:
    """Runs in the folder that some live process trains or has queued now,
    newest first, leaving out those whose resolved paths are in `skip`
    (e.g. this process's own jobs)."""
    found = []
    for run in RunStore(runs_dir).list():
        if str(run.path.resolve()) in skip:
            continue
        if run.status.get("state") in ACTIVE_STATES and run.locked:
            found.append(run)
    return found
