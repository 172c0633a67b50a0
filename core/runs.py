"""A run is a folder: everything a training made, written so that a crash never
leaves half a file, and read back after a restart.

Layout (see docs/DESIGN.md):
    .transfer-studio-run (the marker: this app made the folder)
    config.json  scan.json  classes.json  status.json  metrics.jsonl
    batch_losses.json (the loss every few batches, thinned: core.progress)
    last.pt (resume)  best.pt (best val epoch)  eval.json  run.lock
    adapted.pt  adapt.json (adapted to new pictures, core.adapt)
    adapted_from.json (a run that is an adapted model kept, core.adapted_run)

Every run is read on its own: a file that is missing, cut off or not what it
should be makes that run "damaged", with the reason in words, and never
breaks the reading of any other run.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import TrainConfig, check_settings
from .counts import how_many
from .errors import UserError
from .files import atomic_torch_save, atomic_write_bytes, atomic_write_json, json_default
from .progress import LOSS_FILE, LossCurve
from .run_checks import (
    classes_problems,
    clean_origin,
    config_problems,
    eval_problems,
    metrics_row_problem,
    status_problems,
)
from .run_lock import RunLock, is_locked

DEFAULT_RUNS_DIR = Path("runs")
RUNS_ENV = "TRANSFER_STUDIO_RUNS"


def default_runs_dir() -> Path:
    """Where runs go when no folder is named: $TRANSFER_STUDIO_RUNS, which the
    app reads too (so the app lists what the command line trained), else ./runs."""
    return Path(os.environ.get(RUNS_ENV) or DEFAULT_RUNS_DIR)


# Written into every run folder the moment RunStore.create makes it: Delete
# removes only folders that hold it (or a run made before it existed, see
# made_by_us), so a runs folder set to a folder full of other projects can
# never lose one of them.
RUN_MARKER = ".transfer-studio-run"

# States a run can be in, as saved in status.json. A run whose status says it
# is active but whose lock nobody holds was interrupted (killed, crashed
# machine); a run whose files are damaged reads as "damaged" (Run.problems).
ACTIVE_STATES = ("queued", "running", "stopping")
FINISHED_STATES = ("finished", "stopped", "failed", "interrupted")
RESUMABLE_STATES = ("stopped", "failed", "interrupted", "damaged")

# Files that make a folder a run: any one of them (a run whose config.json was
# deleted is still a run, listed as damaged, never silently gone).
RUN_FILES = ("config.json", "status.json", "last.pt", "best.pt", "metrics.jsonl")


def owner() -> dict:
    """Which process trains a run (status.json pid, host), for people to
    read; whether it still does is the run's lock (core.run_lock)."""
    return {"pid": os.getpid(), "host": socket.gethostname()}


_TYPE_WORDS = {
    dict: "an object",
    list: "a list",
    str: "text",
    int: "a number",
    float: "a number",
    bool: "true/false",
    type(None): "null",
}


