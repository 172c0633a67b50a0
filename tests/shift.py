"""A domain shift built from real photos, for the domain-adaptation tests:
the same pictures, darker, greyer, with a colour cast and sensor noise, as
a cheap camera in a dim room would take them. Written as copies (the
originals are never touched), class subfolders kept so they can be scored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from core.images import open_rgb


def shift_picture(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Darker (x0.4), half greyscale, a blue-green cast, Gaussian noise (sigma 20 of 255)."""
    x = np.asarray(image.convert("RGB"), dtype=np.float32)
    grey = x.mean(axis=2, keepdims=True)
    x = 0.5 * x + 0.5 * grey
    x = x * 0.4 * np.array([0.6, 1.0, 1.4], dtype=np.float32) + 10.0
    x = x + rng.normal(0.0, 20.0, size=x.shape).astype(np.float32)
    return Image.fromarray(np.clip(x, 0, 255).astype(np.uint8))


def shifted_copy(src: Path, dst: Path, *, per_class: int | None = None, max_side: int = 320, seed: int = 0) -> Path:
    """Shifted copies of the pictures in src's class subfolders (the first
    `per_class` of each, sorted), as JPEGs at most `max_side` pixels."""
    rng = np.random.default_rng(seed)
    for class_dir in sorted(p for p in Path(src).iterdir() if p.is_dir()):
        out = Path(dst) / class_dir.name
        out.mkdir(parents=True, exist_ok=True)
        files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        for f in files[:per_class]:
            image = open_rgb(f, max_side=max_side)
            shift_picture(image, rng).save(out / (f.stem + ".jpg"), quality=90)
    return Path(dst)
