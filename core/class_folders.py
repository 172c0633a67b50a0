"""A folder of pictures made here, one class at a time (with the camera, or uploads).

A `MadeFolder` is an ordinary picture folder (one subfolder per class) inside
the data folder, so the scan, training and runs treat it like any other. This
module owns only folders it made itself: each holds a hidden marker file, and
every change (a class added, renamed or removed, a picture saved or deleted)
happens inside that folder, never through a link, never over a file.

Captured pictures arrive as JPEG bytes from a browser: each is decoded with
the same size limits as every picture of the app (core.images), shrunk to at
most MAX_SIDE pixels, encoded again as a plain JPEG (nothing from the browser
is kept byte for byte) and written whole or not at all, under a new name.
"""

from __future__ import annotations

import io
import os
import shutil
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from core.errors import UserError
from core.files import atomic_write_bytes
from core.images import IMAGE_EXTENSIONS, open_rgb
from core.names import free_name, safe_name
from core.scan_advice import VAL_NAMES
from core.scan_report import natural_key

# The hidden file that says "this app made this folder"; the scan skips hidden files.
MARKER = ".transfer-studio-made-here"
# The longest side of a saved picture (the networks see 224-300 pixels).
MAX_SIDE = 640
JPEG_QUALITY = 90
# One captured picture may be at most this big before decoding (a 640-pixel
# JPEG is about 50 KB; a browser cannot honestly send more).
MAX_CAPTURED_BYTES = 4 * 2**20
# Names the scan keeps for train/val/test splits: never a class.
_SPLIT_WORDS = {"train", *VAL_NAMES}


@dataclass
class Captured:
    """What saving a burst did: how many pictures were written, and how many
    were not pictures (or too big) and were left out."""

    saved: int = 0
    refused: int = 0


def class_name(text: str) -> str:
    """A class name safe as a folder name, or a UserError saying why not."""
    name = safe_name(text, "")
    if not name:
        raise UserError("Give the class a name with letters or digits, e.g. 'thumbs up'.")
    if name.lower() in _SPLIT_WORDS:
        raise UserError(
            f"'{name}' is a word Transfer Studio keeps for splitting pictures into training and checking; "
            "choose another class name."
        )
    return name


def _is_picture_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink() and path.suffix.lower() in IMAGE_EXTENSIONS


class MadeFolder:
    """One folder made here: `path` lies directly inside `root` and holds MARKER."""

    def __init__(self, root: Path, path: Path):
        self.root = Path(root).resolve()
        self.path = Path(path)
        if not _made_here(self.root, self.path):
            raise UserError(f"{self.path} is not a folder of pictures made in Transfer Studio.")
        self.path = self.path.resolve()

    @property
    def name(self) -> str:
        return self.path.name

    # --- the folder -------------------------------------------------------

    @classmethod
    def create(cls, root: Path, name: str) -> MadeFolder:
        """A new, empty folder inside `root` named after `name` (a number is
        added when the name is taken; never an existing folder)."""
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        asked = safe_name(name, "my-classes")
        for _ in range(100):
            path = free_name(root, asked)
            try:
                path.mkdir()
            except FileExistsError:  # made by someone else just now
                continue
            atomic_write_bytes(
                path / MARKER, b"made by Transfer Studio: pictures taken or uploaded one class at a time\n"
            )
            return cls(root, path)
        raise UserError(f"There are too many folders named {asked} in {root}; choose another name.")

    # --- classes ----------------------------------------------------------

    def _class_dir(self, name: str) -> Path:
        """The folder of an existing class (a real folder directly inside, no link)."""
        path = self.path / safe_name(name, "")
        if not name or path.parent != self.path or path.is_symlink() or not path.is_dir() or path.name != name:
            raise UserError(f"There is no class named '{name}' in {self.name}.")
        return path

    def classes(self) -> list[str]:
        found = [
            p.name for p in self.path.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")
        ]
        return sorted(found, key=natural_key)  # as the scan orders them: 2 before 10

    def add_class(self, text: str) -> str:
        name = class_name(text)
        if name.lower() in (c.lower() for c in self.classes()):
            raise UserError(f"There is already a class named '{name}'.")
        (self.path / name).mkdir()
        return name

    def rename_class(self, old: str, text: str) -> str:
        source = self._class_dir(old)
        name = class_name(text)
        if name == old:
            return name
        if name.lower() in (c.lower() for c in self.classes() if c != old):
            raise UserError(f"There is already a class named '{name}'.")
        os.rename(source, self.path / name)
        return name

    def remove_class(self, name: str) -> int:
        """Delete a class and its pictures; returns how many pictures went."""
        path = self._class_dir(name)
        count = len(self.pictures(name))
        shutil.rmtree(path)  # a real folder made here (rmtree never follows links inside)
        return count

    # --- pictures ---------------------------------------------------------

    def pictures(self, name: str) -> list[Path]:
        """The class's pictures, newest first."""
        path = self._class_dir(name)
        found = [p for p in path.iterdir() if _is_picture_file(p)]
        return sorted(found, key=lambda p: (p.stat().st_mtime, p.name), reverse=True)

    def counts(self) -> dict[str, int]:
        return {name: len(self.pictures(name)) for name in self.classes()}

    def save_captured(self, name: str, jpegs: Iterable[bytes]) -> Captured:
        """Save pictures from the camera (JPEG or other picture bytes) into a class."""
        folder = self._class_dir(name)
        result = Captured()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for data in jpegs:
            encoded = _reencoded(data)
            if encoded is None:
                result.refused += 1
                continue
            path = free_name(folder, f"photo-{stamp}-{uuid.uuid4().hex[:8]}.jpg")
            atomic_write_bytes(path, encoded)
            result.saved += 1
        return result

    def delete_picture(self, path: Path) -> None:
        """Delete one picture of one of this folder's classes (nothing else)."""
        path = Path(path)
        if path.is_symlink() or not _is_picture_file(path):
            raise UserError(f"{path.name} is not a picture in {self.name}.")
        parent = path.parent.resolve()
        if parent.parent != self.path or parent.name.startswith("."):
            raise UserError(f"{path.name} is not a picture in {self.name}.")
        path.unlink()


def _reencoded(data: bytes) -> bytes | None:
    """The picture in `data` as a plain JPEG of at most MAX_SIDE pixels, or
    None when it is not a picture (or too big to be a camera frame)."""
    if not isinstance(data, bytes | bytearray) or not data or len(data) > MAX_CAPTURED_BYTES:
        return None
    try:
        image = open_rgb(io.BytesIO(data), max_side=MAX_SIDE)
    except Exception:  # noqa: BLE001 - any undecodable frame is simply left out
        return None
    image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def _made_here(root: Path, path: Path) -> bool:
    """A real folder directly inside `root` (no link) that holds MARKER."""
    try:
        return (
            not path.is_symlink()
            and path.is_dir()
            and path.resolve().parent == root
            and not path.name.startswith(".")
            and (path / MARKER).is_file()
        )
    except OSError:
        return False


def made_folders(root: Path) -> list[MadeFolder]:
    """The folders made here inside `root`, newest first."""
    root = Path(root).resolve()
    try:
        found = [p for p in root.iterdir() if _made_here(root, p)]
    except OSError:
        return []
    found.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return [MadeFolder(root, p) for p in found]