def read_json_checked(path: Path, kind: type | None = None) -> tuple[Any, str | None]:
    """(the JSON in `path`, None), or (None, what is wrong with the file in
    words): missing, unreadable, not UTF-8 text, cut off, or not of `kind`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, f"{path.name} is missing"
    except OSError as exc:
        return None, f"{path.name} cannot be read ({exc.strerror or exc})"
    try:
        value = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        return None, f"{path.name} is not text (not UTF-8)"
    except ValueError:
        return None, f"{path.name} is cut off or not JSON" if data.strip() else f"{path.name} is empty"
    if kind is not None and not isinstance(value, kind):
        return None, f"{path.name} holds {_TYPE_WORDS.get(type(value), 'something else')}, not {_TYPE_WORDS[kind]}"
    return value, None


def read_json(path: Path, default: Any = None, kind: type | None = None) -> Any:
    """The JSON in `path`, or `default` when it is missing, damaged or not of `kind`."""
    value, problem = read_json_checked(path, kind)
    return default if problem else value


ORIGIN_FILE = "adapted_from.json"  # a kept adapted model's origin and adapt.json's record (core.adapted_run)
ADAPTED_OWN = ("epochs_done", "best_epoch", "seconds", "device", "device_name")  # Run.summary()'s, its own


def adapted_facts(run_dir: str | Path, status: dict) -> dict:
    """For a model adapted to new pictures and kept as a run (status.json's
    "adapted_from", core.adapted_run): what is its own, as Run.summary()
    gives it: no epochs, the adaptation's time and device, and in
    "adapted_from" the epochs its source trained ("source_epochs",
    "source_best_epoch"). {} for any other run.

    Runs kept before these were stored hold their source's epochs_done,
    best_epoch and device, and the source's training time plus the
    adaptation's: those epochs are read as the source's, the adaptation's
    time comes from adapted_from.json, and where it ran is not known."""
    came = status.get("adapted_from")
    if not isinstance(came, dict):
        return {}
    kept_before = "source_epochs" not in came
    came = clean_origin(came)  # entries of the wrong kind read as unknown (Run.problems says which)
    own = {key: status.get(key) for key in ADAPTED_OWN}
    if kept_before:  # kept before the adaptation's own facts were stored
        record = read_json(Path(run_dir) / ORIGIN_FILE, {}, dict).get("record")
        came = {**came, "source_epochs": own["epochs_done"], "source_best_epoch": own["best_epoch"]}
        own = dict.fromkeys(ADAPTED_OWN) | {"seconds": (record if isinstance(record, dict) else {}).get("seconds")}
    return {
        **own,
        "epochs_done": 0,
        "best_epoch": None,
        "seconds": _number(own["seconds"]),
        "device": _text(own["device"]),
        "device_name": _text(own["device_name"]),
        "adapted_from": came,
    }


def checkpoint_problem(path: Path) -> str | None:
    """What is wrong with a checkpoint file, in words, or None when it looks
    whole. Cheap: a torch.save file is a zip archive, so a whole one starts
    with a zip entry and ends with the end-of-archive record (no comment)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size == 0:
            return f"{path.name} is empty (0 bytes)"
        with open(path, "rb") as f:
            head = f.read(4)
            f.seek(max(0, size - 22))
            tail = f.read(22)
    except FileNotFoundError:
        return f"{path.name} is missing"
    except OSError as exc:
        return f"{path.name} cannot be read ({exc.strerror or exc})"
    if head != b"PK\x03\x04" or not tail.startswith(b"PK\x05\x06"):
        return f"{path.name} is cut off or not a checkpoint"
    return None


# atomic_write's temporary names: "." + the file's name + 8 random characters + ".tmp".
_LEFTOVER = re.compile(r"\..+\.[A-Za-z0-9_]{8}\.tmp")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:60] or "run"


def is_run_folder(path: Path) -> bool:
    """A folder holding any of a run's own files (RUN_FILES)."""
    try:
        return Path(path).is_dir() and any((Path(path) / name).exists() for name in RUN_FILES)
    except OSError:
        return False


