"""What a scan says about a folder, in words for the person who chose it:
the reasons training is impossible (`folder_errors`) and what they should
know although training works (`folder_warnings`). core.scan finds the
facts; this module words them.
"""

from __future__ import annotations

import os

from .counts import how_many

# Thresholds for warnings (plain advice, not errors).
_FEW_TRAIN = 10
_FEW_VAL = 3
_IMBALANCE_RATIO = 5
_TINY_SIDE = 32


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
                f"No class folders were found in {root}. Put each class's images in its own "
                f"subfolder, for example {os.path.join(root, 'cats')} and {os.path.join(root, 'dogs')}."
            )
            if layout.loose:
                msg += f" {_loose_hint(root, layout.loose)}"
        else:
            msg = f"No usable images were found in {root}"
            msg += f" ({n_skipped} files were skipped; see the list)." if n_skipped else "."
        errors.append(msg)
    elif len(classes) == 1:
        one = (
            f"Only one class ({classes[0]}) was found: training needs at least two classes, each in its own subfolder."
        )
        errors.append(one + (f" {_loose_hint(root, layout.loose)}" if layout.loose else ""))
    split_folders = layout.split_folders
    for name in classes:
        c = counts[name]
        if layout.split_source == "folders":
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
    return errors


def _loose_hint(root: str, loose: int) -> str:
    """Pictures straight in the chosen folder: most often one class's folder was chosen, not its parent."""
    verb = "sits" if loose == 1 else "sit"
    return (
        f"{how_many(loose, 'picture')} {verb} directly in {os.path.basename(root)}, outside any class folder: if it is "
        f"one class's folder, choose the folder above it, {os.path.dirname(root)}, which holds a folder per class."
    )


def folder_warnings(
    classes: list[str],
    counts: dict[str, dict[str, int]],
    used_sizes: list[tuple[int, int]],
    empty_classes: list[str],
    n_skipped: int,
) -> list[str]:
    """What the user should know although training works."""
    warns: list[str] = []
    for name in classes:
        c = counts[name]
        if 0 < c["train"] < _FEW_TRAIN:
            warns.append(
                f"Class '{name}' has only {how_many(c['train'], 'training image')}; 10 or more per class "
                f"(ideally many more) gives much better results."
            )
        if 0 < c["val"] < _FEW_VAL:
            warns.append(
                f"Class '{name}' has only {how_many(c['val'], 'validation image')}, "
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
    if n_skipped:
        warns.append(
            f"{n_skipped} file{'s were' if n_skipped > 1 else ' was'} skipped (see the list of skipped files and why)."
        )
    return warns
