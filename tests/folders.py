"""Where the tests' photos are, and small copies of photo folders.

Two sources. `assets/examples/clothes` ships in the repository (56 small CC0
photos of 4 classes, see its LICENSE.md; the app offers them as an example set
that needs no internet), so tests built on it run on any clone.
`../shared` (real datasets and offline MobileNetV2 weights) sits beside the
checkout on development machines and in CI only; the heavier tests and the
benchmark use it. TRANSFER_STUDIO_SHARED points elsewhere (a missing folder
shows what a fresh clone runs).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PHOTOS = REPO_ROOT / "assets" / "examples" / "clothes"  # the example set that ships with the app
PHOTO_CLASSES = ("hat", "pants", "shoes", "t-shirt")
# The one pretrained backbone whose weights ship inside a Python package (a dependency).
PACKAGED_BACKBONE = "efficientnet_lite0"

SHARED = Path(os.environ.get("TRANSFER_STUDIO_SHARED", REPO_ROOT.parent / "shared")).resolve()
SHARED_TORCH_HOME = SHARED / "torch-home"
HYMENOPTERA = SHARED / "datasets" / "hymenoptera"
CLOTHING10 = SHARED / "datasets" / "clothing10"


def small_copy(src: Path, dst: Path, train: int, val: int) -> Path:
    """The first `train`/`val` photos of each class of a train/ + val/ folder."""
    for split, count in (("train", train), ("val", val)):
        for class_dir in sorted(p for p in (src / split).iterdir() if p.is_dir()):
            files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() == ".jpg")[:count]
            out = dst / split / class_dir.name
            out.mkdir(parents=True)
            for f in files:
                shutil.copy(f, out / f.name)
    return dst
