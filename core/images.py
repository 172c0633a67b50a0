"""Opening any image as RGB, proving that a file is a usable image, and the
decoded-image cache with its memory budget.

Everything about one image file lives here: the scan (core.scan) verifies
files with verify_image, the loaders (core.loading) read them with open_rgb
or take them from a DecodedImageCache. Nothing here knows about folders,
classes or training.
"""

from __future__ import annotations

import os
import random
import re
import stat
from collections.abc import Sequence

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

# .jfif and .jpe are JPEGs too: Windows browsers save many web pictures as .jfif.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jfif", ".jpe", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
)
# Phones' HEIC/HEIF pictures are not read: the one Python reader, pillow-heif,
# ships wheels that bundle x265 (GPL-2.0) and LGPL codecs, and the HEVC patents
# are unsettled (see pyproject.toml). They get a hint instead of "not a picture".
HEIC_EXTENSIONS: frozenset[str] = frozenset({".heic", ".heif", ".hif"})
HEIC_HINT = (
    "a phone picture in HEIC format, which Transfer Studio cannot read: export it as JPEG "
    "(on an iPhone: Settings > Camera > Formats > Most Compatible)"
)
_HEIC_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1")

# Below PIL's own bomb limit (about 89 MP), so we refuse an image before PIL
# would even warn. 80 MP is bigger than any ordinary camera photo, and decoding
# one such RGB image already takes about 240 MB.
MAX_IMAGE_PIXELS: int = 80_000_000

# The longest side may be at most this many times the shortest. Training and
# prediction resize the shorter side to the network's size (e.g. 256), so a
# 1x16000 strip would otherwise grow to 256x4,096,000 pixels (4 GB). Longer
# pictures are cropped to this shape around their centre, on every path.
MAX_ASPECT = 8.0

# The scan decodes JPEGs at 1/8 scale (draft mode): it proves the whole file
# decodes while costing a fraction of a full decode.
_VERIFY_DRAFT_SIDE = 64

_REASON_BROKEN = "unreadable or truncated image"
REASON_EMPTY = "empty file (0 bytes)"


class _ImageTooLargeError(ValueError):
    """Raised before decoding an image whose pixel count is above MAX_IMAGE_PIXELS."""

    def __init__(self, path: str, size: tuple[int, int]):
        self.size = size
        super().__init__(f"The image {path} is too large to decode safely ({size[0]}×{size[1]}).")


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
    if not hasattr(path, "read"):
        path = os.fspath(path)
        # Only regular files: opening a FIFO named .jpg would wait forever,
        # and a device file could be endless.
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ValueError(f"{path} is not a regular file.")
    with Image.open(path) as img:
        width, height = img.size
        # Checked from the header alone, before any pixel is decoded.
        if width * height > MAX_IMAGE_PIXELS:
            raise _ImageTooLargeError(path if isinstance(path, str) else "you gave", (width, height))
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
    return limit_shape(rgb), (width, height)


def limit_shape(image: Image.Image) -> Image.Image:
    """The image, centre-cropped so its long side is at most MAX_ASPECT times
    its short side (never enlarged)."""
    width, height = image.size
    short, long = min(width, height), max(width, height)
    if long <= short * MAX_ASPECT:
        return image
    keep = max(1, int(short * MAX_ASPECT))
    if width > height:
        left = (width - keep) // 2
        return image.crop((left, 0, left + keep, height))
    top = (height - keep) // 2
    return image.crop((0, top, width, top + keep))


def bounded_rgb(image: Image.Image) -> Image.Image:
    """An image that came from elsewhere than a file of ours (an upload, the
    camera) under the same limits as a file: pixel count and shape."""
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        raise _ImageTooLargeError("you gave", (width, height))
    return limit_shape(_to_rgb(image))


