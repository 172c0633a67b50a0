"""Image folders: scanning them into a ScanReport, opening any image as RGB,
the transforms, and a Dataset that survives files going bad mid-training.

The scan is the user's first contact with their data, so it checks every file
for real (a full decode) and explains every file it leaves out in plain words.
Nothing here imports Streamlit: pages, the CLI and the tests all call it.
"""
from __future__ import annotations

import contextlib
import math
import os
import random
import re
import stat
import statistics
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.transforms import v2

from .config import AUGMENT_PRESETS
from .errors import UserError

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
)

# Below PIL's own bomb limit (about 89 MP), so we refuse an image before PIL
# would even warn. 80 MP is bigger than any ordinary camera photo, and decoding
# one such RGB image already takes about 240 MB.
MAX_IMAGE_PIXELS: int = 80_000_000

# Names that operating systems and archivers drop into folders. They are never
# data, so they are reported as "hidden or system file" rather than as errors.
_SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini", ".ds_store", "ehthumbs.db"})
_SYSTEM_DIRS = frozenset({"__macosx"})

# Split folder names, in order of preference for the validation split.
_VAL_NAMES = ("val", "valid", "validation", "test")

# The scan decodes JPEGs at 1/8 scale (draft mode): it proves the whole file
# decodes while costing a fraction of a full decode.
_VERIFY_DRAFT_SIDE = 64

# Thresholds for warnings (plain advice, not errors).
_FEW_TRAIN = 10
_FEW_VAL = 3
_IMBALANCE_RATIO = 5
_TINY_SIDE = 32

_REASON_HIDDEN = "hidden or system file"
_REASON_LINK = "symlink loop / broken link"
_REASON_NOT_IMAGE_TYPE = "not an image file type"
_REASON_BROKEN = "unreadable or truncated image"


class DataFolderError(UserError):
    """The folder cannot be scanned at all. The message is for the user."""


class _ImageTooLargeError(ValueError):
    """Raised before decoding an image whose pixel count is above MAX_IMAGE_PIXELS."""

    def __init__(self, path: str, size: tuple[int, int]):
        self.size = size
        super().__init__(f"The image {path} is too large to decode safely ({size[0]}×{size[1]}).")


@dataclass
class SkippedFile:
    path: str  # absolute
    reason: str  # short plain words


@dataclass
class ScanReport:
    root: str
    classes: list[str]
    split_source: str  # "folders" or "random"
    split_folders: dict[str, str]
    val_fraction: float
    seed: int
    train: list[tuple[str, int]]
    val: list[tuple[str, int]]
    counts: dict[str, dict[str, int]]
    image_sizes: dict
    skipped: list[SkippedFile] = field(default_factory=list)
    empty_classes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def can_train(self) -> bool:
        return not self.errors

    @property
    def num_images(self) -> int:
        return len(self.train) + len(self.val)

    def to_dict(self) -> dict:
        """JSON-safe dict. can_train and num_images are included for readers of
        scan.json; from_dict ignores them (they are derived)."""
        return {
            "root": self.root,
            "classes": list(self.classes),
            "split_source": self.split_source,
            "split_folders": dict(self.split_folders),
            "val_fraction": self.val_fraction,
            "seed": self.seed,
            "train": [[path, label] for path, label in self.train],
            "val": [[path, label] for path, label in self.val],
            "counts": {name: dict(c) for name, c in self.counts.items()},
            "image_sizes": {
                key: (list(value) if isinstance(value, (list, tuple)) else value)
                for key, value in self.image_sizes.items()
            },
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
            "empty_classes": list(self.empty_classes),
            "warnings": list(self.warnings),
            "errors": list(self.errors),
            "can_train": self.can_train,
            "num_images": self.num_images,
        }

    @classmethod
    def from_dict(cls, d: dict) -> ScanReport:
        return cls(
            root=d["root"],
            classes=list(d["classes"]),
            split_source=d["split_source"],
            split_folders=dict(d.get("split_folders", {})),
            val_fraction=float(d["val_fraction"]),
            seed=int(d["seed"]),
            train=[(str(path), int(label)) for path, label in d["train"]],
            val=[(str(path), int(label)) for path, label in d["val"]],
            counts={name: {k: int(v) for k, v in c.items()} for name, c in d["counts"].items()},
            image_sizes={
                key: (list(value) if isinstance(value, (list, tuple)) else value)
                for key, value in d.get("image_sizes", {}).items()
            },
            skipped=[SkippedFile(s["path"], s["reason"]) for s in d.get("skipped", [])],
            empty_classes=list(d.get("empty_classes", [])),
            warnings=list(d.get("warnings", [])),
            errors=list(d.get("errors", [])),
        )

    def format_text(self) -> str:
        lines = [f"Image folder: {self.root}"]
        if self.split_source == "folders":
            lines.append(
                f"Split: from the folders {self.split_folders.get('train')}/ (train) "
                f"and {self.split_folders.get('val')}/ (validation)"
            )
        else:
            lines.append(
                f"Split: random, {self.val_fraction:.0%} of each class set aside for validation "
                f"(seed {self.seed})"
            )

        lines.append(f"Classes ({len(self.classes)}), images for train / validation:")
        width = max([len(name) for name in self.classes] + [5])
        total_train = total_val = 0
        for name in self.classes:
            c = self.counts.get(name, {"train": 0, "val": 0})
            total_train += c["train"]
            total_val += c["val"]
            lines.append(f"  {name:<{width}}  {c['train']:>6} / {c['val']}")
        lines.append(f"  {'total':<{width}}  {total_train:>6} / {total_val}")

        sizes = self.image_sizes or {}
        if sizes.get("count"):
            def wh(v):
                return f"{v[0]}×{v[1]}"

            lines.append(
                f"Image sizes ({sizes['count']} images): smallest {wh(sizes['min'])}, "
                f"median {wh(sizes['median'])}, largest {wh(sizes['max'])}"
            )

        if self.skipped:
            lines.append(f"Skipped files ({len(self.skipped)}):")
            for s in self.skipped:
                lines.append(f"  {s.path}: {s.reason}")
        if self.empty_classes:
            lines.append("Class folders with no usable image: " + ", ".join(self.empty_classes))
        if self.warnings:
            lines.append("Warnings:")
            lines.extend(f"  - {w}" for w in self.warnings)
        if self.errors:
            lines.append("Errors (training is not possible until these are fixed):")
            lines.extend(f"  - {e}" for e in self.errors)
        lines.append(
            "Ready to train." if self.can_train else "Cannot train on this folder yet."
        )
        return "\n".join(lines)


