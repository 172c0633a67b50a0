"""A run is a folder: everything a training made, written so that a crash never
leaves half a file, and read back after a restart.

Layout (see docs/DESIGN.md):
    .transfer-studio-run (the marker: this app made the folder)
    config.json  scan.json  classes.json  status.json  metrics.jsonl
    last.pt (resume)  best.pt (best val epoch)  eval.json
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import TrainConfig
from .errors import UserError

DEFAULT_RUNS_DIR = Path("runs")

# Written into every run folder the moment RunStore.create makes it: Delete
# removes only folders that hold it (or a run made before it existed, see
# made_by_us), so a runs folder set to a folder full of other projects can
# never lose one of them.
RUN_MARKER = ".transfer-studio-run"

# States a run can be in, as saved in status.json. A run whose status says
# "running" but whose process is gone was interrupted (killed, crashed machine).
ACTIVE_STATES = ("queued", "running", "stopping")
FINISHED_STATES = ("finished", "stopped", "failed", "interrupted")


def owner() -> dict:
    """Which process trains a run (status.json pid, host): see Run.state."""
    return {"pid": os.getpid(), "host": socket.gethostname()}


def _process_alive(pid: int | None, host: str | None) -> bool:
    if host and host != socket.gethostname():
        return True  # another machine's process: we cannot tell, so trust its status
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Have `write(tmp)` write the file at a temporary name in the same folder,
    fsync it, then rename it to `path`.

    rename() within one filesystem is atomic, so a reader (or a restart after a
    kill) sees either the old file or the new one, never a torn one. If
    `write` fails, the temporary file is removed and `path` is untouched."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, default=_json_default).encode())


def atomic_torch_save(path: Path, obj: Any) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def _json_default(obj):
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return default


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:60] or "run"


@dataclass
class Run:
    """One run folder. Cheap to create: files are read when asked for."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    # --- reading -----------------------------------------------------------
    @property
    def config(self) -> dict:
        return read_json(self.path / "config.json", {})

    @property
    def classes(self) -> list[str]:
        return read_json(self.path / "classes.json", [])

    @property
    def scan(self) -> dict:
        return read_json(self.path / "scan.json", {})

    @property
    def status(self) -> dict:
        return read_json(self.path / "status.json", {})

    @property
    def evaluation(self) -> dict | None:
        return read_json(self.path / "eval.json", None)

    @property
    def metrics(self) -> list[dict]:
        """Per-epoch metrics. A run rewrites metrics.jsonl atomically every
        epoch, so every line here is whole."""
        path = self.path / "metrics.jsonl"
        if not path.exists():
            return []
        rows = []
        for line in path.read_text().splitlines():
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    break
        return rows

    @property
    def last_checkpoint(self) -> Path:
        return self.path / "last.pt"

    @property
    def best_checkpoint(self) -> Path:
        return self.path / "best.pt"

    @property
    def state(self) -> str:
        """The saved state, except that a run whose status says it is active
        but whose training process is gone (killed, crashed, machine restarted)
        reads as "interrupted": it can be resumed from its last checkpoint."""
        status = self.status
        state = status.get("state", "unknown")
        if state in ACTIVE_STATES and not _process_alive(status.get("pid"), status.get("host")):
            return "interrupted"
        return state

    @property
    def can_resume(self) -> bool:
        return self.last_checkpoint.exists() and self.state in ("stopped", "failed", "interrupted")

    def summary(self) -> dict:
        """One row for a runs table."""
        config, status = self.config, self.status
        return {
            "run": self.name,
            "path": str(self.path),
            "backbone": config.get("backbone"),
            "strategy": config.get("strategy"),
            "data": config.get("data_dir"),
            "state": self.state,
            "best_val_accuracy": status.get("best_val_accuracy"),
            "best_epoch": status.get("best_epoch"),
            "epochs_done": status.get("epochs_done", 0),
            "epochs": config.get("epochs"),
            "seconds": status.get("seconds"),
            "device": status.get("device"),
            "device_name": status.get("device_name"),
            "created": status.get("created"),
            "reason": status.get("reason"),
            "feature_cache": status.get("feature_cache"),
        }

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
        text = "".join(json.dumps(r, default=_json_default) + "\n" for r in rows)
        atomic_write_bytes(self.path / "metrics.jsonl", text.encode())

    def save_checkpoint(self, name: str, payload: dict) -> None:
        atomic_torch_save(self.path / name, payload)


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
        """Runs newest first. A folder without config.json is not a run."""
        if not self.root.is_dir():
            return []
        runs = [Run(p) for p in self.root.iterdir() if p.is_dir() and (p / "config.json").exists()]
        return sorted(runs, key=lambda r: r.name, reverse=True)

    def get(self, name_or_path: str | Path) -> Run:
        path = Path(name_or_path)
        if not (path / "config.json").exists():
            path = self.root / str(name_or_path)
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"No run at {name_or_path} (a run folder holds config.json).")
        return Run(path)

    def delete(self, run: Run) -> None:
        """Remove a run folder: only one this app made (made_by_us), directly
        inside this store (no link out of it), and never one that is queued or
        training now, as its files say at this very moment."""
        path = Path(run.path)
        if path.is_symlink() or path.resolve().parent != self.root.resolve():
            raise UserError(f"{path} is not a run in {self.root}; it was not deleted.")
        if not made_by_us(path):
            raise UserError(f"{path} was not made by Transfer Studio (it has no {RUN_MARKER} file), so it was not "
                            "deleted. Delete it yourself if you are sure.")
        try:
            state = Run(path).state
        except (OSError, ValueError):  # a damaged status.json says nothing is training
            state = "damaged"
        if state in ACTIVE_STATES:
            raise UserError(f"The run {path.name} is {state} now. Stop it first, then delete it.")
        shutil.rmtree(path)


def made_by_us(path: Path) -> bool:
    """Whether this app made the run folder: it holds the marker. Runs made
    before the marker existed are accepted when they hold both a config.json
    and a status.json whose state is one of ours: a folder of another program
    seldom has both, and these older runs are the user's own, which they must
    still be able to delete."""
    path = Path(path)
    if (path / RUN_MARKER).is_file():
        return True
    try:
        status = read_json(path / "status.json", None)
    except (OSError, ValueError):  # not text: not one we wrote
        return False
    return (path / "config.json").is_file() and isinstance(status, dict) and (
        status.get("state") in ACTIVE_STATES + FINISHED_STATES)


def open_run(path: str | Path) -> Run:
    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"No run at {path} (a run folder holds config.json).")
    return Run(path)


def prepare_run(config: TrainConfig, store: RunStore) -> Run:
    """Make the run folder and write its config before anything slow happens."""
    run = store.create(config.backbone, config.strategy)
    run.write_json("config.json", config.to_dict())
    run.update_status(state="queued", created=time.time(), epochs_done=0, **owner())
    return run