def open_rgb(path, max_side: int | None = None) -> Image.Image:
    """Open any readable image as 3-channel RGB with EXIF orientation applied.

    max_side: if given, JPEGs are decoded at a reduced scale whose shorter side
    is still >= max_side (much faster for big photos); no other resize is done.
    Raises on failure; callers decide what a failure means.
    """
    rgb, _ = _decode(path, max_side)
    return rgb


# --------------------------------------------------------------------------
# Verifying a file


def looks_like_heic(path: str) -> bool:
    """True when a file is a HEIC/HEIF picture, by its name or, whatever its
    name (a phone's photo renamed .jpg), by the "ftyp" box at its start."""
    if os.path.splitext(path)[1].lower() in HEIC_EXTENSIONS:
        return True
    try:
        with open(path, "rb") as f:
            start = f.read(12)
    except OSError:
        return False
    return start[4:8] == b"ftyp" and start[8:12] in _HEIC_BRANDS


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


def verify_image(path: str, keep_side: int | None = None, interpolation: str = "bilinear"):
    """(size, None, pixels) for a usable image, (None, reason, None) otherwise.
    Never raises. pixels: with keep_side, the image as DecodedImageCache
    keeps it (shorter side at most keep_side); else None, and the image is
    decoded only as far as proving that it decodes."""
    try:
        image, size = _decode(path, keep_side or _VERIFY_DRAFT_SIDE)
        return size, None, (_shrink(image, keep_side, interpolation) if keep_side else None)
    except Exception as exc:  # noqa: BLE001 - every failure is a reason in words
        return None, unreadable_reason(path, exc), None


def _is_empty(path: str) -> bool:
    try:
        return os.path.getsize(path) == 0
    except (OSError, TypeError, ValueError):
        return False


def unreadable_reason(path: str, exc: Exception) -> str:
    """Why the file at `path` could not be read as a picture, in words (the
    scan's list of left-out files, the Playground's table, `predict`)."""
    if isinstance(exc, _ImageTooLargeError):
        return f"too large to decode safely ({exc.size[0]}×{exc.size[1]})"
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        found = re.search(r"\((\d+) pixels\)", str(exc))
        return "too large to decode safely" + (f" ({int(found.group(1)) / 1e6:.0f} megapixels)" if found else "")
    if isinstance(exc, FileNotFoundError):
        return "file disappeared while the folder was being checked"
    if isinstance(exc, PermissionError):
        return "no permission to read the file"
    if isinstance(exc, UnidentifiedImageError):
        if _is_empty(path):
            return REASON_EMPTY
        if looks_like_heic(path):
            return HEIC_HINT
        if _looks_like_text(path):
            return f"not an image (text file named {os.path.splitext(path)[1]})"
        return "not an image (unknown or unsupported format)"
    return _REASON_BROKEN


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
        from torchvision.transforms import v2  # here: checking pictures (a scan) needs no torch

        # The same call, with the same filter, as the transform's Resize:
        # that Resize then finds the size already right and changes nothing.
        image = v2.functional.resize(
            image, [short_side], interpolation=v2.InterpolationMode(interpolation), antialias=True
        )
    return np.asarray(image)


def too_big_to_keep(need: int, budget: int) -> str:
    """Why the decoded images are not kept, in the words the run records."""
    return (
        f"the decoded images need about {need / 2**20:,.0f} MB, more than the {budget / 2**20:,.0f} MB "
        f"set aside for them, so they are read from disk every epoch"
    )


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
        import torch  # here: checking pictures (a scan) needs no torch

        self.interpolation = interpolation  # the filter the images were shrunk with
        self._pixels = torch.empty(sum(int(a.nbytes) for a in arrays.values()), dtype=torch.uint8)
        self._where: dict[str, tuple[int, int, int]] = {}  # path -> (start, height, width)
        flat, start = self._pixels.numpy(), 0
        for path in list(arrays):
            array = arrays.pop(path)
            flat[start : start + array.nbytes] = array.reshape(-1)
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
        return self._pixels[start : start + height * width * 3].numpy().reshape(height, width, 3)

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