@dataclass
class Run:
    """One run folder. Cheap to create: files are read when asked for, each
    on its own, so that one damaged file never hides the rest."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    # --- reading -----------------------------------------------------------
    @property
    def config(self) -> dict:
        return read_json(self.path / "config.json", {}, dict)

    @property
    def classes(self) -> list[str]:
        return read_json(self.path / "classes.json", [], list)

    @property
    def scan(self) -> dict:
        return read_json(self.path / "scan.json", {}, dict)

    @property
    def status(self) -> dict:
        return read_json(self.path / "status.json", {}, dict)

    @property
    def evaluation(self) -> dict | None:
        """eval.json, or None when it is missing, damaged or not whole (Run.problems says what)."""
        value = read_json(self.path / "eval.json", None, dict)
        return None if value is None or eval_problems(value) else value

    def read_metrics(self) -> tuple[list[dict], str | None]:
        """(the whole epochs of metrics.jsonl, what is wrong with the file in
        words or None). A run rewrites the file atomically every epoch, so a
        cut-off line means damage from outside: the epochs before it are kept
        and the damage is reported (Run.problems), never silently dropped."""
        path = self.path / "metrics.jsonl"
        try:
            text = path.read_bytes().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return [], None
        except OSError as exc:
            return [], f"metrics.jsonl cannot be read ({exc.strerror or exc})"
        rows: list[dict] = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                row = None
            problem = metrics_row_problem(row) if isinstance(row, dict) else "is cut off or not an epoch's metrics"
            if problem:
                return rows, f"metrics.jsonl line {number} {problem} (the {len(rows)} epochs before it are kept)"
            rows.append(row)
        return rows, None

    @property
    def metrics(self) -> list[dict]:
        """Per-epoch metrics: the whole rows (see read_metrics)."""
        return self.read_metrics()[0]

    @property
    def batch_losses(self) -> LossCurve:
        """The loss every few batches of the whole run so far, as its last
        finished epoch left it (LOSS_FILE), with its batches per epoch; none
        (no points, steps_per_epoch None) where the file is missing (a run
        made before it was kept) or damaged: the chart then has no per-batch
        line, and nothing else depends on it."""
        saved = read_json(self.path / LOSS_FILE, {}, dict)
        steps, points, per_point = saved.get("steps_per_epoch"), saved.get("points"), saved.get("per_point", 1)
        if not all(_whole(v) and v >= 1 for v in (steps, per_point)) or not isinstance(points, list):
            return LossCurve()
        return LossCurve([p for p in points if _loss_point(p)], per_point, steps)

    @property
    def last_checkpoint(self) -> Path:
        return self.path / "last.pt"

    @property
    def best_checkpoint(self) -> Path:
        return self.path / "best.pt"

    @property
    def problems(self) -> list[str]:
        """What is damaged in this run, in words; empty when nothing is."""
        config, config_problem = read_json_checked(self.path / "config.json", dict)
        status, status_problem = read_json_checked(self.path / "status.json", dict)
        found = [config_problem, *(config_problems(config) if config is not None else [])]
        found += [status_problem, *(status_problems(status) if status is not None else [])]
        read = {}
        for name, kind in (("scan.json", dict), ("classes.json", list), ("eval.json", dict), (ORIGIN_FILE, dict)):
            if (self.path / name).exists():
                read[name], problem = read_json_checked(self.path / name, kind)
                found.append(problem)
        if read.get("eval.json") is not None:
            found += eval_problems(read["eval.json"])
        if read.get("classes.json") is not None:
            found += classes_problems(read["classes.json"], read.get("scan.json"))
        found += [checkpoint_problem(p) for p in (self.best_checkpoint, self.last_checkpoint) if p.exists()]
        if (status or {}).get("state") == "finished" and not self.best_checkpoint.exists():
            found.append("best.pt (its trained model) is missing")
        if (status or {}).get("state") == "finished" and not (self.path / "classes.json").exists():
            found.append("classes.json (its class names) is missing; its model still holds them")
        rows, problem = self.read_metrics()
        trained = _whole((status or {}).get("epochs_done"))
        if not problem and not rows and trained and (self.path / "metrics.jsonl").exists():
            problem = f"metrics.jsonl is empty, though the run trained {how_many(trained, 'epoch')}"
        found.append(problem)
        return [p for p in found if p]

    @property
    def model_problem(self) -> str | None:
        """What keeps this run's model from naming pictures, in words (best.pt
        missing or damaged, classes.json not the classes it trained on), or None."""
        problem = checkpoint_problem(self.best_checkpoint)
        if problem or not (self.path / "classes.json").exists():
            return problem
        classes, problem = read_json_checked(self.path / "classes.json", list)
        return problem or next(iter(classes_problems(classes, read_json(self.path / "scan.json", None, dict))), None)

    @property
    def locked(self) -> bool:
        """Whether a live process trains this run or has it queued (core.run_lock)."""
        return is_locked(self.path)

    def _state_and_problems(self) -> tuple[str, list[str]]:
        saved = self.status.get("state")
        if self.locked:  # a live process has it: what it last said, whatever else is on disk
            return (saved if saved in ACTIVE_STATES + FINISHED_STATES else "running"), []
        problems = self.problems
        if problems:
            return "damaged", problems
        if saved in ACTIVE_STATES:  # nobody holds it any more: killed, crashed, machine restarted
            return "interrupted", []
        return (saved if isinstance(saved, str) and saved else "unknown"), []

    @property
    def state(self) -> str:
        """The saved state; "interrupted" when it says it is active but no live
        process holds its lock (it can be resumed from its last checkpoint);
        "damaged" when one of its files is (see `problems`)."""
        return self._state_and_problems()[0]

    @property
    def can_resume(self) -> bool:
        """Stopped, failed, interrupted or damaged, with a whole last.pt and the
        scan.json that holds its split."""
        return (
            self.last_checkpoint.exists()
            and checkpoint_problem(self.last_checkpoint) is None
            and read_json_checked(self.path / "scan.json", dict)[1] is None
            and self.state in RESUMABLE_STATES
        )

    @property
    def can_check_again(self) -> bool:
        """A finished run (no adapted model) whose only damage is its eval.json
        or classes.json, missing or broken, while its best.pt is whole and
        scan.json lists its validation pictures: scoring best.pt again on them
        (core.final_evaluation.check_again) makes both anew, with no training.
        Resuming would not: it trains no epoch when all are done, and never
        writes classes.json."""
        status, state = self.status, self.state
        if status.get("state") != "finished" or isinstance(status.get("adapted_from"), dict):
            return False
        if state == "damaged":
            damage_ok = all(p.startswith(("eval.json", "classes.json")) for p in self.problems)
        else:
            damage_ok = state == "finished" and not (self.path / "eval.json").exists()
        scan, problem = read_json_checked(self.path / "scan.json", dict)
        return damage_ok and checkpoint_problem(self.best_checkpoint) is None and not problem and bool(scan.get("val"))

    def summary(self) -> dict:
        """One row for a runs table. A damaged run's "reason" says what is
        damaged and what can be done; a kept adapted model's epochs, time and
        device are its own (adapted_facts)."""
        config, status = self.config, self.status
        state, problems = self._state_and_problems()
        reason = status.get("reason")
        if state == "damaged":
            reason = "Damaged: " + "; ".join(problems) + ". " + self._what_can_be_done()
        # Each value of the kind the tables expect, whatever a damaged file holds there (the reason says what).
        return {
            "run": self.name,
            "path": str(self.path),
            "backbone": _text(config.get("backbone")),
            "strategy": _text(config.get("strategy")),
            "data": _text(config.get("data_dir")),
            "state": state,
            "best_val_accuracy": _number(status.get("best_val_accuracy")),
            "best_epoch": _whole(status.get("best_epoch")),
            "epochs_done": _whole(status.get("epochs_done")) or 0,
            "epochs": _whole(config.get("epochs")),
            "seconds": _number(status.get("seconds")),
            "device": _text(status.get("device")),
            "device_name": _text(status.get("device_name")),
            "created": _number(status.get("created")),
            "reason": _text(reason),
            "problems": problems,
            "feature_cache": status.get("feature_cache"),
            # A model adapted to new pictures and kept as a run (core.adapted_run): the run, folder and method.
            "adapted_from": None,
            **adapted_facts(self.path, status),  # its own epochs (none), time and device
        }

    def _what_can_be_done(self) -> str:
        """A damaged run's way out, in words, as it really is."""
        if self.can_check_again:
            return (
                "Its trained model (best.pt) is whole: check it again on its validation pictures to make "
                "these files anew, with no training, or delete it."
            )
        if not self.can_resume:
            return "You can delete it."
        epochs, done = _whole(self.config.get("epochs")), _whole(self.status.get("epochs_done"))
        if checkpoint_problem(self.best_checkpoint) and epochs and done and done >= epochs:
            return "Only a new epoch can make a new best model: resume it with more epochs, or delete it."
        return "You can resume it from its last finished epoch, or delete it."

    # --- writing -----------------------------------------------------------
    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_json(self.path / name, obj)

    def update_status(self, **changes) -> dict:
        status = self.status
        status.update(changes)
        status["updated"] = time.time()
        self.write_json("status.json", status)
        return status

    def write_metrics(self, rows: list[dict]) -> None:
        text = "".join(json.dumps(r, default=json_default) + "\n" for r in rows)
        atomic_write_bytes(self.path / "metrics.jsonl", text.encode())

    def save_checkpoint(self, name: str, payload: dict) -> None:
        atomic_torch_save(self.path / name, payload)

    def remove_leftovers(self, lock: RunLock | None = None) -> list[str]:
        """Remove the temporary files a killed write left behind (atomic_write's
        names), unless a live process trains this run (they may be its own
        writes in progress). `lock`: this run's lock, when the caller holds it.
        Returns the names removed."""
        try:
            leftovers = [p for p in self.path.iterdir() if _LEFTOVER.fullmatch(p.name) and p.is_file()]
        except OSError:
            return []
        if not leftovers:
            return []
        own = lock is not None and lock.held
        try:
            held = lock if own else RunLock(self.path).acquire(wait=0)
        except (UserError, OSError):
            return []  # trained now, or a folder we may not write
        try:
            for p in leftovers:
                p.unlink(missing_ok=True)
        except OSError:
            pass
        finally:
            if not own:
                held.release()
        return [p.name for p in leftovers]


