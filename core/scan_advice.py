"""What a scan says about a folder, in words for the person who chose it:
the reasons training is impossible (`folder_errors`) and what they should
know although training works (`folder_warnings`). core.scan finds the
facts; this module words them.
"""

from __future__ import annotations

import os

from .counts import first_few, how_many

# Thresholds for warnings (plain advice, not errors).
_FEW_TRAIN = 10
_FEW_VAL = 3
_IMBALANCE_RATIO = 5
_TINY_SIDE = 32

ONE_CLASS = "Only one class"  # how the one-class error starts (the Data page tells it apart)
# Split folders' names, in order of preference for the validation split (core.scan; any case).
VAL_NAMES = ("val", "valid", "validation", "test")


def folder_errors(
    root: str,
    layout,  # core.scan's _Layout: where the class folders are, and the loose pictures
    folder_names: list[str],
    classes: list[str],
    counts: dict[str, dict[str, int]],
    n_skipped: int,
) -> list[str]:
    """The reasons training is impossible."""
    errors: list[str] = []
    if not classes:
        if not folder_names:
            msg = (
                f"No class folders were found in {root}. Put each class's pictures in its own "
                f"subfolder, for example {os.path.join(root, 'cats')} and {os.path.join(root, 'dogs')}."
            )
            if layout.loose:
                msg += f" {_loose_hint(root, layout.loose)}"
        else:
            msg = f"No usable pictures were found in {root}"
            msg += f" ({n_skipped} files were skipped; see the list)." if n_skipped else "."
        errors.append(msg)
    elif len(classes) == 1:
        one = f"{ONE_CLASS} ({classes[0]}) was found: training needs at least two classes, each in its own subfolder."
        hint = _loose_hint(root, layout.loose) if layout.loose else _inner_classes_hint(root, layout, classes[0])
        errors.append(f"{one} {hint}".strip())
    for name in classes:
        c = counts[name]
        if layout.split_source == "folders":
            train, val = _split_folder(layout, name, "train"), _split_folder(layout, name, "val")
            if c["train"] == 0:
                errors.append(
                    f"Class '{name}' has pictures in {val} but none in {train}: every class needs pictures to learn from."
                )
            if c["val"] == 0:
                errors.append(
                    f"Class '{name}' has no pictures in {val}: every class needs "
                    f"at least one picture to check the model with."
                )
        elif c["val"] == 0:
            errors.append(
                f"Class '{name}' has only 1 usable picture: each class needs at least 2 "
                f"(one to learn from, one to check the model with)."
            )
    return errors


def _split_folder(layout, name: str, split: str) -> str:
    """Where a class's pictures of a split are, as the person sees it: val/, or ants/val/ when class first."""
    if layout.inside_classes:
        return f"{name}/{layout.inside_classes[name][split]}/"
    return f"{layout.split_folders[split]}/"


def own_splits_pooled(with_split: list[str], without: list[str]) -> str:
    """Some class folders hold their own train/ and val/ but not all: their split cannot be kept."""
    has = "holds its own" if len(with_split) == 1 else "hold their own"
    does = "does" if len(without) == 1 else "do"
    return (
        f"{_folders(with_split)} {has} train/ and val/ folders but {_folders(without)} {does} not, so that split "
        "is not used: each class's pictures are pooled and split at random instead. To keep your split, give every "
        "class folder its own train/ and val/ folders."
    )


def picture_sets(root: str, sets: list[str]) -> str:
    """The chosen folder holds whole picture sets (hymenoptera/train/ants, clothes/train/hat), not classes."""
    return (
        f"The folder {root} holds {how_many(len(sets), 'picture set')} ({_folders(sets)}), each with its own "
        f"train/ and val/ folders of classes: choose one of them, for example {os.path.join(root, sets[0])}."
    )


def unused_in_classes(unused: list[str], split_folders: dict[str, str]) -> str:
    """Class first: folders inside class folders beside their train/ and val/ (ants/old), which are not used."""
    are = "The folder {} was" if len(unused) == 1 else "The folders {} were"
    return (
        f"{are.format(_folders(unused))} not used: each class's pictures come from its "
        f"{split_folders['train']}/ and {split_folders['val']}/ folders."
    )


def _folders(names: list[str], shown: int = 4) -> str:
    """'ants/', 'ants/ and bees/', 'ants/, bees/ and 3 more'."""
    folders = [f"{n}/" for n in names[:shown]]
    if len(names) > shown:
        return f"{', '.join(folders)} and {len(names) - shown} more"
    return folders[0] if len(folders) == 1 else f"{', '.join(folders[:-1])} and {folders[-1]}"


