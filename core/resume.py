"""Resuming a run without damaging it.

- `prepare_resume` takes the run's lock (refused while a live process trains
  it or has it queued), checks that last.pt is whole, rebuilds a missing or
  damaged config.json from last.pt, and keeps what the run was, so that a
  resume that fails can put it back (`restore_run`): a failed resume never
  turns a finished run into a failed one.
- `kept_split` gives the training its own pictures back: the split recorded
  in scan.json, never a new one. Pictures added to the folder since are
  reported, not mixed in; pictures gone since are reported and skipped.
- `schedule_settings` / `move_schedule` put the learning-rate schedule, built
  for the (perhaps larger) new total, where the run stopped, so that a
  one-cycle schedule does not run out of steps and a cosine one does not
  climb again.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import TrainConfig
from .counts import how_many
from .errors import TrainingError, UserError
from .run_checks import config_problems
from .run_lock import RunLock
from .runs import (
    RESUMABLE_STATES,
    Run,
    checkpoint_problem,
    open_run,
    owner,
    read_json_checked,
)
from .scan_report import ScanReport, SkippedFile


@dataclass
class ResumePlan:
    """A run ready to be resumed: its lock is held until the training ends."""

    run: Run
    config: TrainConfig  # with the new total of epochs
    lock: RunLock
    epochs_done: int  # the epoch last.pt holds
    before: dict  # {"status": ..., "config": ...} as they were, for restore_run


def prepare_resume(run_dir: str | Path, epochs: int | None = None) -> ResumePlan:
    """Check that the run can be resumed (to `epochs` in all, when given),
    take its lock and mark it queued. Raises a UserError saying why not."""
    run = open_run(run_dir)
    state = run.state  # read before the lock is ours (a held lock reads as "running")
    lock = RunLock(run.path).acquire()
    try:
        return _plan(run, state, lock, epochs)
    except BaseException:
        lock.release()
        raise


def _plan(run: Run, state: str, lock: RunLock, epochs: int | None) -> ResumePlan:
    run.remove_leftovers(lock)
    cannot = f"The run {run.name} cannot be resumed"
    problem = checkpoint_problem(run.last_checkpoint)
    if problem:
        raise UserError(f"{cannot}: {problem} (it is saved after each finished epoch).")
    try:
        checkpoint = torch.load(run.last_checkpoint, map_location="cpu", weights_only=True, mmap=True)
        done, saved_config = int(checkpoint["epoch"]), checkpoint.get("config")
    except Exception as exc:  # any way a file can be unreadable
        raise UserError(f"{cannot}: its last.pt cannot be read ({exc}).") from exc
    problem = read_json_checked(run.path / "scan.json", dict)[1]
    if problem:
        raise UserError(
            f"{cannot}: {problem}, so its split of training and validation pictures is unknown and "
            "resuming would mix them. Start a new run instead."
        )
    before_config = run.config
    # A config.json whose values are of the wrong kind ("lr": null, a hand edit): last.pt's settings instead.
    usable = before_config if before_config and not config_problems(before_config) else None
    try:
        config = TrainConfig.from_dict(usable or saved_config or before_config)
    except Exception as exc:
        raise UserError(f"{cannot}: its settings cannot be read ({exc}).") from exc
    if epochs is not None:
        if epochs < done:
            raise UserError(
                f"The run {run.name} has already trained {done} epochs: the new total of epochs "
                f"({epochs}) must be at least that."
            )
        config.epochs = epochs
    if state == "finished" and config.epochs <= done:
        raise UserError(
            f"The run {run.name} has finished all its {done} epochs. To train it longer, give a larger total of epochs."
        )
    if config.epochs <= done and checkpoint_problem(run.best_checkpoint):
        raise UserError(
            f"{cannot} without more epochs: {checkpoint_problem(run.best_checkpoint)}, and only a new "
            "epoch can make a new best model. Give a larger total of epochs."
        )
    if state not in RESUMABLE_STATES + ("finished",):
        raise UserError(f"{cannot}: it is {state}.")
    before = {"status": run.status, "config": before_config}
    run.write_json("config.json", config.to_dict())
    run.update_status(state="queued", reason=None, epochs_done=done, **owner())
    return ResumePlan(run, config, lock, done, before)


def restore_run(run: Run, before: dict, why: str) -> str:
    """Put a run back as it was before a resume that ended without training
    a new epoch, and say why the resume failed. Returns the reason written."""
    reason = f"Resuming did not work: {why} The run is as it was before."
    status = dict(before["status"])
    if status.get("state") not in RESUMABLE_STATES + ("finished",):
        status["state"] = "stopped"  # its status was damaged or it was interrupted: resumable again
    run.write_json("config.json", before["config"])
    run.write_json("status.json", {**status, "reason": reason, "resume_failed": why})
    return reason


# --- the run's own pictures ---------------------------------------------------------


def kept_split(run: Run, current: ScanReport) -> tuple[ScanReport, str | None]:
    """The run's split from its scan.json, less the pictures that are gone or
    unreadable now (`current` is a fresh scan of the folder), and a note in
    words about what changed in the folder (None when nothing did)."""
    try:
        recorded = ScanReport.from_dict(run.scan)
    except (KeyError, TypeError, ValueError) as exc:
        raise TrainingError(f"The run's scan.json is damaged ({exc}), so its split is unknown.") from exc
    usable = {path for path, _ in current.train + current.val + current.test}
    known = {path for path, _ in recorded.train + recorded.val + recorded.test}
    gone = sorted(known - usable)
    added = sorted(usable - known)
    kept = {
        split: [(p, label) for p, label in getattr(recorded, split) if p in usable]
        for split in ("train", "val", "test")
    }
    counts = {
        name: {split: sum(1 for _, label in kept[split] if label == i) for split in kept}
        for i, name in enumerate(recorded.classes)
    }
    for name, c in counts.items():
        if not c["train"] or not c["val"]:
            raise TrainingError(
                f"Class '{name}' has no training or no validation pictures left of the ones this "
                "run was trained on. Put them back, or start a new run."
            )
    report = dataclasses.replace(
        recorded,
        **kept,
        counts=counts,
        skipped=recorded.skipped + [SkippedFile(p, "gone or unreadable since the run started") for p in gone],
    )
    notes = []
    if added:
        notes.append(
            f"{how_many(len(added), 'picture')} {'was' if len(added) == 1 else 'were'} added to the folder since this run started; they are not used, "
            "so that the run keeps its split (start a new run to train on them)."
        )
    if gone:
        notes.append(
            f"{how_many(len(gone), 'picture')} of this run {'is' if len(gone) == 1 else 'are'} gone or unreadable now; skipped."
        )
    return report, " ".join(notes) or None


# --- the schedule ---------------------------------------------------------------------


def schedule_settings(optimizer: torch.optim.Optimizer) -> list[dict]:
    """The optimiser's settings per group as a freshly built schedule left
    them (its first step), taken before last.pt's state replaces them."""
    return [{k: copy.deepcopy(v) for k, v in group.items() if k != "params"} for group in optimizer.param_groups]


def move_schedule(scheduler, optimizer: torch.optim.Optimizer, settings: list[dict], steps: int) -> None:
    """Move a schedule built for the run's total (which a resume may have
    raised) on to `steps`, where the run stopped. Each step is the same one
    training takes, so with an unchanged total the rates are exactly those
    the run would have had; with a larger one they follow the new schedule
    (one-cycle does not run out of steps, cosine does not climb again)."""
    for group, fresh in zip(optimizer.param_groups, settings):
        group.update(copy.deepcopy(fresh))
    with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": on purpose here
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(steps):
            scheduler.step()