def _loss_point(point) -> bool:
    return (
        isinstance(point, list)
        and len(point) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in point)
    )


def _number(value):
    """A number from status.json, or None when the file holds anything else there."""
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _whole(value):
    """A count from a run's file, or None when the file holds anything else there."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value):
    """Text from a run's file, or None when the file holds anything else there."""
    return value if isinstance(value, str) else None


class RunStore:
    """The runs directory: creates, lists and deletes run folders."""

    def __init__(self, root: str | Path = DEFAULT_RUNS_DIR):
        self.root = Path(root)

    def create(self, backbone: str, strategy: str) -> Run:
        self.root.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = f"{stamp}-{_slug(backbone)}-{_slug(strategy)}"
        for i in range(1000):
            path = self.root / (base if i == 0 else f"{base}-{i}")
            try:
                path.mkdir()
            except FileExistsError:
                continue
            (path / RUN_MARKER).write_text("Made by Transfer Studio. Deleting a run removes only such folders.\n")
            return Run(path)
        raise RuntimeError(f"could not create a new run folder in {self.root}")

    def list(self) -> list[Run]:
        """Runs newest first, damaged ones included (Run.state says so)."""
        try:
            entries = list(self.root.iterdir())
        except OSError:  # no runs folder yet, or one we may not read
            return []
        return sorted((Run(p) for p in entries if is_run_folder(p)), key=lambda r: r.name, reverse=True)

    def get(self, name_or_path: str | Path) -> Run:
        path = Path(name_or_path)
        return open_run(path if is_run_folder(path) else self.root / str(name_or_path))

    def delete(self, run: Run) -> None:
        """Remove a run folder, damaged or not: only one this app made
        (made_by_us), directly inside this store (no link out of it), and
        never one that a live process trains or has queued: its lock, taken
        at this very moment, says so (raises RunBusyError)."""
        path = Path(run.path)
        if path.is_symlink() or path.resolve().parent != self.root.resolve():
            raise UserError(f"{path} is not a run in {self.root}; it was not deleted.")
        if not made_by_us(path):
            raise UserError(
                f"{path} was not made by Transfer Studio (it has no {RUN_MARKER} file), so it was not "
                "deleted. Delete it yourself if you are sure."
            )
        lock = RunLock(path).acquire(wait=0.5)
        try:
            if os.name == "nt":  # Windows cannot remove a file that is open
                lock.release()
            shutil.rmtree(path)
        finally:
            lock.release()