def _inner_classes_hint(root: str, layout, name: str) -> str:
    """The one class's folder holds folders of its own: most often the folder
    above the classes was chosen (photos/ holding 2024/ants and 2024/bees)."""
    if layout.inside_classes:  # its folders are its own split (another class had no usable picture)
        return ""
    where = os.path.join(root, layout.split_folders["train"]) if layout.split_source == "folders" else root
    try:
        inner = sorted(e.name for e in os.scandir(os.path.join(where, name)) if e.is_dir() and e.name[0] != ".")
    except OSError:
        return ""
    splits = [n for n in inner if n.lower() in ("train", *VAL_NAMES)]
    if splits:  # photos/hymenoptera/train/ants: the folder holding train/ was one level down
        folders = [f"{n}/" for n in splits]
        held = f"{', '.join(folders[:-1])} and {folders[-1]}" if len(folders) > 1 else folders[0]
        if not _has_folders(os.path.join(where, name, splits[0])):  # ants/train/*.jpg: one class, split its own way
            return f"The folder {name} holds {held} of its own: put each other class beside it, with its {held} too."
        return f"The folder {name} holds {held}: if your class folders are in there, choose {os.path.join(where, name)} instead."
    if len(inner) < 2:
        return ""
    return (
        f"The folder {name} holds folders of its own ({first_few(inner, 4)}): if those are your classes, choose "
        f"{os.path.join(where, name)} instead."
    )


def _has_folders(path: str) -> bool:
    try:
        return any(e.is_dir() and e.name[0] != "." for e in os.scandir(path))
    except OSError:
        return False


def _loose_hint(root: str, loose: int) -> str:
    """Pictures straight in the chosen folder: most often one class's folder was chosen, not its parent."""
    verb = "sits" if loose == 1 else "sit"
    return (
        f"{how_many(loose, 'picture')} {verb} directly in {os.path.basename(root)}, outside any class folder: if it is "
        f"one class's folder, choose the folder above it, {os.path.dirname(root)}, which holds a folder per class."
    )


def _listed(items: list[str], shown: int = 8) -> str:
    """'ants' (1), 'bees' (2) and 3 more."""
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more


def _which_classes(some: dict[str, int], classes: list[str]) -> str:
    """The start of a sentence about several classes: all of them, or how many."""
    return "Every class has" if len(some) == len(classes) else f"{len(some)} classes have"


def _counted(counts: dict[str, int]) -> str:
    return _listed([f"'{name}' ({n})" for name, n in counts.items()])


def folder_warnings(
    classes: list[str],
    counts: dict[str, dict[str, int]],
    used_sizes: list[tuple[int, int]],
    empty_classes: list[str],
    n_skipped: int,
) -> list[str]:
    """What the user should know although training works."""
    warns: list[str] = []
    few_train = {name: counts[name]["train"] for name in classes if 0 < counts[name]["train"] < _FEW_TRAIN}
    if len(few_train) == 1:
        [(name, n)] = few_train.items()
        warns.append(
            f"Class '{name}' has only {how_many(n, 'picture')} to learn from; {_FEW_TRAIN} or more per class "
            "(ideally many more) gives much better results."
        )
    elif few_train:  # one line for all of them: a folder of many small classes is not a wall of warnings
        warns.append(
            f"{_which_classes(few_train, classes)} fewer than {_FEW_TRAIN} pictures to learn from: "
            f"{_counted(few_train)}; {_FEW_TRAIN} or more per class (ideally many more) gives much better results."
        )
    few_val = {name: counts[name]["val"] for name in classes if 0 < counts[name]["val"] < _FEW_VAL}
    if len(few_val) == 1:
        [(name, n)] = few_val.items()
        warns.append(
            f"Class '{name}' has only {how_many(n, 'picture')} to check with, so its measured accuracy will be very noisy."
        )
    elif few_val:
        warns.append(
            f"{_which_classes(few_val, classes)} very few pictures to check with: {_counted(few_val)}, so their "
            "measured accuracy will be very noisy."
        )
    train_counts = {name: counts[name]["train"] for name in classes if counts[name]["train"] > 0}
    if len(train_counts) >= 2:
        most = max(train_counts, key=train_counts.get)
        least = min(train_counts, key=train_counts.get)
        if train_counts[most] > _IMBALANCE_RATIO * train_counts[least]:
            warns.append(
                f"The classes are very unbalanced: '{most}' has {train_counts[most]} pictures to learn from "
                f"but '{least}' only {train_counts[least]}. The model may learn to favour '{most}'."
            )
    tiny = sum(1 for w, h in used_sizes if min(w, h) < _TINY_SIDE)
    if tiny:
        warns.append(
            f"{tiny} picture{'s are' if tiny > 1 else ' is'} tiny (a side under {_TINY_SIDE} pixels); "
            f"{'they' if tiny > 1 else 'it'} will be blown up and look blurry to the model."
        )
    if len(empty_classes) == 1:
        warns.append(f"The folder '{empty_classes[0]}' has no usable pictures, so it is not used as a class.")
    elif empty_classes:
        listed = _listed([f"'{name}'" for name in empty_classes])
        warns.append(f"The folders {listed} have no usable pictures, so they are not used as classes.")
    if n_skipped:
        warns.append(
            f"{n_skipped} file{'s were' if n_skipped > 1 else ' was'} skipped (see the list of skipped files and why)."
        )
    return warns
