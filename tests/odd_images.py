"""Build a folder of real photos mixed with the odd files real folders contain.

Every image here comes from a real photo in assets/examples/clothes (copied, converted,
truncated...), hats and shoes, so it runs on any clone. Only the non-images
(text, empty, links) are made from scratch.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from PIL import Image

from tests.folders import PHOTOS

PHOTOS_PER_CLASS = 12

USED = "used"
SKIPPED = "skipped"  # listed as left out, with its reason
IGNORED = "ignored"  # what computers leave in folders by themselves: ignored quietly, only counted


def _photos(cls: str) -> list[Path]:
    """The class's photos, training ones first (14: more than PHOTOS_PER_CLASS + 1)."""
    return [p for split in ("train", "val") for p in sorted((PHOTOS / split / cls).glob("*.jpg"))]


def _landscape_photo() -> Path:
    """A real photo wider than tall, so a 90-degree EXIF rotation shows."""
    for path in _photos("shoes"):
        with Image.open(path) as img:
            if img.width > img.height + 50:
                return path
    raise RuntimeError("no landscape photo in assets/examples/clothes/*/shoes")


def _symlink(target: str, link: Path) -> bool:
    try:
        os.symlink(target, link)
        return True
    except (OSError, NotImplementedError):  # e.g. Windows without the privilege
        return False


def make_odd_folder(root: Path) -> dict[str, str]:
    """Create root/hat, root/shoes (12 real photos each, plus odd files) and an
    empty class folder root/empty_class.

    Returns file name -> "used" or "skipped" for every odd file made (names are
    unique across the folder). The plain copied photos are not listed; they are
    all usable.
    """
    root = Path(root)
    hat, shoes = root / "hat", root / "shoes"
    for folder in (hat, shoes, root / "empty_class"):
        folder.mkdir(parents=True, exist_ok=True)
    for cls, folder in (("hat", hat), ("shoes", shoes)):
        for src in _photos(cls)[:PHOTOS_PER_CLASS]:
            shutil.copyfile(src, folder / src.name)

    source = _photos("hat")[PHOTOS_PER_CLASS]  # a real photo not copied above
    photo = Image.open(source).convert("RGB")
    expected: dict[str, str] = {}

    # --- unusable files, all in hat/ -----------------------------------
    (hat / "empty.jpg").write_bytes(b"")
    expected["empty.jpg"] = SKIPPED

    data = source.read_bytes()
    (hat / "truncated.jpg").write_bytes(data[: len(data) // 2])
    expected["truncated.jpg"] = SKIPPED

    (hat / "text.jpg").write_text("This is not a picture.\nJust a note saved with the wrong name.\n")
    expected["text.jpg"] = SKIPPED

    (hat / "notes.txt").write_text("photos taken in June\n")
    expected["notes.txt"] = SKIPPED

    # --- what computers make by themselves, in hat/ --------------------
    (hat / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(100))
    expected[".DS_Store"] = IGNORED
    (hat / "Thumbs.db").write_bytes(bytes(512))
    expected["Thumbs.db"] = IGNORED
    (hat / "desktop.ini").write_text("[.ShellClassInfo]\nIconResource=hat.ico,0\n")
    expected["desktop.ini"] = IGNORED
    (hat / "Icon\r").write_bytes(b"")  # a Mac folder's custom icon: empty, with a carriage return in its name
    expected["Icon\r"] = IGNORED
    (hat / ".directory").write_text("[Desktop Entry]\nIcon=folder-red\n")  # KDE's folder settings
    expected[".directory"] = IGNORED
    shutil.copyfile(source, hat / "._beach.jpg")  # AppleDouble from a Mac, named like a picture
    expected["._beach.jpg"] = IGNORED

    # Header says 12000x12000 (144 MP) and the pixels are really there (a
    # 1-bit image compresses to almost nothing), so it is a genuine PNG.
    Image.new("1", (12000, 12000)).save(hat / "huge.png")
    expected["huge.png"] = SKIPPED

    if _symlink(".", hat / "loop"):  # a folder link to its own folder
        expected["loop"] = SKIPPED
    if _symlink(".", root / "root_loop"):  # beside the classes: not a class
        expected["root_loop"] = SKIPPED
    if _symlink("no_such_file.jpg", hat / "broken_link.jpg"):
        expected["broken_link.jpg"] = SKIPPED

    macosx = hat / "__MACOSX"  # what unzipping a Mac archive leaves behind
    macosx.mkdir()
    shutil.copyfile(_photos("hat")[0], macosx / "._copy.jpg")
    expected["__MACOSX"] = IGNORED

    # --- usable but unusual images, all in shoes/ --------------------------
    photo.convert("CMYK").save(shoes / "cmyk.jpg")
    expected["cmyk.jpg"] = USED

    # 16-bit: the grey channel * 257 spans the full 0..65535 range.
    grey = photo.convert("L")
    grey.convert("I").point(lambda v: v * 257).convert("I;16").save(shoes / "sixteen_bit.png")
    expected["sixteen_bit.png"] = USED

    # Palette image whose top-left block is a transparent palette entry.
    palette = photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=255)
    colours = palette.getpalette()[: 255 * 3]
    palette.putpalette(colours + [0, 0, 0])  # entry 255: black, and transparent
    palette.paste(255, (0, 0, 64, 64))
    palette.save(shoes / "palette.png", transparency=255)
    expected["palette.png"] = USED

    # RGBA whose left half is fully transparent over black pixels: composited
    # on black it would come out black; it must come out white.
    rgba = photo.copy()
    half = (0, 0, rgba.width // 2, rgba.height)
    rgba.paste((0, 0, 0), half)
    rgba = rgba.convert("RGBA")
    alpha = Image.new("L", rgba.size, 255)
    alpha.paste(0, half)
    rgba.putalpha(alpha)
    rgba.save(shoes / "rgba.png")
    expected["rgba.png"] = USED

    grey.save(shoes / "grey.jpg")
    expected["grey.jpg"] = USED

    photo.convert("1").save(shoes / "bilevel.png")
    expected["bilevel.png"] = USED

    # Saved landscape with EXIF Orientation=6 ("rotate 90 degrees clockwise
    # to view"): after exif_transpose width and height swap.
    landscape = Image.open(_landscape_photo()).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    landscape.save(shoes / "exif_rotated.jpg", exif=exif)
    expected["exif_rotated.jpg"] = USED

    # A photo shrunk to 24x16: usable, but the scan warns it is tiny.
    photo.resize((24, 16)).save(shoes / "tiny.png")
    expected["tiny.png"] = USED

    nested = shoes / "more" / "deeper"
    nested.mkdir(parents=True)
    shutil.copyfile(_photos("shoes")[PHOTOS_PER_CLASS], nested / "nested.jpg")
    expected["nested.jpg"] = USED

    return expected
