"""Pictures a person uploads: safe file names, saving uploaded pictures into a
class folder, and unpacking a zip of class folders without letting it write
outside the folder it is given."""

from __future__ import annotations

import re
import shutil
import zipfile
from pathlib import Path, PurePosixPath

from core.images import IMAGE_EXTENSIONS

_SAFE = re.compile(r"[^A-Za-z0-9 _.-]+")

MAX_ZIP_BYTES = 4 * 2**30


def safe_name(text: str, fallback: str = "my-pictures") -> str:
    name = _SAFE.sub("", (text or "").strip()).strip(" .")
    return name[:80] or fallback


def save_uploaded_images(files, folder: Path, class_name: str) -> int:
    """Save uploaded pictures into folder/class_name/. Returns how many."""
    target = folder / safe_name(class_name, "class")
    target.mkdir(parents=True, exist_ok=True)
    n = 0
    for f in files:
        name = safe_name(Path(f.name).name, f"image{n}.jpg")
        if Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        (target / name).write_bytes(f.getvalue())
        n += 1
    return n


def extract_zip(data, folder: Path) -> int:
    """Unpack a zip of class folders into `folder`, safely: no paths outside
    it, no hidden or system files, and a single wrapping folder is dropped.
    Returns the number of files written."""
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(data) as zf:
        members = []
        total = 0
        for info in zf.infolist():
            if info.is_dir():
                continue
            parts = [p for p in PurePosixPath(info.filename.replace("\\", "/")).parts if p not in ("", ".")]
            if not parts or any(p == ".." for p in parts) or info.filename.startswith("/"):
                continue
            if any(p.startswith(".") or p.lower() == "__macosx" for p in parts):
                continue
            total += info.file_size
            members.append((info, parts))
        if total > MAX_ZIP_BYTES:
            raise ValueError("This zip file unpacks to more than 4 GB; unpack it yourself and type its folder instead.")
        # Drop wrapping folders ("photos/cats/1.jpg" -> "cats/1.jpg").
        while members and all(len(p) >= 3 for _, p in members) and len({p[0] for _, p in members}) == 1:
            members = [(i, p[1:]) for i, p in members]
        for info, parts in members:
            out = folder.joinpath(*[safe_name(p, "file") for p in parts])
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
    return len(members)
