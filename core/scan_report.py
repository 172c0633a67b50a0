"""What a scan of an image folder found (core.scan makes one): the classes,
the train/validation samples, the files left out and why, and the errors
and warnings for the user. Stored as scan.json beside a run and printed by
the command line, so it has a JSON form and a plain-text form.
"""

from __future__ import annotations

import os
import re
import statistics
from dataclasses import dataclass, field

from .counts import first_few, how_many

_NUMBER = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple:
    """Sort key that reads names as people do: "2" before "10", "class 9"
    before "class 10", and case ignored ("apple", "Banana", "cherry"). Ties
    (names that differ only in case) fall back to the name itself, so the
    order never depends on how the folder listed them."""
    parts = _NUMBER.split(name.casefold())
    return tuple((0, int(p), p) if p.isdigit() else (1, 0, p) for p in parts), name


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
    # Pictures of a test/ folder beside train/ and val/: kept out of training
    # and of choosing the best epoch, and scored once at the end of a run.
    test: list[tuple[str, int]] = field(default_factory=list)
    # Files and folders computers make by themselves (.DS_Store, a Mac's ._photo.jpg,
    # __MACOSX/, Thumbs.db): never data, never used, and not a problem to warn about.
    ignored: list[str] = field(default_factory=list)
    # The split folders are inside each class folder (ants/train/, ants/val/...), not around them.
    split_in_each_class: bool = False

    @property
    def can_train(self) -> bool:
        return not self.errors

    @property
    def num_images(self) -> int:
        return len(self.train) + len(self.val) + len(self.test)

    def to_dict(self) -> dict:
        """JSON-safe dict. can_train and num_images are included for readers of
        scan.json; from_dict ignores them (they are derived)."""
        return {
            "root": self.root,
            "classes": list(self.classes),
            "split_source": self.split_source,
            "split_folders": dict(self.split_folders),
            "split_in_each_class": self.split_in_each_class,
            "val_fraction": self.val_fraction,
            "seed": self.seed,
            "train": [[path, label] for path, label in self.train],
            "val": [[path, label] for path, label in self.val],
            "test": [[path, label] for path, label in self.test],
            "counts": {name: dict(c) for name, c in self.counts.items()},
            "image_sizes": {
                key: (list(value) if isinstance(value, (list, tuple)) else value)
                for key, value in self.image_sizes.items()
            },
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
            "ignored": list(self.ignored),
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
            split_in_each_class=bool(d.get("split_in_each_class", False)),
            val_fraction=float(d["val_fraction"]),
            seed=int(d["seed"]),
            train=[(str(path), int(label)) for path, label in d["train"]],
            val=[(str(path), int(label)) for path, label in d["val"]],
            test=[(str(path), int(label)) for path, label in d.get("test", [])],
            counts={name: {k: int(v) for k, v in c.items()} for name, c in d["counts"].items()},
            image_sizes={
                key: (list(value) if isinstance(value, (list, tuple)) else value)
                for key, value in d.get("image_sizes", {}).items()
            },
            skipped=[SkippedFile(s["path"], s["reason"]) for s in d.get("skipped", [])],
            ignored=list(d.get("ignored", [])),
            empty_classes=list(d.get("empty_classes", [])),
            warnings=list(d.get("warnings", [])),
            errors=list(d.get("errors", [])),
        )

    def ignored_note(self) -> str | None:
        """One quiet sentence about the system files the scan ignored, or None when there were none."""
        if not self.ignored:
            return None
        names = list(
            dict.fromkeys(os.path.basename(p).strip() for p in self.ignored)
        )  # once each; Icon\r shown as Icon
        files = how_many(len(self.ignored), "hidden or system file")
        return f"Ignored {files} that computers make by themselves ({first_few(names, 3)}): they are not pictures."

    def format_text(self) -> str:
        lines = [f"Image folder: {self.root}"]
        if self.split_source == "folders":
            where = " inside each class folder" if self.split_in_each_class else ""
            lines.append(
                f"Split: from the folders {self.split_folders.get('train')}/ (train) "
                f"and {self.split_folders.get('val')}/ (validation){where}"
            )
        else:
            lines.append(
                f"Split: random, {self.val_fraction:.0%} of each class set aside for validation (seed {self.seed})"
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
        if self.test:
            lines.append(
                f"Test: {len(self.test)} images kept apart, to score the best model once after training "
                "(never used to learn or to choose the best epoch)"
            )

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
        if self.ignored:
            lines.append(self.ignored_note())
        if self.empty_classes:
            lines.append("Class folders with no usable image: " + ", ".join(self.empty_classes))
        if self.warnings:
            lines.append("Warnings:")
            lines.extend(f"  - {w}" for w in self.warnings)
        if self.errors:
            lines.append("Errors (training is not possible until these are fixed):")
            lines.extend(f"  - {e}" for e in self.errors)
        lines.append("Ready to train." if self.can_train else "Cannot train on this folder yet.")
        return "\n".join(lines)


def size_summary(sizes: list[tuple[int, int]]) -> dict:
    """The report's image_sizes: count, smallest, largest and median (width, height)."""
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