# --------------------------------------------------------------------------
# Opening images


def _exif_orientation(img: Image.Image) -> int:
    # A damaged EXIF block must not make an otherwise fine photo unusable.
    try:
        return int(img.getexif().get(ExifTags.Base.Orientation, 1) or 1)
    except Exception:
        return 1


def _high_depth_to_l(img: Image.Image) -> Image.Image:
    """16-bit and 32-bit greyscale to 8-bit L. PIL's own convert clips every
    value above 255, which turns a normal 16-bit photo almost entirely white."""
    mode = img.mode
    if mode.startswith("I;16"):
        # A 16-bit container: map its full range 0..65535 onto 0..255.
        return img.convert("I").point(lambda v: v * (1 / 257)).convert("L")
    lo, hi = img.getextrema()
    if mode == "F" and lo >= 0 and hi <= 1:
        scale, offset = 255.0, 0.0  # float images in 0..1
    elif lo >= 0 and hi <= 255:
        scale, offset = 1.0, 0.0  # already 8-bit values in a wider container
    elif mode == "I" and lo >= 0 and hi <= 65535:
        scale, offset = 1 / 257, 0.0  # 16-bit values opened as 32-bit
    elif hi > lo:
        scale = 255.0 / (hi - lo)  # anything else: stretch its range
        offset = -lo * scale
    else:
        return Image.new("L", img.size, int(min(max(lo, 0), 255)))
    return img.point(lambda v: v * scale + offset).convert("L")


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _high_depth_to_l(img).convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        # Transparent areas go on white: compositing on black (what a plain
        # convert does) turns logos and cut-outs into black blobs.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    # CMYK, L, 1, P, YCbCr...: PIL's conversion is right for these.
    return img.convert("RGB")


def _decode(path, draft_side: int | None) -> tuple[Image.Image, tuple[int, int]]:
    """Open, size-check, fully decode, EXIF-rotate and convert one image.

    Returns the RGB image and the image's true size after EXIF rotation (not
    the smaller draft size). Raises on any failure.
    """
    path = os.fspath(path)
    with Image.open(path) as img:
        width, height = img.size
        # Checked from the header alone, before any pixel is decoded.
        if width * height > MAX_IMAGE_PIXELS:
            raise _ImageTooLargeError(path, (width, height))
        if draft_side and img.format == "JPEG":
            # JPEG can decode at 1/2, 1/4 or 1/8 scale almost for free. Draft
            # picks the smallest scale whose both sides stay >= draft_side.
            img.draft("RGB", (draft_side, draft_side))
        # A full decode: this is what catches truncated and corrupt files.
        # For a multi-frame GIF this is the first frame.
        img.load()
        if _exif_orientation(img) in (5, 6, 7, 8):  # rotated by 90 or 270 degrees
            width, height = height, width
        try:
            rotated = ImageOps.exif_transpose(img)
        except Exception:
            rotated = img
        rgb = _to_rgb(rotated if rotated is not None else img)
        if rgb is img:
            # Detach from the file, which the with-block closes.
            rgb = img.copy()
    return rgb, (width, height)


def open_rgb(path, max_side: int | None = None) -> Image.Image:
    """Open any readable image as 3-channel RGB with EXIF orientation applied.

    max_side: if given, JPEGs are decoded at a reduced scale whose shorter side
    is still >= max_side (much faster for big photos); no other resize is done.
    Raises on failure; callers decide what a failure means.
    """
    rgb, _ = _decode(path, max_side)
    return rgb


# --------------------------------------------------------------------------
# Scanning a folder


def _is_hidden_or_system(name: str) -> bool:
    return name.startswith(".") or name.lower() in _SYSTEM_FILES or name.lower() in _SYSTEM_DIRS


def _looks_like_text(path: str) -> bool:
    """True when a file's start is plain text (HTML error pages and notes saved
    as .jpg are a classic in scraped datasets)."""
    try:
        with open(path, "rb") as f:
            chunk = f.read(1024)
    except OSError:
        return False
    if not chunk or b"\x00" in chunk:
        return False
    try:
        text = chunk.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(chunk) - 3:  # not just a character cut at the end
            return False
        text = chunk[: exc.start].decode("utf-8")
    return all(ch.isprintable() or ch in "\t\n\r\f" for ch in text)