def made_by_us(path: Path) -> bool:
    """Whether this app made the run folder: it holds the marker. Runs made
    before the marker existed are accepted when they hold both a config.json
    and a status.json whose state is one of ours: a folder of another program
    seldom has both, and these older runs are the user's own, which they must
    still be able to delete."""
    path = Path(path)
    if (path / RUN_MARKER).is_file():
        return True
    status = read_json(path / "status.json", None, dict) or {}
    return (path / "config.json").is_file() and status.get("state") in ACTIVE_STATES + FINISHED_STATES


def open_run(path: str | Path) -> Run:
    """The run at `path` (damaged or not), rid of any temporary files a kill left."""
    path = Path(path)
    if not is_run_folder(path):
        raise FileNotFoundError(f"No run at {path} (a run folder holds config.json).")
    run = Run(path)
    run.remove_leftovers()
    return run


def prepare_run(config: TrainConfig, store: RunStore) -> tuple[Run, RunLock]:
    """Make the run folder and write its config before anything slow happens.
    Returns the run and its lock, taken before the status says "queued" (so no
    reader ever sees a queued run that nobody holds); the caller releases it
    when the training has ended. Settings outside their limits, and a data
    folder that is not there, are refused before any folder is made
    (ValueError or DataFolderError, in words), so a mistake leaves no failed
    run behind."""
    from .scan import check_data_folder  # the scan's imports wait until a training is asked for

    check_settings(config)
    check_data_folder(config.data_dir)
    run = store.create(config.backbone, config.strategy)
    lock = RunLock(run.path).acquire()
    try:
        run.write_json("config.json", config.to_dict())
        run.update_status(state="queued", created=time.time(), epochs_done=0, **owner())
    except BaseException:
        lock.release()
        raise
    return run, lock
