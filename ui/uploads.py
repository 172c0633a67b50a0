"""Pictures a person uploads, written so that nothing else is ever written:
into a NEW folder inside the data folder (or one an earlier upload started), only
files that decode as pictures. The rules (what is a picture, the hidden
staging folder renamed at the end, what a zip may unpack) live in
core.unpack, shared with the example sets and the standard datasets."""

from __future__ import annotations

import os
from pathlib import Path

from core.unpack import (  # noqa: F401 - the rules live in core; the pages import them from here
    MAX_UNPACKED_BYTES,
    TEMP_PREFIX,
    Saved,
    free_name,
    keep_if_picture,
    no_pictures,
    picture_endings,
    publish,
    published_as,
    safe_name,
    staging,
    unpack_zip,
)


def earlier_folder(root: Path, folder_name: str) -> Path | None:
    """The newest folder an earlier upload made under `folder_name` (named
    so, or so-2, so-3, …, directly inside `root`) that holds at least one
    class: where the next class goes when the session that made it is gone
    (a reload, the next lesson). The page says so before anything is saved;
    another name makes a new folder. None when there is none."""
    asked = safe_name(folder_name)
    try:
        made = [p for p in Path(root).iterdir() if published_as(p.name, asked) and p.is_dir() and not p.is_symlink()]
        newest = max(made, key=lambda p: p.stat().st_mtime, default=None)  # an older one was left as it is
        if newest is None:
            return None
        classes = [c for c in newest.iterdir() if c.is_dir() and not c.name.startswith(".")]
    except OSError:
        return None
    return newest if classes else None


def _inside(folder: Path, root: Path) -> bool:
    folder, root = folder.resolve(), root.resolve()
    return folder.parent == root and not folder.name.startswith(".")


def save_pictures(files, root: Path, folder_name: str, class_name: str, into: Path | None = None) -> Saved:
    """Save uploaded pictures as the class `class_name`: into a new folder
    named after `folder_name` inside `root`, or, with `into`, into that
    folder (one this session made earlier, to add another class). Files that
    are not pictures are left out and named in the result."""
    asked = safe_name(folder_name)
    klass = safe_name(class_name, "class")
    with staging(root) as tmp:
        (tmp / klass).mkdir()
        saved = Saved(folder=tmp, asked=asked)
        for n, upload in enumerate(files):
            shown = Path(upload.name).name
            path = free_name(tmp / klass, safe_name(shown, f"picture{n}"))
            path.write_bytes(upload.getvalue())
            saved.pictures += keep_if_picture(path, saved.refused, shown)
        if not saved.pictures:
            raise no_pictures("None of these files is a picture", saved.refused)
        if into is not None and into.is_dir() and _inside(into, root):
            _move_files(tmp / klass, into / klass)
            saved.folder, saved.asked = into, None
        else:
            saved.folder = publish(tmp, root, asked)
    return saved


def _move_files(source: Path, target: Path) -> None:
    """Move every file of `source` into `target`, each under a free name
    (a hard link cannot replace an existing file)."""
    target.mkdir(exist_ok=True)
    for path in sorted(source.iterdir()):
        while True:
            destination = free_name(target, path.name)
            try:
                os.link(path, destination)
                break
            except FileExistsError:
                continue
        path.unlink()