def _verify(path: str, keep_side: int | None = None, interpolation: str = "bilinear"):
    """(size, None, pixels) for a usable image, (None, reason, None) otherwise.
    Never raises. pixels: with keep_side, the image as DecodedImageCache
    keeps it (shorter side at most keep_side); else None, and the image is
    decoded only as far as proving that it decodes."""
    try:
        image, size = _decode(path, keep_side or _VERIFY_DRAFT_SIDE)
        return size, None, (_shrink(image, keep_side, interpolation) if keep_side else None)
    except _ImageTooLargeError as exc:
        return None, f"too large to decode safely ({exc.size[0]}×{exc.size[1]})", None
    except Image.DecompressionBombError as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        detail = f" ({int(found.group(1)) / 1e6:.0f} megapixels)" if found else ""
        return None, "too large to decode safely" + detail, None
    except Image.DecompressionBombWarning:
        return None, "too large to decode safely", None
    except FileNotFoundError:
        return None, "file disappeared during the scan", None
    except PermissionError:
        return None, "no permission to read the file", None
    except UnidentifiedImageError:
        if _looks_like_text(path):
            return None, f"not an image (text file named {os.path.splitext(path)[1]})", None
        return None, "not an image (unknown or unsupported format)", None
    except Exception:
        return None, _REASON_BROKEN, None


def _list_dir(path: str, skipped: list[SkippedFile]) -> tuple[list[str], list[str]]:
    """Sorted (subfolder names, file names) of a folder, leaving out hidden and
    system entries. Hidden folders are reported; hidden files at this level
    (root or split folder) are not data, so they are dropped quietly."""
    dirs, files = [], []
    with os.scandir(path) as entries:
        for entry in entries:
            try:
                is_dir = entry.is_dir()  # follows symlinks
            except OSError:  # e.g. a symlink loop
                is_dir = False
            if is_dir:
                if _is_hidden_or_system(entry.name):
                    skipped.append(SkippedFile(os.path.join(path, entry.name), _REASON_HIDDEN))
                else:
                    dirs.append(entry.name)
            elif not _is_hidden_or_system(entry.name):
                files.append(entry.name)
    return sorted(dirs), sorted(files)


def _report_loose_images(folder: str, files: list[str], skipped: list[SkippedFile]) -> int:
    """Images sitting beside the class folders belong to no class: report them.
    Other loose files (README, LICENSE) are normal and ignored."""
    n = 0
    for name in files:
        if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
            skipped.append(SkippedFile(os.path.join(folder, name), "image outside any class folder"))
            n += 1
    return n


def _is_loop(real: str, current_real: str, visited: set[str]) -> bool:
    """Would descending into a folder whose real path is `real` revisit one?
    Also true for an ancestor of the current folder: walking it would take us
    back round (and through everything else under that ancestor)."""
    if real in visited or real == current_real:
        return True
    return current_real.startswith(real.rstrip(os.sep) + os.sep)


def _collect_candidates(class_dir: str, stop_reals: set[str], skipped: list[SkippedFile]) -> list[str] | None:
    """Paths under a class folder (nested folders included) worth decoding, or
    None when the "class folder" is a link back to the root (not a class).

    Follows symlinked folders, but tracks the real path of every folder visited
    so a loop ("loop -> .") is walked once and reported, never followed forever.
    """
    class_real = os.path.realpath(class_dir)
    # A class folder that is (or contains) the root or a split folder, e.g. a
    # link "loop -> ." beside the class folders, would scan everything again.
    if any(_is_loop(class_real, r, set()) for r in stop_reals):
        skipped.append(SkippedFile(class_dir, _REASON_LINK))
        return None
    visited = {class_real}
    candidates = []

    def on_error(exc: OSError):
        skipped.append(SkippedFile(os.path.abspath(exc.filename or class_dir), "folder could not be read"))

    for dirpath, dirnames, filenames in os.walk(class_dir, onerror=on_error, followlinks=True):
        current_real = os.path.realpath(dirpath)
        keep = []
        for name in sorted(dirnames):
            sub = os.path.join(dirpath, name)
            if _is_hidden_or_system(name):
                skipped.append(SkippedFile(sub, _REASON_HIDDEN))  # listed once, not entered
                continue
            real = os.path.realpath(sub)
            if _is_loop(real, current_real, visited) or real in stop_reals:
                skipped.append(SkippedFile(sub, _REASON_LINK))
                continue
            visited.add(real)
            keep.append(name)
        dirnames[:] = keep  # os.walk only descends into what is left here

        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if _is_hidden_or_system(name):
                skipped.append(SkippedFile(path, _REASON_HIDDEN))
                continue
            try:
                st = os.stat(path)  # follows symlinks
            except FileNotFoundError:
                skipped.append(SkippedFile(path, _REASON_LINK if os.path.islink(path) else "file disappeared during the scan"))
                continue
            except OSError:  # ELOOP for a link to itself, permissions...
                skipped.append(SkippedFile(path, _REASON_LINK if os.path.islink(path) else "file could not be read"))
                continue
            if os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
                skipped.append(SkippedFile(path, _REASON_NOT_IMAGE_TYPE))
                continue
            if not stat.S_ISREG(st.st_mode):
                # A pipe or device named .jpg would block a read forever.
                skipped.append(SkippedFile(path, "not a regular file"))
                continue
            if st.st_size == 0:
                skipped.append(SkippedFile(path, "empty file (0 bytes)"))
                continue
            candidates.append(path)
    return candidates


