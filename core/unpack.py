"""Writing pictures into a NEW folder inside the data folder, and nothing else.

The rules every way in shares (uploads, zips, example sets, standard
datasets, the camera): only files whose content is a picture the scan can use
(decoded by core.images, whatever their names say) are kept, under a file
ending that matches their content. Everything is first written into a hidden
temporary folder inside the data folder (`staging`), which is renamed to its
final, free name at the end (`publish`), so a refused or failed import leaves
nothing behind. A zip may unpack at most MAX_UNPACKED_BYTES, never more than
the free disk allows, and never outside its folder (no "..", no absolute
path, no hidden or system files).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from PIL import Image

from .errors import UserError
from .images import HEIC_EXTENSIONS, HEIC_HINT, IMAGE_EXTENSIONS, verify_image
from .names import free_name, safe_name
from .scan_layout import is_hidden_or_system

# What a zip of pictures may unpack: 2 GB is tens of thousands of photos, more
# than a class project needs; past it, unpack it yourself and type its folder.
MAX_UNPACKED_BYTES = 2 * 2**30
MAX_ZIP_FILES = 100_000
# Room left free on the disk after an upload, for the runs and the system.
DISK_HEADROOM = 512 * 2**20

# Unfinished uploads live in hidden folders with this prefix (the Data page
# and the scan skip hidden folders). Ones older than a day are left by a
# killed server, and are removed.
TEMP_PREFIX = ".transfer-studio-upload-"
_STALE_SECONDS = 24 * 3600

# The picture formats the scan reads (by PIL's name), and the endings a file
# of each format may have; the first is the one given to a file with another.
_ENDINGS = {
    "JPEG": (".jpg", ".jpeg", ".jfif", ".jpe"),
    "MPO": (".jpg", ".jpeg", ".jfif", ".jpe"),  # a JPEG with extra frames, as some cameras write
    "PNG": (".png",),
    "GIF": (".gif",),
    "BMP": (".bmp",),
    "WEBP": (".webp",),
    "TIFF": (".tif", ".tiff"),
}


@dataclass
class Saved:
    """What an upload wrote: `folder` (its final place), how many pictures,
    the names of the files that were not pictures (not written), and the
    folder name asked for when that one was taken."""

    folder: Path
    pictures: int = 0
    refused: list[str] = field(default_factory=list)
    asked: str | None = None

    @property
    def renamed(self) -> bool:
        return self.asked is not None and self.asked != self.folder.name


def no_pictures(what: str, refused: list[str]) -> UserError:
    """Nothing could be kept: say which kinds of file are pictures, and what
    to do with a phone's HEIC pictures."""
    text = f"{what} (JPEG, PNG, GIF, BMP, WebP or TIFF). Nothing was saved."
    if any(Path(name).suffix.lower() in HEIC_EXTENSIONS for name in refused):
        text += f" The .heic files are {HEIC_HINT}."
    return UserError(text)


def picture_endings(path: Path) -> tuple[str, ...] | None:
    """The endings a file may have when its content is a picture the scan
    uses; None when it is not one (whatever its name says)."""
    _size, reason, _ = verify_image(str(path))
    if reason:
        return None
    try:
        with Image.open(path) as img:  # the header only: which format it is
            return _ENDINGS.get(img.format or "")
    except Exception:  # noqa: BLE001 - not a picture after all
        return None


def keep_if_picture(path: Path, refused: list[str], shown: str) -> bool:
    """Leave `path` in place under an ending that matches its content, or
    remove it and note it as refused."""
    endings = picture_endings(path)
    if endings is None:
        path.unlink(missing_ok=True)
        refused.append(shown)
        return False
    if path.suffix.lower() not in endings:
        path.rename(free_name(path.parent, path.name + endings[0]))
    return True


@contextmanager
def staging(root: Path):
    """A new hidden folder inside `root`, removed at the end whatever happens
    (after a successful upload it has already been renamed away)."""
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale(root)
    tmp = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=root))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _remove_stale(root: Path) -> None:
    for old in root.glob(TEMP_PREFIX + "*"):
        try:
            if old.is_dir() and not old.is_symlink() and time.time() - old.stat().st_mtime > _STALE_SECONDS:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            continue


def _published_name(asked: str, n: int) -> str:
    return asked if n == 1 else f"{asked}-{n}"


def published_as(name: str, asked: str) -> bool:
    """Whether `name` is one that publish gives a folder asked for as `asked`."""
    number = name[len(asked) + 1 :] if name.startswith(asked + "-") else ""
    return name == asked or (number.isdigit() and name == _published_name(asked, int(number)))


