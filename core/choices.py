"""The choices a person made in the app (the folder, the network, what learns,
every setting), kept on disk beside the runs, so that a reload, a second tab
or a restarted server finds them again.

One file, `<runs>/.transfer-studio/choices.json`: a JSON object {name: value}.
It is written whole or not at all (core.files), and only the names that
changed are merged into what is there, so a second tab that changed nothing
never overwrites the first one's choices (the last change of a name wins).
It is read with suspicion: a name nobody expects, a value of the wrong type, a
number outside its range or a word outside its list is left out (its default
stays); a damaged or unreadable file reads as no choices at all.

Nothing here knows the pages: the caller says which names it expects, with
their defaults (whose types the values must have), and, where it has them,
the allowed values or (low, high) ranges.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from .files import atomic_write_json

log = logging.getLogger(__name__)

FOLDER = ".transfer-studio"
FILE = "choices.json"
MAX_TEXT = 4096  # a folder path, a network's name: never longer
MAX_BYTES = 256 * 1024  # the file is a few hundred bytes; anything far bigger is not ours


def choices_path(runs_dir: str | Path) -> Path:
    return Path(runs_dir) / FOLDER / FILE


def _read_raw(path: Path) -> dict:
    try:
        if path.stat().st_size > MAX_BYTES:
            return {}
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _valid_text(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= MAX_TEXT and "\x00" not in value


def _valid_mapping(value: Any) -> bool:
    """{text: {text: bool}}: e.g. the blocks a person switched on per network."""
    if not isinstance(value, dict) or len(value) > 200:
        return False
    return all(
        _valid_text(key)
        and isinstance(inner, dict)
        and len(inner) <= 500
        and all(_valid_text(k) and isinstance(v, bool) for k, v in inner.items())
        for key, inner in value.items()
    )


def valid_value(value: Any, default: Any, allowed: Collection | None = None, limits: tuple | None = None) -> bool:
    """Whether `value` may stand in for `default`: the same type (an int does
    for a float, a bool never does for a number), finite, within `limits`
    (low, high) and among `allowed` when given."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    elif isinstance(default, str):
        ok = _valid_text(value)
    elif isinstance(default, dict):
        ok = _valid_mapping(value)
    else:
        ok = False
    if ok and limits is not None:
        ok = limits[0] <= value <= limits[1]
    if ok and allowed is not None:
        ok = value in allowed
    return ok


def load_choices(
    runs_dir: str | Path,
    expected: Mapping[str, Any],
    allowed: Mapping[str, Collection] | None = None,
    limits: Mapping[str, tuple] | None = None,
) -> dict:
    """The saved choices that pass the checks: {name: value} for names in
    `expected` (name -> default). Never raises; {} when there are none."""
    raw = _read_raw(choices_path(runs_dir))
    allowed, limits = allowed or {}, limits or {}
    out = {}
    for name, value in raw.items():
        if name not in expected:
            continue
        if valid_value(value, expected[name], allowed.get(name), limits.get(name)):
            out[name] = float(value) if isinstance(expected[name], float) else value
    return out


def save_choices(runs_dir: str | Path, changed: Mapping[str, Any]) -> bool:
    """Merge `changed` into the saved choices (what other tabs saved stays).
    Returns False, and logs why, when the file cannot be written (a read-only
    runs folder is no reason to stop the app)."""
    if not changed:
        return True
    path = choices_path(runs_dir)
    merged = {**_read_raw(path), **changed}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, merged)
    except (OSError, TypeError, ValueError):
        log.warning("could not save the choices to %s", path, exc_info=True)
        return False
    return True