def _verify_all(paths: list[str], keep_side: int | None = None, budget: int = 0, interpolation: str = "bilinear"):
    """{path: (size, reason)}, and with keep_side the usable images' pixels
    {path: array} while they fit in `budget` bytes (else None and why not)."""
    # PIL releases the GIL while decoding, so threads give real parallelism
    # without the start-up cost (and pickling) of processes.
    workers = max(2, min(16, 2 * (os.cpu_count() or 1)))
    results: dict = {}
    kept: dict | None = {} if keep_side else None
    why, used = None, 0
    with warnings.catch_warnings():
        # Images over PIL's own limit are refused by our (lower) limit anyway;
        # silence PIL's warning so the console is not cluttered. Note: the
        # filter is process-wide while the scan runs (warnings is global).
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for path, (size, reason, pixels) in zip(paths, pool.map(lambda p: _verify(p, keep_side, interpolation), paths)):
                results[path] = (size, reason)
                if kept is not None and pixels is not None:
                    used += pixels.nbytes
                    kept[path] = pixels
                    if used > budget:  # the estimate was low: stop keeping, memory stays bounded
                        kept, why = None, _too_big(used * len(paths) // len(results), budget)
    return results, kept, why


def _split_counts(n: int, val_fraction: float) -> int:
    """How many of a class's n images go to validation."""
    n_val = math.floor(n * val_fraction + 0.5)
    if n >= 2:
        # Every class needs one image to check and one to train on.
        n_val = min(max(n_val, 1), n - 1)
    else:
        n_val = 0
    return n_val


def _size_summary(sizes: list[tuple[int, int]]) -> dict:
    if not sizes:
        return {"count": 0, "min": None, "max": None, "median": None}
    # Smallest and largest are real images (by pixel count); the median is per
    # side, which is what matters when choosing a resize.
    smallest = min(sizes, key=lambda s: (s[0] * s[1], s))
    largest = max(sizes, key=lambda s: (s[0] * s[1], s))
    return {
        "count": len(sizes),
        "min": list(smallest),
        "max": list(largest),
        "median": [statistics.median_low(s[0] for s in sizes), statistics.median_low(s[1] for s in sizes)],
    }


def _check_root(root: str) -> None:
    if not os.path.exists(root):
        raise DataFolderError(f"The folder {root} does not exist.")
    if not os.path.isdir(root):
        raise DataFolderError(f"{root} is a file, not a folder. Choose the folder that holds the class folders.")
    try:
        os.listdir(root)
    except OSError as exc:
        raise DataFolderError(f"The folder {root} cannot be read ({exc.strerror or exc}).") from exc


def scan_folder(root, val_fraction: float = 0.2, seed: int = 0) -> ScanReport:
    """Scan an image folder (one subfolder per class, or train/ + val/ each
    holding class folders) into a ScanReport. Every image is decoded once.

    Raises DataFolderError if root is missing, not a folder, or unreadable.
    """
    return _scan(root, val_fraction, seed)[0]


def scan_and_decode(root, short_side: int, val_fraction: float = 0.2, seed: int = 0, budget: int | None = None,
                    interpolation: str = "bilinear") -> tuple[ScanReport, DecodedImageCache | None, str | None]:
    """scan_folder that keeps the images it decodes, for training.

    The scan decodes every image anyway, to prove that it can be read; here
    it decodes them at the size training needs (shorter side short_side, the
    transform's resize size) and keeps them in a DecodedImageCache, so that
    training never decodes a file again. Returns (report, cache, None), or
    (report, None, why) when the images would not fit in `budget` bytes
    (default decoded_cache_budget()): then they are only verified, as
    scan_folder does, and training reads them from disk. interpolation: the
    transform's resize filter, which the images are shrunk with.
    """
    report, kept, why = _scan(root, val_fraction, seed, short_side, budget, interpolation)
    if kept is None:
        return report, None, why
    used = {path for path, _ in report.train + report.val}
    arrays = {path: kept.pop(path) for path in list(kept) if path in used}
    kept.clear()  # the unused ones go now; the cache takes over the rest (and empties `arrays`)
    return report, DecodedImageCache(short_side, arrays, interpolation), None


def _scan(root, val_fraction: float, seed: int, keep_side: int | None = None, budget: int | None = None,
          interpolation: str = "bilinear"):
    """scan_folder's work. Returns (report, kept pixels or None, why not kept)."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1, not {val_fraction}")
    root = os.path.abspath(os.path.expanduser(os.fspath(root)))
    _check_root(root)
    root_real = os.path.realpath(root)

    skipped: list[SkippedFile] = []
    warns: list[str] = []
    errors: list[str] = []

    try:
        top_dirs, top_files = _list_dir(root, skipped)
    except OSError as exc:
        raise DataFolderError(f"The folder {root} cannot be read ({exc.strerror or exc}).") from exc
    by_lower = {name.lower(): name for name in top_dirs}
    train_name = by_lower.get("train")
    val_name = next((by_lower[n] for n in _VAL_NAMES if n in by_lower), None)

    # split name -> folder whose subfolders are the classes
    if train_name and val_name:
        split_source = "folders"
        split_folders = {"train": train_name, "val": val_name}
        class_roots = {"train": os.path.join(root, train_name), "val": os.path.join(root, val_name)}
        loose = _report_loose_images(root, top_files, skipped)
        for name in top_dirs:
            if name not in (train_name, val_name):
                warns.append(
                    f"The folder {name}/ was not used: the split comes from {train_name}/ and {val_name}/."
                )
    else:
        split_source = "random"
        split_folders = {}
        if train_name and top_dirs == [train_name]:
            # Only train/: its subfolders are the classes; validation images
            # are set aside at random.
            class_roots = {"all": os.path.join(root, train_name)}
            loose = _report_loose_images(root, top_files, skipped)
            warns.append(
                f"There is a {train_name}/ folder but no val/, valid/, validation/ or test/ "
                f"folder beside it, so {val_fraction:.0%} of each class is set aside at random for validation."
            )
        else:
            class_roots = {"all": root}
            loose = 0

    # Collect candidate files per (split, class).
    stop_reals = {root_real} | {os.path.realpath(p) for p in class_roots.values()}
    candidates: dict[tuple[str, str], list[str]] = {}
    for split, folder in class_roots.items():
        if folder == root:
            class_names, files = top_dirs, top_files  # already listed above
        else:
            try:
                class_names, files = _list_dir(folder, skipped)
            except OSError as exc:
                raise DataFolderError(f"The folder {folder} cannot be read ({exc.strerror or exc}).") from exc
        loose += _report_loose_images(folder, files, skipped)
        for name in class_names:
            found = _collect_candidates(os.path.join(folder, name), stop_reals, skipped)
            if found is not None:
                candidates[(split, name)] = found

    all_paths = [p for paths in candidates.values() for p in paths]
    why_not_kept = None
    if keep_side:
        budget = decoded_cache_budget() if budget is None else int(budget)
        need = estimate_decoded_bytes(all_paths, keep_side)
        if need > budget:
            keep_side, why_not_kept = None, _too_big(need, budget)
    verified, kept, why = _verify_all(all_paths, keep_side, budget or 0, interpolation)
    why_not_kept = why_not_kept or why
    usable: dict[tuple[str, str], list[str]] = {}
    sizes: dict[str, tuple[int, int]] = {}
    for key, paths in candidates.items():
        good = []
        for path in paths:
            size, reason = verified[path]
            if size is None:
                skipped.append(SkippedFile(path, reason))
            else:
                good.append(path)
                sizes[path] = size
        usable[key] = sorted(good)

    folder_names = sorted({name for _, name in candidates})
    per_class = {name: sum(len(usable[k]) for k in usable if k[1] == name) for name in folder_names}
    classes = [name for name in folder_names if per_class[name] > 0]
    empty_classes = [name for name in folder_names if per_class[name] == 0]
    label = {name: i for i, name in enumerate(classes)}

    train: list[tuple[str, int]] = []
    val: list[tuple[str, int]] = []
    if split_source == "folders":
        for name in classes:
            train += [(p, label[name]) for p in usable.get(("train", name), [])]
            val += [(p, label[name]) for p in usable.get(("val", name), [])]
    else:
        for name in classes:
            paths = usable[("all", name)]  # sorted, so the split depends only on the seed
            shuffled = list(paths)
            # One generator per class: a class's split does not change when
            # another class gains or loses images.
            random.Random(f"{seed}/{name}").shuffle(shuffled)
            n_val = _split_counts(len(paths), val_fraction)
            val_set = set(shuffled[:n_val])
            train += [(p, label[name]) for p in paths if p not in val_set]
            val += [(p, label[name]) for p in paths if p in val_set]

    counts = {name: {"train": 0, "val": 0} for name in classes}
    for _, lab in train:
        counts[classes[lab]]["train"] += 1
    for _, lab in val:
        counts[classes[lab]]["val"] += 1
    used_sizes = [sizes[p] for p, _ in train + val]

    # Errors: reasons training is impossible.
    if not classes:
        if not folder_names:
            msg = (
                f"No class folders were found in {root}. Put each class's images in its own "
                f"subfolder, for example {os.path.join(root, 'cats')} and {os.path.join(root, 'dogs')}."
            )
            if loose:
                msg += f" ({loose} images sit directly in the folder, outside any class folder.)"
        else:
            msg = f"No usable images were found in {root}"
            msg += f" ({len(skipped)} files were skipped; see the list)." if skipped else "."
        errors.append(msg)
    elif len(classes) == 1:
        errors.append(
            f"Only one class ({classes[0]}) was found: training needs at least two classes, "
            f"each in its own subfolder."
        )
    for name in classes:
        c = counts[name]
        if split_source == "folders":
            if c["train"] == 0:
                errors.append(
                    f"Class '{name}' has images in {split_folders['val']}/ but none in "
                    f"{split_folders['train']}/: every class needs training images."
                )
            if c["val"] == 0:
                errors.append(
                    f"Class '{name}' has no images in {split_folders['val']}/: every class needs "
                    f"at least one validation image to measure accuracy."
                )
        elif c["val"] == 0:
            errors.append(
                f"Class '{name}' has only 1 usable image: each class needs at least 2 "
                f"(one to train on, one to check the model with)."
            )

    # Warnings: training works, but the user should know.
    for name in classes:
        c = counts[name]
        if 0 < c["train"] < _FEW_TRAIN:
            warns.append(
                f"Class '{name}' has only {c['train']} training images; 10 or more per class "
                f"(ideally many more) gives much better results."
            )
        if 0 < c["val"] < _FEW_VAL:
            warns.append(
                f"Class '{name}' has only {c['val']} validation image{'s' if c['val'] > 1 else ''}, "
                f"so its measured accuracy will be very noisy."
            )
    train_counts = {name: counts[name]["train"] for name in classes if counts[name]["train"] > 0}
    if len(train_counts) >= 2:
        most = max(train_counts, key=train_counts.get)
        least = min(train_counts, key=train_counts.get)
        if train_counts[most] > _IMBALANCE_RATIO * train_counts[least]:
            warns.append(
                f"The classes are very unbalanced: '{most}' has {train_counts[most]} training images "
                f"but '{least}' only {train_counts[least]}. The model may learn to favour '{most}'."
            )
    tiny = sum(1 for w, h in used_sizes if min(w, h) < _TINY_SIDE)
    if tiny:
        warns.append(
            f"{tiny} image{'s are' if tiny > 1 else ' is'} tiny (a side under {_TINY_SIDE} pixels); "
            f"{'they' if tiny > 1 else 'it'} will be blown up and look blurry to the model."
        )
    for name in empty_classes:
        warns.append(f"The folder '{name}' has no usable images, so it is not used as a class.")
    if skipped:
        warns.append(f"{len(skipped)} file{'s were' if len(skipped) > 1 else ' was'} skipped (see the list of skipped files and why).")

    skipped.sort(key=lambda s: s.path)
    report = ScanReport(
        root=root,
        classes=classes,
        split_source=split_source,
        split_folders=split_folders,
        val_fraction=val_fraction,
        seed=seed,
        train=train,
        val=val,
        counts=counts,
        image_sizes=_size_summary(used_sizes),
        skipped=skipped,
        empty_classes=empty_classes,
        warnings=warns,
        errors=errors,
    )
    return report, kept, why_not_kept


# --------------------------------------------------------------------------
# Transforms

def make_transform(
    image_size: int,
    resize_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    augment: str = "none",
    train: bool = False,
    normalize: bool = True,
    interpolation: str = "bilinear",
) -> Callable[[Image.Image], torch.Tensor]:
    """PIL RGB image -> normalised float tensor (3, image_size, image_size).

    Validation (train=False) and augment "none" use the deterministic resize +
    centre crop the backbone was pretrained with. interpolation: the resize
    filter its weights expect (BackboneInfo.interpolation; EfficientNet and
    ViT weights were made with bicubic).

    normalize=False stops at the uint8 tensor, for loaders that normalise a
    whole batch at once with BatchNormalizer (mean and std are then unused):
    the same numbers, at a fraction of the cost, and a quarter of the bytes
    to move to a GPU.
    """
    if augment not in AUGMENT_PRESETS:
        raise ValueError(f"Unknown augmentation preset {augment!r}; choose one of {', '.join(AUGMENT_PRESETS)}")
    mode = v2.InterpolationMode(interpolation)
    if not train or augment == "none":
        steps = [v2.Resize(resize_size, interpolation=mode, antialias=True), v2.CenterCrop(image_size)]
    else:
        steps = [v2.RandomResizedCrop(image_size, interpolation=mode, antialias=True), v2.RandomHorizontalFlip()]
        if augment == "strong":
            steps += [v2.ColorJitter(0.3, 0.3, 0.3, 0.05), v2.TrivialAugmentWide()]
    steps.append(v2.ToImage())
    if normalize:
        steps += [
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize([float(m) for m in mean], [float(s) for s in std]),
        ]
    steps.append(v2.ToPureTensor())  # a plain Tensor, not a tv_tensors.Image
    return v2.Compose(steps)


class BatchNormalizer:
    """A batch of uint8 images (from make_transform(normalize=False)) -> the
    normalised float tensor that make_transform(normalize=True) gives for
    each image, on `device`.

    One vectorised pass over the whole batch, on the device, instead of a
    few small tensor operations per image in the loader: on a CPU that saves
    about a millisecond an image of Python and memory traffic."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device, channels_last: bool = False):
        mean = torch.tensor([float(m) for m in mean]).view(1, 3, 1, 1)
        std = torch.tensor([float(s) for s in std]).view(1, 3, 1, 1)
        # (x / 255 - mean) / std as one multiply and one subtract.
        self.scale = (1.0 / (255.0 * std)).to(device)
        self.shift = (mean / std).to(device)
        self.device = torch.device(device)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device, non_blocking=True)
        x = x.to(torch.float32, memory_format=self.memory_format)
        return x.mul_(self.scale).sub_(self.shift)