def publish(tmp: Path, root: Path, asked: str) -> Path:
    """Rename the finished temporary folder to root/asked, or to the first
    free root/asked-2, -3… (never onto an existing folder)."""
    for n in range(1, 10_000):
        target = root / _published_name(asked, n)
        if target.exists() or target.is_symlink():
            continue
        try:
            os.rename(tmp, target)
        except OSError:  # made by someone else just now: try the next name
            continue
        return target
    raise UserError(f"There are too many folders named {asked} in {root}; choose another name.")


def _members(zf: zipfile.ZipFile) -> list[tuple[zipfile.ZipInfo, list[str]]]:
    """The zip's files that may be unpacked, with their safe path parts: no
    path outside the folder, no hidden or system files, no wrapping folder."""
    members = []
    for info in zf.infolist():
        if info.is_dir():
            continue
        parts = [p for p in PurePosixPath(info.filename.replace("\\", "/")).parts if p not in ("", ".")]
        if not parts or any(p == ".." for p in parts) or info.filename.startswith("/"):
            continue
        if any(is_hidden_or_system(p) for p in parts):  # as the scan would leave them out: not unpacked
            continue
        members.append((info, parts))
    # Drop wrapping folders ("photos/cats/1.jpg" -> "cats/1.jpg"), judged by
    # the files named as pictures when there are any (a README beside the
    # class folders does not keep the wrapper).
    while members and len({p[0] for _, p in members}) == 1:
        named = [p for _, p in members if PurePosixPath(p[-1]).suffix.lower() in IMAGE_EXTENSIONS] or [
            p for _, p in members
        ]
        if not all(len(p) >= 3 for p in named) or any(len(p) < 2 for _, p in members):
            break
        members = [(i, p[1:]) for i, p in members]
    return members


def _check_size(members, root: Path) -> None:
    """Refuse, before anything is written, a zip that would unpack too much."""
    if len(members) > MAX_ZIP_FILES:
        raise UserError(
            f"This zip file holds {len(members):,} files, more than {MAX_ZIP_FILES:,}. "
            "Unpack it yourself and type its folder instead."
        )
    total = sum(info.file_size for info, _ in members)
    if total > MAX_UNPACKED_BYTES:
        raise UserError(
            f"This zip file unpacks to {total / 2**30:.1f} GB, more than {MAX_UNPACKED_BYTES // 2**30} GB "
            "of pictures. Unpack it yourself and type its folder instead."
        )
    free = shutil.disk_usage(root).free
    if total + DISK_HEADROOM > free:
        raise UserError(
            f"This zip file unpacks to {total / 2**20:,.0f} MB, but the disk has only "
            f"{free / 2**20:,.0f} MB free. Free some space and try again."
        )


def _copy_capped(source, out: Path, budget: int) -> int:
    """Copy at most `budget` bytes (a zip may lie about its sizes); return how many."""
    written = 0
    with open(out, "xb") as dst:  # "x": never over an existing file
        while chunk := source.read(1 << 20):
            written += len(chunk)
            if written > budget:
                raise UserError("This zip file unpacks to more than it says. Nothing was saved.")
            dst.write(chunk)
    return written


def unpack_zip(data, root: Path, folder_name: str) -> Saved:
    """Unpack a zip of class folders into a new folder named after
    `folder_name` inside `root`. Only pictures are kept; the other files are
    named in the result. Refused (nothing written) when it would unpack too much."""
    asked = safe_name(folder_name)
    root.mkdir(parents=True, exist_ok=True)
    try:
        zf = zipfile.ZipFile(data)
    except zipfile.BadZipFile as exc:
        raise UserError("This is not a zip file, or it is damaged. Nothing was saved.") from exc
    with zf, staging(root) as tmp:
        members = _members(zf)
        _check_size(members, root)
        saved, budget = Saved(folder=tmp, asked=asked), MAX_UNPACKED_BYTES
        for info, parts in members:
            out = free_name(tmp.joinpath(*[safe_name(p, "file") for p in parts[:-1]]), safe_name(parts[-1], "file"))
            out.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src:
                    budget -= _copy_capped(src, out, budget)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, NotImplementedError, RuntimeError) as exc:
                raise UserError(f"The zip file is damaged or encrypted ({parts[-1]}). Nothing was saved.") from exc
            saved.pictures += keep_if_picture(out, saved.refused, "/".join(parts))
        if not saved.pictures:
            raise no_pictures("This zip file holds no pictures", saved.refused)
        saved.folder = publish(tmp, root, asked)
    return saved
