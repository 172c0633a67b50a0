"""Fixing a picture folder by hand: move a picture to another class, or set
it aside; every change listed, and each one can be undone.

Nothing is deleted. A set-aside picture goes to `.set-aside/` inside the
folder (hidden, so the scan ignores it), keeping its place below it; a moved
picture keeps its file name (with " (2)" added if the name is taken). Each
change is a line in `.transfer-studio/changes.jsonl` in the same folder, so
the list survives restarts and is shared by every tab. A move is a rename on
the same disk: undoing it gives back the very same bytes.
"""

from __future__ import annotations

import json
import os
import stat
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import UserError

SET_ASIDE_DIR = ".set-aside"
JOURNAL = Path(".transfer-studio") / "changes.jsonl"
_LOCK = threading.Lock()


class CurationError(UserError):
    """A change that cannot be made; the message says why."""


@dataclass
class Change:
    id: str
    time: float
    action: str  # "move" or "set aside"
    source: str  # relative to the data folder
    target: str
    undone: bool = False

    def describe(self) -> str:
        if self.action == "set aside":
            return f"Set aside {self.source}"
        return f"Moved {self.source} to {self.target}"


def move_to_class(root, picture: str, new_class: str) -> Change:
    """Move `picture` (a path relative to `root`, or absolute inside it) into
    the class folder `new_class` of the same split."""
    root = Path(root).resolve()
    source = _inside(root, picture)
    if not new_class or Path(new_class).name != new_class or new_class.startswith("."):
        raise CurationError(f"'{new_class}' is not a class name.")
    class_dir = source.parent
    target_dir = class_dir.parent / new_class
    if target_dir == class_dir:
        raise CurationError(f"{source.name} is already in {new_class}.")
    return _record(root, "move", source, _free_name(target_dir, source.name))


def set_aside(root, picture: str) -> Change:
    """Take `picture` out of the data without deleting it."""
    root = Path(root).resolve()
    source = _inside(root, picture)
    target = root / SET_ASIDE_DIR / source.relative_to(root)
    return _record(root, "set aside", source, _free_name(target.parent, target.name))


def changes(root) -> list[Change]:
    """Every change made to this folder, newest first."""
    path = Path(root).resolve() / JOURNAL
    if not path.is_file():
        return []
    found = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            found.append(Change(**json.loads(line)))
        except (ValueError, TypeError):
            continue  # a line cut short by a crash: the others still count
    return found[::-1]


def undo(root, change_id: str) -> Change:
    """Put the picture of one change back where it was."""
    root = Path(root).resolve()
    with _LOCK:
        entries = changes(root)
        change = next((c for c in entries if c.id == change_id), None)
        if change is None or change.undone:
            raise CurationError("That change is not in the list of changes (or was undone already).")
        here, back = root / change.target, root / change.source
        if not here.is_file():
            raise CurationError(f"{change.target} is no longer there, so it cannot be put back.")
        if back.exists():
            raise CurationError(f"{change.source} exists again; move or rename it first.")
        back.parent.mkdir(parents=True, exist_ok=True)
        os.rename(here, back)
        change.undone = True
        _write_journal(root, entries[::-1])
    return change


def last_change_time(root) -> float | None:
    """When the folder's pictures were last changed here (None: never)."""
    times = [c.time for c in changes(root)]
    return max(times) if times else None


# --- helpers ---------------------------------------------------------------------


def _inside(root: Path, picture: str) -> Path:
    path = Path(picture)
    path = (path if path.is_absolute() else root / path).resolve()
    if root not in path.parents or SET_ASIDE_DIR in path.relative_to(root).parts:
        raise CurationError(f"{picture} is not a picture of {root}.")
    try:
        mode = path.lstat().st_mode
    except OSError as exc:
        raise CurationError(f"{picture} is not there any more.") from exc
    if not stat.S_ISREG(mode):
        raise CurationError(f"{picture} is not a regular file.")
    return path


def _free_name(folder: Path, name: str) -> Path:
    candidate = folder / name
    stem, suffix = os.path.splitext(name)
    n = 2
    while candidate.exists():
        candidate = folder / f"{stem} ({n}){suffix}"
        n += 1
    return candidate


def _record(root: Path, action: str, source: Path, target: Path) -> Change:
    with _LOCK:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(source, target)
        change = Change(
            id=uuid.uuid4().hex[:12],
            time=time.time(),
            action=action,
            source=str(source.relative_to(root)),
            target=str(target.relative_to(root)),
        )
        journal = root / JOURNAL
        journal.parent.mkdir(parents=True, exist_ok=True)
        with open(journal, "a", encoding="utf-8") as f:
            f.write(json.dumps(asdict(change)) + "\n")
    return change


def _write_journal(root: Path, entries: list[Change]) -> None:
    from .files import atomic_write_bytes

    text = "".join(json.dumps(asdict(c)) + "\n" for c in entries)
    atomic_write_bytes(root / JOURNAL, text.encode())