class NormalizedBatches:
    """A loader of uint8 image batches, yielding them normalised (see
    BatchNormalizer): what the training loop and evaluation expect."""

    def __init__(self, loader, normalizer: BatchNormalizer):
        self.loader = loader
        self.normalizer = normalizer

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for images, labels, indices, failed in self.loader:
            if images.numel():
                images = self.normalizer(images)
            yield images, labels, indices, failed


# --------------------------------------------------------------------------
# Decoded-image cache

# Decoded images may take at most this much memory, and at most this share of
# the memory available when training starts. A dataset that needs more is read
# from disk every epoch instead (streaming), as if there were no cache.
DECODED_CACHE_MAX_BYTES = 2 * 2**30
DECODED_CACHE_MAX_SHARE = 0.25
# How many image headers the size estimate reads at most: a random sample keeps
# it instant for a folder of 100,000 photos.
_ESTIMATE_SAMPLE = 256


def available_memory() -> int | None:
    """Bytes of memory that new allocations can use now, or None if unknown."""
    try:
        with open("/proc/meminfo") as f:  # Linux: MemAvailable counts reclaimable caches
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def decoded_cache_budget() -> int:
    """Bytes the decoded-image cache may use on this machine now."""
    free = available_memory()
    if free is None:
        return DECODED_CACHE_MAX_BYTES // 4  # unknown: stay modest
    return int(min(DECODED_CACHE_MAX_BYTES, DECODED_CACHE_MAX_SHARE * free))


