"""Check a picture folder before training: duplicates, leaks between splits,
labels that look wrong, and pictures of poor quality.

- Duplicates: exact copies by content hash; near-copies (resized, re-encoded,
  lightly cropped) where either the perceptual hash (`imagehash`'s pHash, BSD
  licence) is within a few bits, or the pretrained network sees nearly the
  same picture (cosine similarity of its pooled features). The hash catches
  re-encodings the network might not call identical; the features catch crops
  that move every pixel and defeat the hash.
- Conflicts: a group of copies with members in two classes: the model is
  told two things about one picture. Reported on their own, not as leaks,
  and not as suspect labels (a picture's copy in another class would make
  the label check doubt the right one too).
- Leaks: a group of copies with members in two splits (train and val).
- Suspect labels: the confident-learning idea. A linear probe is trained on
  stored features in k folds, so every picture gets class probabilities from
  a model that never saw it. A picture that this model gives to another
  class, by a clear margin, is suspect; the least likely given labels come
  first. (Confident learning's stricter per-class thresholds missed planted
  label flips on small folders, where a probe is rarely very sure.)
- Quality: too dark, too bright, blurry, tiny, extreme aspect ratio.

All of it comes from one pass of the backbone over the pictures, stored in
the same feature cache as training, so a second check takes seconds.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .images import open_rgb, unreadable_reason
from .scan import scan_folder

# Near-copy thresholds, measured on hymenoptera and clothing10: a re-encoded or
# resized copy lands at pHash distance <= 4 and cosine >= 0.98, a 10 % crop at
# cosine 0.93-0.97, while different photos of one class stay below 0.90.
PHASH_MAX_DISTANCE = 6
_PHASH_BITS = 64  # imagehash.phash's 8x8
_PHASH_MIN_BITS = 8  # of 64: fewer set (or unset) bits, and the picture is blank (see _copy_pairs)
NEAR_COPY_COSINE = 0.93
# Quality thresholds (pixel values 0-255 on a 256-pixel thumbnail).
TOO_DARK = 40
TOO_BRIGHT = 225
BLURRY = 60.0  # variance of the Laplacian; sharp photos score in the hundreds
TINY_SIDE = 64
# A suspect label: another class is preferred by at least this much probability.
SUSPECT_MARGIN = 0.1
EXTREME_ASPECT = 4.0
_THUMB_SIDE = 256


@dataclass
class InspectReport:
    root: str
    backbone: str
    pictures: int
    duplicates: list[list[str]] = field(default_factory=list)
    leaks: list[list[str]] = field(default_factory=list)
    conflicts: list[list[str]] = field(default_factory=list)  # copies filed in two classes
    suspect_labels: list[dict] = field(default_factory=list)
    quality: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Picture:
    path: str  # absolute
    relative: str
    label: int
    split: str


def inspect_folder(
    root,
    backbone: str | None = None,
    *,
    folds: int = 5,
    seed: int = 0,
    device: str = "auto",
    cache_dir: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> InspectReport:
    """Check every picture of `root` (see the module docstring). `progress`
    is called as (phase, done, total)."""
    from .backbones import default_backbone
    from .features import pooled_features  # torch only when a check runs

    report = scan_folder(root)
    backbone = backbone or default_backbone()
    root_path = Path(report.root)
    pictures = [
        _Picture(p, os.path.relpath(p, root_path), label, split)
        for split, samples in (("train", report.train), ("val", report.val))
        for p, label in samples
    ]
    result = InspectReport(root=str(root_path), backbone=backbone, pictures=len(pictures))
    if not pictures:
        result.notes.append("No pictures to check.")
        return result
    step = progress or (lambda *_: None)
    result.quality = quality_problems(pictures, lambda done: step("Looking at each picture", done, len(pictures)))
    # A picture removed or changed since the scan is listed by the quality check; the rest are checked.
    unreadable = {row["path"] for row in result.quality if row["problem"].startswith(UNREADABLE_NOW)}
    pictures = [p for p in pictures if p.relative not in unreadable]
    features = pooled_features(
        backbone,
        [(p.path, p.label) for p in pictures],
        device=device,
        cache_dir=cache_dir,
        on_batch=lambda done, total: step("Running the network once", done, total),
    )
    groups = copy_groups(pictures, features)
    result.duplicates = [[pictures[i].relative for i in g] for g in groups]
    conflicting = [g for g in groups if len({pictures[i].label for i in g}) > 1]
    result.conflicts = [[pictures[i].relative for i in g] for g in conflicting]
    result.leaks = [
        [pictures[i].relative for i in g]
        for g in groups
        if g not in conflicting and len({pictures[i].split for i in g}) > 1
    ]
    suspects, note = suspect_labels(features, [p.label for p in pictures], folds=folds, seed=seed)
    in_conflict = {i for g in conflicting for i in g}
    suspects = [row for row in suspects if row[0] not in in_conflict]
    result.suspect_labels = [
        {
            "path": pictures[i].relative,
            "given": report.classes[given],
            "suggested": report.classes[suggested],
            "confidence": round(conf, 3),
        }
        for i, given, suggested, conf in suspects
    ]
    if note:
        result.notes.append(note)
    return result


# --- quality ----------------------------------------------------------------------


UNREADABLE_NOW = "could not be read"


def quality_problems(pictures: list[_Picture], on_done: Callable[[int], None] = lambda _n: None) -> list[dict]:
    problems = []
    for n, picture in enumerate(pictures, 1):
        try:
            found = picture_problems(picture.path)
        except Exception as exc:  # noqa: BLE001 - changed or removed since the scan: listed, the check goes on
            found = [f"{UNREADABLE_NOW}: {unreadable_reason(picture.path, exc)}"]
        for problem in found:
            problems.append({"path": picture.relative, "problem": problem})
        on_done(n)
    return problems


def picture_problems(path: str) -> list[str]:
    """What a person would find wrong with one picture, in words."""
    from PIL import Image

    with Image.open(path) as img:
        width, height = img.size
    problems = []
    if min(width, height) < TINY_SIDE:
        problems.append(f"tiny ({width}x{height} pixels)")
    if max(width, height) / max(1, min(width, height)) >= EXTREME_ASPECT:
        problems.append(f"extreme shape ({width}x{height} pixels)")
    grey = np.asarray(open_rgb(path, max_side=_THUMB_SIDE).convert("L"), dtype=np.float32)
    brightness = float(grey.mean())
    if brightness < TOO_DARK:
        problems.append("too dark")
    elif brightness > TOO_BRIGHT:
        problems.append("too bright")
    elif _sharpness(grey) < BLURRY:
        problems.append("blurry")
    return problems


def _sharpness(grey: np.ndarray) -> float:
    """Variance of the Laplacian: low when there are no sharp edges."""
    if min(grey.shape) < 3:
        return 0.0
    lap = grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1] - 4 * grey[1:-1, 1:-1]
    return float(lap.var())


# --- copies -----------------------------------------------------------------------


def copy_groups(pictures: list[_Picture], features) -> list[list[int]]:
    """Groups (lists of indices, in folder order) of pictures that are copies
    or near-copies of each other."""
    n = len(pictures)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in _copy_pairs(pictures, features):
        parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def _copy_pairs(pictures: list[_Picture], features):
    import imagehash
    from PIL import Image

    by_content: dict[str, int] = {}
    hashes = []
    for i, picture in enumerate(pictures):
        try:
            digest = hashlib.sha256(Path(picture.path).read_bytes()).hexdigest()
            with Image.open(picture.path) as img:
                img.draft("RGB", (_THUMB_SIDE, _THUMB_SIDE))
                hashes.append(imagehash.phash(img.convert("RGB")).hash.flatten())
        except Exception:  # noqa: BLE001 - gone or changed since the quality check: a copy of nothing
            hashes.append(np.zeros(_PHASH_BITS, dtype=bool))  # blank: never paired below
            continue
        if digest in by_content:
            yield by_content[digest], i
        by_content.setdefault(digest, i)
    bits = np.array(hashes, dtype=bool)
    distance = (bits[:, None, :] != bits[None, :, :]).sum(-1)
    vectors = features.float().numpy()
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    cosine = vectors @ vectors.T
    # pHash sets the bits above their median, about half of them for any picture with detail; a
    # blank one (a white frame, a black square) sets almost none whatever its colour, and the
    # network sees little in it either: a white and a black frame matched both ways. Blank
    # pictures are copies only byte for byte (above); the quality check speaks for them (dark, bright, blurry).
    set_bits = bits.sum(1)
    blank = (set_bits < _PHASH_MIN_BITS) | (set_bits > bits.shape[1] - _PHASH_MIN_BITS)
    distance[blank, :] = distance[:, blank] = bits.shape[1]
    cosine[blank, :] = cosine[:, blank] = -1.0
    close = (distance <= PHASH_MAX_DISTANCE) | (cosine >= NEAR_COPY_COSINE)
    for i, j in zip(*np.nonzero(np.triu(close, k=1))):
        yield int(i), int(j)


# --- labels -----------------------------------------------------------------------


def suspect_labels(
    features, labels: list[int], *, folds: int = 5, seed: int = 0
) -> tuple[list[tuple[int, int, int, float]], str | None]:
    """(index, given, suggested, confidence) for pictures whose label looks
    wrong, most suspicious first; and a note when the check could not run."""
    probs, note = out_of_sample_probabilities(features, labels, folds=folds, seed=seed)
    if probs is None:
        return [], note
    found = []
    for i, given in enumerate(labels):
        suggested = int(np.argmax(probs[i]))
        if suggested != given and probs[i, suggested] - probs[i, given] >= SUSPECT_MARGIN:
            found.append((i, int(given), suggested, float(probs[i, suggested]), float(probs[i, given])))
    found.sort(key=lambda row: row[4])  # the least likely given label first
    return [row[:4] for row in found], None


def out_of_sample_probabilities(features, labels: list[int], *, folds: int = 5, seed: int = 0):
    """Class probabilities for every picture from logistic regressions that did
    not see it (stratified k-fold); (None, reason) when a class is too small."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(labels)
    counts = np.bincount(y)
    present = counts[counts > 0]
    if len(present) < 2:
        return None, "Label check needs at least two classes."
    k = int(min(folds, present.min()))
    if k < 2:
        return None, "Label check needs at least two pictures in every class."
    x = features.float().numpy()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, C=0.5))
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    probs = cross_val_predict(model, x, y, cv=splitter, method="predict_proba")
    full = np.zeros((len(y), int(y.max()) + 1))
    full[:, np.unique(y)] = probs
    return full, None
