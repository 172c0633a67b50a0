"""Where a picture folder's classes are and where its split comes from
(core.scan's first step), and which names in it are never data.

Three layouts keep the person's own split: train/ + val/ (or valid/,
validation/, test/) each holding the class folders; class folders each
holding their own train/ and val/ ("class first", as some exports and
courses arrange them); and, with a random split, a train/ folder alone or
the class folders directly in the chosen folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .choices import FOLDER as CHOICES_FOLDER
from .curation import JOURNAL, SET_ASIDE_DIR
from .errors import UserError
from .images import IMAGE_EXTENSIONS
from .scan_advice import VAL_NAMES, own_splits_pooled, picture_sets, unused_in_classes
from .scan_report import SkippedFile

# Names that operating systems, file managers and archivers drop into folders
# by themselves (Icon\r: a Mac folder's custom icon; the last two: a Windows
# USB stick's). Never data: the scan ignores them quietly (REASON_SYSTEM,
# moved to ScanReport.ignored), as it does every hidden (dot) name: .DS_Store,
# a Mac's ._photo.jpg, .directory...
_SYSTEM_FILES = frozenset({"thumbs.db", "ehthumbs.db", "desktop.ini", "icon\r"})
_SYSTEM_DIRS = frozenset({"__macosx", "$recycle.bin", "system volume information"})
# The app's own folders inside a picture folder (set-aside pictures, the change
# journal, saved choices): its doing, not the user's, so not mentioned at all.
_APP_DIRS = frozenset({SET_ASIDE_DIR, JOURNAL.parts[0], CHOICES_FOLDER})

REASON_SYSTEM = "hidden or system file"
LOOSE_IMAGE = "image outside any class folder"


class DataFolderError(UserError):
    """The folder cannot be scanned at all. The message is for the user."""


def is_hidden_or_system(name: str) -> bool:
    """Names that are never data: dot-files and folders, Thumbs.db, desktop.ini, __MACOSX..."""
    return name.startswith(".") or name.lower() in _SYSTEM_FILES or name.lower() in _SYSTEM_DIRS


def list_dir(path: str, skipped: list[SkippedFile]) -> tuple[list[str], list[str]]:
    """Sorted (subfolder names, file names) of a folder, leaving out hidden and
    system entries. Hidden folders are recorded (REASON_SYSTEM); hidden files at
    this level (root, split or class-first folder) are not even candidates, so
    they are dropped without a record."""
    dirs, files = [], []
    with os.scandir(path) as entries:
        for entry in entries:
            try:
                is_dir = entry.is_dir()  # follows symlinks
            except OSError:  # e.g. a symlink loop
                is_dir = False
            if is_dir:
                if entry.name in _APP_DIRS:
                    continue
                if is_hidden_or_system(entry.name):
                    skipped.append(SkippedFile(os.path.join(path, entry.name), REASON_SYSTEM))
                else:
                    dirs.append(entry.name)
            elif not is_hidden_or_system(entry.name):
                files.append(entry.name)
    return sorted(dirs), sorted(files)


def report_loose_images(folder: str, files: list[str], skipped: list[SkippedFile], reason: str = LOOSE_IMAGE) -> int:
    """Images sitting beside the class (or split) folders belong to no class or
    split: report them. Other loose files (README, LICENSE) are normal and ignored."""
    n = 0
    for name in files:
        if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
            skipped.append(SkippedFile(os.path.join(folder, name), reason))
            n += 1
    return n


def split_names(dirs: list[str]) -> dict[str, str]:
    """{"train": name, "val": name} (and "test" when there is a test/ beside a
    val/) among a folder's subfolders, any case; {} when there is no pair."""
    by_lower = {name.lower(): name for name in dirs}
    train_name = by_lower.get("train")
    val_name = next((by_lower[n] for n in VAL_NAMES if n in by_lower), None)
    if not (train_name and val_name):
        return {}
    names = {"train": train_name, "val": val_name}
    test_name = by_lower.get("test")
    if test_name and test_name != val_name:
        names["test"] = test_name  # held out: scored once, at the end of a run
    return names


@dataclass
class Layout:
    """How a folder is laid out: where its class folders are and where the
    split comes from."""

    split_source: str  # "folders" or "random"
    split_folders: dict[str, str]  # {"train": name, "val": name} when split_source is "folders"
    class_roots: dict[str, str]  # split ("train", "val" or "all") -> folder whose subfolders are the classes
    top_dirs: list[str]  # the root's own listing, which is not read twice
    top_files: list[str]
    loose: int  # images outside any class folder, found so far
    warnings: list[str]
    # Class first (root/ants/train, root/ants/val...): class folder -> {split: its subfolder}; class_roots is then {}.
    inside_classes: dict[str, dict[str, str]] = field(default_factory=dict)