def _resized_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) once the shorter side is brought down to short_side, as
    torchvision's Resize computes it. Smaller images keep their size: enlarging
    them is left to the transform, which would do exactly that."""
    short, long = min(width, height), max(width, height)
    if short <= short_side:
        return width, height
    new_long = int(short_side * long / short)
    return (short_side, new_long) if width <= height else (new_long, short_side)


def _header_size(path: str) -> tuple[int, int] | None:
    try:
        with Image.open(path) as img:  # reads the header only, no pixels
            return img.size
    except Exception:
        return None


def estimate_decoded_bytes(paths: Sequence[str], short_side: int) -> int:
    """About how much memory DecodedImageCache.build(paths, short_side) needs,
    from the headers of (a sample of) the files."""
    if not paths:
        return 0
    chosen = list(paths) if len(paths) <= _ESTIMATE_SAMPLE else random.Random(0).sample(list(paths), _ESTIMATE_SAMPLE)
    sizes = [size for size in map(_header_size, chosen) if size is not None]
    if not sizes:
        return 0
    per_image = sum(3 * w * h for w, h in (_resized_size(w, h, short_side) for w, h in sizes)) / len(sizes)
    return int(per_image * len(paths))


def _shrink(image: Image.Image, short_side: int, interpolation: str = "bilinear") -> np.ndarray:
    """An RGB image as a (height, width, 3) uint8 array, its shorter side
    brought down to short_side (smaller images keep their size)."""
    if min(image.size) > short_side:
        # The same call, with the same filter, as the transform's Resize:
        # that Resize then finds the size already right and changes nothing.
        image = v2.functional.resize(image, [short_side], interpolation=v2.InterpolationMode(interpolation),
                                     antialias=True)
    return np.asarray(image)


def _too_big(need: int, budget: int) -> str:
    return (f"the decoded images need about {need / 2**20:,.0f} MB, more than the {budget / 2**20:,.0f} MB "
            f"set aside for them, so they are read from disk every epoch")


class DecodedImageCache:
    """Images decoded once and kept in memory (scan_and_decode makes one), so
    the feature pass and epochs with augmentation crop and flip pixels in
    memory instead of decoding every JPEG again.

    Each image is kept as uint8 RGB pixels whose shorter side is at most
    `short_side` (the eval transform's resize size), which is 3 bytes a pixel:
    a 256x341 photo takes 260 kB. get(path) gives the PIL image that reading
    the file with open_rgb(path, short_side) and resizing its shorter side to
    short_side gives, so the transforms run unchanged on it and the eval
    transform's result is the same tensor as from disk.

    All pixels live in one flat uint8 tensor. DataLoader worker processes
    started with spawn or forkserver (macOS, Windows, and Linux from Python
    3.14) receive a tensor through shared memory, where numpy arrays would be
    pickled into a copy for every worker; and one tensor takes one
    shared-memory handle, where one per image could exhaust them.
    """

    def __init__(self, short_side: int, arrays: dict, interpolation: str = "bilinear"):
        """arrays: {path: (height, width, 3) uint8 array}. It is emptied as
        the pixels are copied in, so memory never holds them twice."""
        self.short_side = int(short_side)
        self.interpolation = interpolation  # the filter the images were shrunk with
        self._pixels = torch.empty(sum(int(a.nbytes) for a in arrays.values()), dtype=torch.uint8)
        self._where: dict[str, tuple[int, int, int]] = {}  # path -> (start, height, width)
        flat, start = self._pixels.numpy(), 0
        for path in list(arrays):
            array = arrays.pop(path)
            flat[start:start + array.nbytes] = array.reshape(-1)
            self._where[path] = (start, array.shape[0], array.shape[1])
            start += array.nbytes

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, path) -> bool:
        return path in self._where

    @property
    def nbytes(self) -> int:
        return self._pixels.numel()

    def _array(self, path) -> np.ndarray | None:
        spot = self._where.get(path)
        if spot is None:
            return None
        start, height, width = spot
        return self._pixels[start:start + height * width * 3].numpy().reshape(height, width, 3)

    def subset(self, paths) -> DecodedImageCache:
        """The images of these paths only, so the rest can be freed. When they
        are most of the images, the same cache (shared, not copied): copying
        would hold nearly everything twice for a moment to free little."""
        keep = [p for p in dict.fromkeys(paths) if p in self._where]
        if 2 * len(keep) > len(self._where):
            return self
        return DecodedImageCache(self.short_side, {p: self._array(p) for p in keep}, self.interpolation)

    def get(self, path) -> Image.Image | None:
        """The image, or None when it is not held here (read it from disk)."""
        array = self._array(path)
        # fromarray copies RGB pixels into PIL's own buffer, so a transform can
        # never change what is stored.
        return None if array is None else Image.fromarray(array)


# --------------------------------------------------------------------------
# Dataset


class ImageDataset(Dataset):
    """(path, label) samples -> (tensor, label, index).

    A file can go bad after the scan (deleted, overwritten, disk error). Then
    the item's image is None instead of an exception, so one file cannot kill
    an hour of training; collate_skip_broken drops it and reports its index.

    decoded: a DecodedImageCache holding (some of) the images already decoded;
    those are taken from memory, the others read from disk as usual.
    """

    def __init__(self, samples: list[tuple[str, int]], transform, max_side: int | None = None,
                 decoded: DecodedImageCache | None = None):
        if decoded is not None and decoded.short_side != max_side:
            # Its images were resized for another transform: resizing them
            # again would not give what reading the file gives.
            raise ValueError(f"The decoded images have a shorter side of {decoded.short_side}, "
                             f"not max_side={max_side}.")
        self.samples = list(samples)
        self.transform = transform
        self.max_side = max_side
        self.decoded = decoded

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        return self.item(i)

    def item(self, i: int, seed: int | None = None):
        """__getitem__, with the random choices of the transform (crops,
        flips) drawn from `seed` when given: the same seed, the same picture,
        whichever thread reads it and whenever (see ThreadedLoader)."""
        path, label = self.samples[i]
        try:
            image = self.decoded.get(path) if self.decoded is not None else None
            if image is None:
                image = open_rgb(path, self.max_side)
            if self.transform is not None:
                if seed is None:
                    image = self.transform(image)
                else:
                    with _seeded_cpu_rng(seed):
                        image = self.transform(image)
            return image, label, i
        except Exception:
            return None, label, i


# torchvision's random transforms draw from torch's one global CPU generator.
# Threads reading images at once would take turns on it in whatever order they
# run, so a run's crops would depend on thread timing; each seeded transform
# holds this lock and runs from its own seed instead. Decoding (the slow part)
# stays outside the lock.
_CPU_RNG_LOCK = threading.Lock()


@contextlib.contextmanager
def _seeded_cpu_rng(seed: int):
    generator = torch.default_generator  # the CPU one only: CUDA's generators are left alone
    with _CPU_RNG_LOCK:
        state = generator.get_state()
        generator.manual_seed(seed)
        try:
            yield
        finally:
            generator.set_state(state)  # the training thread's own random stream goes on untouched


def _stack_images(images: list[torch.Tensor]) -> torch.Tensor:
    """torch.stack, but fast for images that are (height, width, channel)
    pixels seen as (channel, height, width), which is what a PIL image
    becomes: stacking those views as they are copies one byte at a time
    (about 7 ms per 224x224 image), while stacking the pixels in their own
    order is a plain memory copy. The result is the same tensor, in
    channels-last memory layout, the layout the model wants anyway."""
    if all(x.dim() == 3 and x.permute(1, 2, 0).is_contiguous() for x in images):
        return torch.stack([x.permute(1, 2, 0) for x in images]).permute(0, 3, 1, 2)
    return torch.stack(images)


def collate_skip_broken(batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    """Stack the good items; return (images, labels, indices, failed_indices).

    If every item failed, images is torch.empty(0) and labels/indices have
    shape (0,): the training loop skips such a batch and counts the failures.
    """
    good = [item for item in batch if item[0] is not None]
    failed = [int(item[2]) for item in batch if item[0] is None]
    if not good:
        empty = torch.empty(0, dtype=torch.long)
        return torch.empty(0), empty, empty.clone(), failed
    images = _stack_images([item[0] for item in good])
    labels = torch.tensor([int(item[1]) for item in good], dtype=torch.long)
    indices = torch.tensor([int(item[2]) for item in good], dtype=torch.long)
    return images, labels, indices, failed


def threaded_batches(dataset: Dataset, batch_size: int, *, threads: int = 1, ahead: int = 0,
                     order: Sequence[int] | None = None, pin_memory: bool = False,
                     seeds: Sequence[int] | None = None):
    """Yield collate_skip_broken batches of `dataset` (in `order`, default all
    in turn), each batch's images read by `threads` threads at once.

    PIL decodes and resizes without holding the GIL, so the threads really run
    in parallel, with none of the start-up cost and pickling of worker
    processes. `ahead`: how many batches are read while the caller works on
    the current one. On a GPU, ahead >= 1: the GPU computes while the CPU
    reads. On a CPU, 0: the model's own threads already use every core, and
    reading and computing at the same time only makes them take turns (its
    threads wait for each other at every layer), so it is faster to read a
    batch with every core, then compute with every core. `seeds`: one per
    item of `dataset`, for its random transform (ImageDataset.item).
    """
    order = list(range(len(dataset))) if order is None else list(order)
    chunks = iter([order[i:i + batch_size] for i in range(0, len(order), batch_size)])
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        pending: list[list] = []

        def top_up(count: int) -> None:
            while len(pending) < count:
                chunk = next(chunks, None)
                if chunk is None:
                    return
                if seeds is None:
                    pending.append([pool.submit(dataset.__getitem__, i) for i in chunk])
                else:
                    pending.append([pool.submit(dataset.item, i, seeds[i]) for i in chunk])

        try:
            while True:
                top_up(1)
                if not pending:
                    return
                batch = collate_skip_broken([future.result() for future in pending.pop(0)])
                top_up(ahead)
                if pin_memory and batch[0].numel():
                    batch = (batch[0].pin_memory(), *batch[1:])  # the copy to the GPU can then run asynchronously
                yield batch
        finally:  # also when the caller stops early: drop what was not started
            for futures in pending:
                for future in futures:
                    future.cancel()


class ThreadedLoader:
    """A DataLoader's epochs (reshuffled each time with a seeded generator)
    through threaded_batches: for training and validation on a CPU, where
    worker processes would only compete with the model for the same cores.

    With shuffle (training), each image's random transform also gets a seed
    from that generator, so an augmented run is the same every time it is
    run with the same seed, as with a DataLoader's seeded worker processes."""

    def __init__(self, dataset: Dataset, batch_size: int, *, shuffle: bool, seed: int = 0, threads: int = 1,
                 ahead: int = 0, pin_memory: bool = False):
        self.dataset = dataset
        self.batch_size = max(1, int(batch_size))
        self.shuffle = shuffle
        self.generator = torch.Generator().manual_seed(seed)
        self.threads, self.ahead, self.pin_memory = threads, ahead, pin_memory

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)

    def __iter__(self):
        n = len(self.dataset)
        order = seeds = None
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator).tolist()
            if hasattr(self.dataset, "item"):
                seeds = torch.randint(0, 2**62, (n,), generator=self.generator).tolist()
        yield from threaded_batches(self.dataset, self.batch_size, threads=self.threads, ahead=self.ahead,
                                    order=order, pin_memory=self.pin_memory, seeds=seeds)
