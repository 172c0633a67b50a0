"""Scanning an image folder into a ScanReport: which folders are the
classes, how the pictures split into training and validation, which files
are left out and why, and what the user should fix or know.

The scan is the user's first contact with their data, so it checks every file
for real (a full decode, core.images.verify_image) and explains every file
it leaves out in plain words. A training's scan (scan_and_decode with
reuse_checks_from) keeps the verdicts, and the next one takes them instead of
decoding again while no file has changed (core.scan_cache). Nothing here
imports Streamlit: pages, the CLI and the tests all call it.
"""

from __future__ import annotations

import math
import os
import random
import stat

from .images import (
    HEIC_EXTENSIONS,
    HEIC_HINT,
    IMAGE_EXTENSIONS,
    REASON_EMPTY,
    DecodedImageCache,
    decoded_cache_budget,
    estimate_decoded_bytes,
    too_big_to_keep,
)
from .paths import pasted_path
from .scan_advice import folder_errors, folder_warnings
from .scan_cache import CHECKED_BEFORE, CheckedPictures, check_all, checked_pictures
from .scan_layout import (
    REASON_SYSTEM,
    DataFolderError,
    Layout,
    find_layout,
    is_hidden_or_system,
    list_dir,
    report_loose_images,
)
from .scan_report import ScanReport, SkippedFile, natural_key, size_summary

__all__ = [
    "DataFolderError",
    "is_hidden_or_system",
    "is_link_loop",
    "scan_and_decode",
    "scan_folder",
    "scan_if_checked_before",
]

_REASON_LINK = "symlink loop / broken link"
_REASON_NOT_IMAGE_TYPE = "not an image file type"


# --------------------------------------------------------------------------
# The public entry points


def scan_folder(
    root, val_fraction: float = 0.2, seed: int = 0, reuse_checks_from: str | os.PathLike | None = None, decode_all=False
) -> ScanReport:
    """Scan an image folder (one subfolder per class, or train/ + val/ each
    holding class folders) into a ScanReport. Every image is decoded once.
    reuse_checks_from: a cache folder of kept verdicts (core.scan_cache): when
    no picture changed since an earlier scan of the folder, none is decoded
    (unless decode_all); else all are, and their verdicts are kept.

    Raises DataFolderError if root is missing, not a folder, or unreadable.
    """
    checked = checked_pictures(reuse_checks_from, root, trust_kept=not decode_all)
    return _scan(root, val_fraction, seed, checked=checked)[0]


def scan_if_checked_before(root, val_fraction: float, seed: int, reuse_checks_from: str | os.PathLike):
    """scan_folder when every picture was checked by an earlier scan and is unchanged
    (files listed and stat'ed, none decoded); else None. For the sidebar, say."""
    try:
        return _scan(root, val_fraction, seed, checked=checked_pictures(reuse_checks_from, root), decode=False)[0]
    except _NeedsDecoding:
        return None


class _NeedsDecoding(Exception):
    """scan_if_checked_before's way out: a picture has no fresh verdict."""


def scan_and_decode(
    root,
    short_side: int,
    val_fraction: float = 0.2,
    seed: int = 0,
    budget: int | None = None,
    interpolation: str = "bilinear",
    on_file=None,
    reuse_checks_from: str | os.PathLike | None = None,
) -> tuple[ScanReport, DecodedImageCache | None, str | None]:
    """scan_folder that keeps the images it decodes, for training.

    The scan decodes every image anyway, to prove that it can be read; here
    it decodes them at the size training needs (shorter side short_side, the
    transform's resize size) and keeps them in a DecodedImageCache, so that
    training never decodes a file again. Returns (report, cache, None), or
    (report, None, why) when the images would not fit in `budget` bytes
    (default decoded_cache_budget()): then they are only verified, as
    scan_folder does, and training reads them from disk. interpolation: the
    transform's resize filter, which the images are shrunk with. on_file:
    called with (done, total) as the pictures are checked.
    reuse_checks_from: a cache folder where the verdicts are kept (core.scan_cache);
    when no picture changed since they were, none is decoded and the result is
    (report, None, CHECKED_BEFORE): decode_pictures decodes them if needed.
    """
    checked = checked_pictures(reuse_checks_from, root)
    report, kept, why = _scan(root, val_fraction, seed, short_side, budget, interpolation, on_file, checked)
    if kept is None:
        return report, None, why
    used = {path for path, _ in report.train + report.val}
    arrays = {path: kept.pop(path) for path in list(kept) if path in used}
    kept.clear()  # the unused ones go now; the cache takes over the rest (and empties `arrays`)
    return report, DecodedImageCache(short_side, arrays, interpolation), None


# --------------------------------------------------------------------------
# The scan, step by step


