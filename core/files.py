"""Writing a file so that nobody ever sees half of it.

Every file the app writes (run files, checkpoints, stored features, exports,
downloaded weights, the pictures' change journal) goes through `atomic_write`:
written at a temporary name in the same folder, flushed to the disk, then
renamed over the old one. A kill, a full disk or a failed check leaves the
old file (or none), never a torn one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


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
    atomic_write_bytes(path, json.dumps(obj, indent=2, default=json_default).encode())


def atomic_torch_save(path: Path, obj: Any) -> None:
    import torch  # here, not at the top: the command line's --help and a scan never load torch

    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def json_default(obj):
    """For json.dumps: paths, objects with to_dict(), numpy and torch scalars."""
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")
