"""Names a person types that become files or folders: made safe, and made free.

A name from a browser (a folder for an upload, a class made with the camera,
an uploaded file's name) keeps letters and digits of any language (été,
Äpfel, 蜜蜂), spaces and `_ . - ( )` only, so it can never name a path
outside its folder (no `/` or `\\`, no `..`) nor a hidden file; and a name
that is taken gets a number (`flowers-2`) instead of replacing what is there.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

_SAFE_MARKS = frozenset(" _.-()")


def safe_name(text: str, fallback: str = "my-pictures") -> str:
    """`text` with only safe characters (at most 80), never starting or ending
    with a dot or a space; `fallback` when nothing is left. Composed first
    (NFC), so an accent a Mac sends as a separate mark stays on its letter."""
    composed = unicodedata.normalize("NFC", (text or "").strip())
    name = "".join(c for c in composed if c.isalnum() or c in _SAFE_MARKS).strip(" .")
    return name[:80] or fallback


def free_name(folder: Path, name: str) -> Path:
    """folder/name, or folder/name-2 (…) when that is taken: never an existing path."""
    stem, suffix = os.path.splitext(name)
    candidate, n = folder / name, 1
    while candidate.exists() or candidate.is_symlink():
        n += 1
        candidate = folder / f"{stem}-{n}{suffix}"
    return candidate