def find_layout(root: str, val_fraction: float, skipped: list[SkippedFile]) -> Layout:
    """train/ + val/ (or valid/, validation/, test/) split folders, a train/
    folder alone, class folders each holding train/ + val/, or the class
    folders directly in root."""
    try:
        top_dirs, top_files = list_dir(root, skipped)
    except OSError as exc:
        raise DataFolderError(f"The folder {root} cannot be read ({exc.strerror or exc}).") from exc
    folders = split_names(top_dirs)
    if folders:
        loose = report_loose_images(root, top_files, skipped)
        warns = [
            f"The folder {name}/ was not used: the split comes from {folders['train']}/ and {folders['val']}/."
            for name in top_dirs
            if name not in folders.values()
        ]
        class_roots = {split: os.path.join(root, name) for split, name in folders.items()}
        return Layout("folders", folders, class_roots, top_dirs, top_files, loose, warns)
    train_name = next((name for name in top_dirs if name.lower() == "train"), None)
    if train_name and top_dirs == [train_name]:
        # Only train/: its subfolders are the classes; validation images
        # are set aside at random.
        loose = report_loose_images(root, top_files, skipped)
        warns = [
            f"There is a {train_name}/ folder but no val/, valid/, validation/ or test/ "
            f"folder beside it, so {val_fraction:.0%} of each class is set aside at random for validation."
        ]
        return Layout("random", {}, {"all": os.path.join(root, train_name)}, top_dirs, top_files, loose, warns)
    inside = _splits_inside(root, top_dirs)
    sets = [name for name, own in inside.items() if own.holds_class_folders]
    if len(sets) >= 2 and len(sets) == len(top_dirs):
        raise DataFolderError(picture_sets(root, sets))
    inside = {name: own for name, own in inside.items() if name not in sets}
    if len(top_dirs) >= 2 and len(inside) == len(top_dirs):
        return _class_first(root, top_dirs, top_files, inside, skipped)
    warns = []
    if inside and len(top_dirs) >= 2:  # one class folder alone: core.scan_advice's one-class error says more
        warns.append(own_splits_pooled(list(inside), [n for n in top_dirs if n not in inside]))
    return Layout("random", {}, {"all": root}, top_dirs, top_files, 0, warns)


@dataclass
class _OwnSplit:
    """A class folder that holds train/ and val/ folders of its own, as listed."""

    names: dict[str, str]  # split -> subfolder name
    dirs: list[str]
    files: list[str]
    hidden: list[SkippedFile]  # its hidden folders, recorded only if the layout is class first
    # Its train/ holds folders and no file: a whole picture set (hymenoptera/train/ants), not a class.
    holds_class_folders: bool = False


def _splits_inside(root: str, class_names: list[str]) -> dict[str, _OwnSplit]:
    """The class folders that hold a train/ and a val/ (valid/...) folder of their own."""
    found = {}
    for name in class_names:
        hidden: list[SkippedFile] = []
        try:
            dirs, files = list_dir(os.path.join(root, name), hidden)
        except OSError:  # unreadable: core.scan says so when it walks the folder
            continue
        names = split_names(dirs)
        if names:
            try:
                inner_dirs, inner_files = list_dir(os.path.join(root, name, names["train"]), [])
            except OSError:
                inner_dirs, inner_files = [], []
            found[name] = _OwnSplit(names, dirs, files, hidden, bool(inner_dirs) and not inner_files)
    return found


def _class_first(
    root: str, top_dirs: list[str], top_files: list[str], inside: dict[str, _OwnSplit], skipped: list[SkippedFile]
) -> Layout:
    """Every class folder holds its own train/ and val/: that split is kept."""
    split_folders: dict[str, str] = {}
    unused = []
    for name, own in inside.items():
        for split, sub in own.names.items():
            split_folders.setdefault(split, sub)  # as the first class names them
        skipped.extend(own.hidden)
        splits = [f"{name}/{sub}/" for sub in own.names.values()]
        reason = f"image outside {', '.join(splits[:-1])} and {splits[-1]}"
        report_loose_images(os.path.join(root, name), own.files, skipped, reason)
        unused += [f"{name}/{d}" for d in own.dirs if d not in own.names.values()]
    warns = [unused_in_classes(unused, split_folders)] if unused else []
    inside_classes = {name: own.names for name, own in inside.items()}
    return Layout("folders", split_folders, {}, top_dirs, top_files, 0, warns, inside_classes)
