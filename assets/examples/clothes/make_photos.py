"""Regenerate assets/examples/clothes from the CC0 clothing set in ../shared (see LICENSE.md).

    python assets/examples/clothes/make_photos.py [--source ../shared/datasets/clothing10]

Deterministic: the first photos of each chosen class by file name, resized so the
shorter side is SHORT_SIDE pixels and saved as baseline JPEG at QUALITY with no
metadata, so the same Pillow writes the same bytes. Four classes that look
unlike one another keep a two-epoch linear probe on 40 pictures well above chance;
ten to learn from per class is the fewest the Data page takes without a warning.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from PIL import Image

CLASSES = ("hat", "pants", "shoes", "t-shirt")
PER_SPLIT = {"train": 10, "val": 4}
SHORT_SIDE = 112
QUALITY = 85

HERE = Path(__file__).resolve().parent
DEFAULT_SOURCE = HERE.parents[3] / "shared" / "datasets" / "clothing10"


def make(source: Path, out: Path = HERE) -> list[Path]:
    """Write out/<split>/<class>/*.jpg from source; returns the files written."""
    written = []
    for split, count in PER_SPLIT.items():
        if (out / split).exists():
            shutil.rmtree(out / split)
        for name in CLASSES:
            files = sorted(p for p in (source / split / name).iterdir() if p.suffix.lower() == ".jpg")[:count]
            (out / split / name).mkdir(parents=True)
            for src in files:
                dst = out / split / name / src.name
                with Image.open(src) as im:
                    im = im.convert("RGB")
                    scale = SHORT_SIDE / min(im.size)
                    size = (round(im.width * scale), round(im.height * scale))
                    im.resize(size, Image.Resampling.LANCZOS).save(dst, "JPEG", quality=QUALITY)
                written.append(dst)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="the clothing10 folder (train/, val/)")
    files = make(parser.parse_args().source)
    print(f"{len(files)} photos, {sum(f.stat().st_size for f in files) // 1024} KiB, in {HERE}")


if __name__ == "__main__":
    main()