def _scan(
    root,
    val_fraction: float,
    seed: int,
    keep_side: int | None = None,
    budget: int | None = None,
    interpolation: str = "bilinear",
    on_file=None,
    checked: CheckedPictures | None = None,
    decode: bool = True,
):
    """scan_folder's work. Returns (report, kept pixels or None, why not kept).
    decode=False: raise _NeedsDecoding rather than decode a picture."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1, not {val_fraction}")
    root = os.path.abspath(pasted_path(root))
    check_data_folder(root)
    skipped: list[SkippedFile] = []
    layout = find_layout(root, val_fraction, skipped)
    candidates = _find_candidates(root, layout, skipped)
    usable, sizes, kept, why_not_kept = _decode_candidates(
        candidates, skipped, keep_side, budget, interpolation, on_file, checked, decode
    )

    folder_names = sorted({name for _, name in candidates}, key=natural_key)  # 2 before 10
    per_class = {name: sum(len(usable[k]) for k in usable if k[1] == name) for name in folder_names}
    classes = [name for name in folder_names if per_class[name] > 0]
    empty_classes = [name for name in folder_names if per_class[name] == 0]
    train, val, test = _split(layout.split_source, classes, usable, val_fraction, seed)
    counts = _count(classes, train, val, test if "test" in layout.split_folders else None)
    used_sizes = [sizes[p] for p, _ in train + val + test]

    # What computers leave in folders by themselves (.DS_Store, __MACOSX/...) is
    # not a problem with the person's pictures: ignored quietly, only counted.
    ignored = sorted(s.path for s in skipped if s.reason == REASON_SYSTEM)
    skipped = sorted((s for s in skipped if s.reason != REASON_SYSTEM), key=lambda s: s.path)
    errors = folder_errors(root, layout, folder_names, classes, counts, len(skipped))
    warns = layout.warnings + folder_warnings(classes, counts, used_sizes, empty_classes, len(skipped))
    report = ScanReport(
        root=root,
        classes=classes,
        split_source=layout.split_source,
        split_folders=layout.split_folders,
        split_in_each_class=bool(layout.inside_classes),
        val_fraction=val_fraction,
        seed=seed,
        train=train,
        val=val,
        counts=counts,
        image_sizes=size_summary(used_sizes),
        skipped=skipped,
        ignored=ignored,
        empty_classes=empty_classes,
        warnings=warns,
        errors=errors,
        test=test,
    )
    return report, kept, why_not_kept


def check_data_folder(root: str) -> None:
    """Raise DataFolderError, in words, when `root` is not a folder this
    process can read (before a scan, or before a run folder is made for it)."""
    root = os.path.abspath(pasted_path(root))
    if not os.path.exists(root):
        raise DataFolderError(f"The folder {root} does not exist.")
    if not os.path.isdir(root):
        raise DataFolderError(f"{root} is a file, not a folder. Choose the folder that holds the class folders.")
    try:
        os.listdir(root)
    except OSError as exc:
        raise DataFolderError(f"The folder {root} cannot be read ({exc.strerror or exc}).") from exc


def _find_candidates(root: str, layout: Layout, skipped: list[SkippedFile]) -> dict[tuple[str, str], list[str]]:
    """The files worth decoding per (split, class folder name). Counts the
    loose images of the class roots into layout.loose."""
    stop_reals = {os.path.realpath(root)} | {os.path.realpath(p) for p in layout.class_roots.values()}
    candidates: dict[tuple[str, str], list[str]] = {}
    for name, splits in layout.inside_classes.items():  # class first: root/ants/train...
        for split, sub in splits.items():
            found = _collect_candidates(os.path.join(root, name, sub), stop_reals, skipped)
            if found is not None:
                candidates[(split, name)] = found
    for split, folder in layout.class_roots.items():
        if folder == root:
            class_names, files = layout.top_dirs, layout.top_files  # already listed
        else:
            try:
                class_names, files = list_dir(folder, skipped)
            except OSError as exc:
                raise DataFolderError(f"The folder {folder} cannot be read ({exc.strerror or exc}).") from exc
        layout.loose += report_loose_images(folder, files, skipped)
        for name in class_names:
            found = _collect_candidates(os.path.join(folder, name), stop_reals, skipped)
            if found is not None:
                candidates[(split, name)] = found
    return candidates


# --------------------------------------------------------------------------
# Listing folders and collecting the files worth decoding


def is_link_loop(real: str, current_real: str, visited: set[str]) -> bool:
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
    if any(is_link_loop(class_real, r, set()) for r in stop_reals):
        skipped.append(SkippedFile(class_dir, _REASON_LINK))
        return None
    visited = {class_real}
    candidates = []
    seen: dict[tuple[int, int], str] = {}  # (device, inode) -> the path it was first found at

    def on_error(exc: OSError):
        skipped.append(SkippedFile(os.path.abspath(exc.filename or class_dir), "folder could not be read"))

    for dirpath, dirnames, filenames in os.walk(class_dir, onerror=on_error, followlinks=True):
        current_real = os.path.realpath(dirpath)
        keep = []
        for name in sorted(dirnames):
            sub = os.path.join(dirpath, name)
            if is_hidden_or_system(name):
                skipped.append(SkippedFile(sub, REASON_SYSTEM))  # listed once, not entered
                continue
            real = os.path.realpath(sub)
            if is_link_loop(real, current_real, visited) or real in stop_reals:
                skipped.append(SkippedFile(sub, _REASON_LINK))
                continue
            visited.add(real)
            keep.append(name)
        dirnames[:] = keep  # os.walk only descends into what is left here

        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            reason = _why_not_a_candidate(path, name, seen, class_dir)
            if reason:
                skipped.append(SkippedFile(path, reason))
            else:
                candidates.append(path)
    return candidates


def _why_not_a_candidate(path: str, name: str, seen: dict[tuple[int, int], str], class_dir: str) -> str | None:
    """Why a file under a class folder is not worth decoding, or None when
    it is. Looks at its name and its stat only, never at its bytes. seen:
    the class's files so far by (device, inode), so one file reached twice
    (a link to it beside it, a linked folder, a hard link) counts once."""
    if is_hidden_or_system(name):
        return REASON_SYSTEM
    try:
        st = os.stat(path)  # follows symlinks
    except FileNotFoundError:
        return _REASON_LINK if os.path.islink(path) else "file disappeared while the folder was being checked"
    except OSError:  # ELOOP for a link to itself, permissions...
        return _REASON_LINK if os.path.islink(path) else "file could not be read"
    if os.path.splitext(name)[1].lower() in HEIC_EXTENSIONS:
        return HEIC_HINT
    if os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
        return _REASON_NOT_IMAGE_TYPE
    if not stat.S_ISREG(st.st_mode):
        # A pipe or device named .jpg would block a read forever.
        return "not a regular file"
    if st.st_size == 0:
        return REASON_EMPTY
    first = seen.setdefault((st.st_dev, st.st_ino), path) if st.st_ino else path  # 0: no inodes here (FAT)
    if first != path:
        return f"the same file as {os.path.relpath(first, class_dir)} (through a link), counted once"
    return None


# --------------------------------------------------------------------------
# Decoding every candidate


def _decode_candidates(
    candidates: dict[tuple[str, str], list[str]],
    skipped: list[SkippedFile],
    keep_side: int | None,
    budget: int | None,
    interpolation: str,
    on_file=None,
    checked: CheckedPictures | None = None,
    decode: bool = True,
):
    """Decode every candidate once (or, with `checked`, none when all are
    unchanged since their kept verdicts; with decode=False, raise
    _NeedsDecoding where some would be). Returns (usable paths per key,
    sorted; {path: size}; kept pixels or None; why they were not kept). The
    pixels are kept only when their estimated size fits the budget."""
    all_paths = [p for paths in candidates.values() for p in paths]
    verified = checked.fresh(all_paths) if checked is not None else None
    if verified is not None:
        keep_side, kept, why = None, None, CHECKED_BEFORE
    elif not decode:
        raise _NeedsDecoding
    why_not_kept = None
    if keep_side:
        budget = decoded_cache_budget() if budget is None else int(budget)
        need = estimate_decoded_bytes(all_paths, keep_side)
        if need > budget:
            keep_side, why_not_kept = None, too_big_to_keep(need, budget)
    if verified is None:
        verified, kept, why = check_all(all_paths, keep_side, budget or 0, interpolation, on_file)
        if checked is not None:
            checked.keep(verified)
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
    return usable, sizes, kept, why_not_kept or why


# --------------------------------------------------------------------------
# The split and the counts (the advice about them: core.scan_advice)


def _split(
    split_source: str, classes: list[str], usable: dict[tuple[str, str], list[str]], val_fraction: float, seed: int
) -> tuple[list[tuple[str, int]], list[tuple[str, int]], list[tuple[str, int]]]:
    """(train, val, test) samples: from the split folders, or a seeded random
    split of each class (no test pictures then)."""
    label = {name: i for i, name in enumerate(classes)}
    if split_source == "folders":
        return tuple(
            [(p, label[name]) for name in classes for p in usable.get((split, name), [])]
            for split in ("train", "val", "test")
        )
    train: list[tuple[str, int]] = []
    val: list[tuple[str, int]] = []
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
    return train, val, []


def _split_counts(n: int, val_fraction: float) -> int:
    """How many of a class's n images go to validation."""
    n_val = math.floor(n * val_fraction + 0.5)
    if n >= 2:
        # Every class needs one image to check and one to train on.
        n_val = min(max(n_val, 1), n - 1)
    else:
        n_val = 0
    return n_val


def _count(
    classes: list[str],
    train: list[tuple[str, int]],
    val: list[tuple[str, int]],
    test: list[tuple[str, int]] | None = None,
) -> dict[str, dict[str, int]]:
    """Pictures per class and split ("test" only when there is a test/ folder)."""
    splits = {"train": train, "val": val, **({"test": test} if test is not None else {})}
    counts = {name: {split: 0 for split in splits} for name in classes}
    for split, samples in splits.items():
        for _, lab in samples:
            counts[classes[lab]][split] += 1
    return counts
