"""core.class_folders on real photos (assets/examples/clothes): a folder made one class at
a time, as the camera and uploads fill it, that the scan then reads like any."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image

from core.class_folders import MARKER, MAX_SIDE, MadeFolder, made_folders
from core.errors import UserError
from core.images import open_rgb
from core.scan import scan_folder
from tests.folders import PHOTOS


def _jpegs(klass: str, n: int) -> list[bytes]:
    """The bytes of n real photos of one class, as a browser would send them."""
    files = sorted((PHOTOS / "train" / klass).glob("*.jpg"))[:n]
    assert len(files) == n
    return [f.read_bytes() for f in files]


def test_a_made_folder_becomes_an_ordinary_class_folder_the_scan_reads(tmp_path):
    root = tmp_path / "data"
    made = MadeFolder.create(root, "my classes")
    assert made.path.parent == root.resolve() and made.name == "my classes"
    assert (made.path / MARKER).is_file()
    assert made.add_class("  hat ") == "hat"
    assert made.add_class("shoes/../../evil") == "shoes....evil"  # no path can leave the folder
    made.rename_class("shoes....evil", "shoes")
    assert made.classes() == ["hat", "shoes"]

    first = made.save_captured("hat", _jpegs("hat", 6))
    second = made.save_captured("shoes", _jpegs("shoes", 6) + [b"not a picture", b""])
    assert (first.saved, first.refused) == (6, 0)
    assert (second.saved, second.refused) == (6, 2)
    assert made.counts() == {"hat": 6, "shoes": 6}
    names = [p.name for p in made.pictures("hat")]
    assert len(set(names)) == 6 and all(n.startswith("photo-") and n.endswith(".jpg") for n in names)
    assert not any(p.name.endswith(".tmp") for p in made.path.rglob("*"))

    report = scan_folder(str(made.path), val_fraction=0.34, seed=0)
    assert report.classes == ["hat", "shoes"]
    assert report.can_train and report.num_images == 12 and not report.skipped  # the marker is not data
    assert [f.path for f in made_folders(root)] == [made.path]


def test_captured_pictures_are_decoded_shrunk_and_written_again(tmp_path):
    made = MadeFolder.create(tmp_path, "big")
    made.add_class("pants")
    photo = open_rgb(sorted((PHOTOS / "train" / "pants").glob("*.jpg"))[0])
    big = io.BytesIO()
    photo.resize((1600, 1200)).save(big, format="PNG")  # a big PNG: saved as a JPEG of at most MAX_SIDE
    assert made.save_captured("pants", [big.getvalue()]).saved == 1
    (saved,) = made.pictures("pants")
    with Image.open(saved) as img:
        assert img.format == "JPEG" and max(img.size) == MAX_SIDE and img.size == (640, 480)
        # Still the same photo: its average colour is close to the original's.
        small, original = img.convert("RGB").resize((1, 1)), photo.resize((1, 1))
        assert all(abs(a - b) < 12 for a, b in zip(small.getpixel((0, 0)), original.getpixel((0, 0)), strict=True))


def test_a_picture_too_big_to_decode_safely_is_refused_from_its_header(tmp_path):
    made = MadeFolder.create(tmp_path, "bomb")
    made.add_class("hat")
    bomb = io.BytesIO()
    Image.new("1", (9_000, 9_000)).save(bomb, format="PNG")  # 81 MP, tiny on disk
    assert made.save_captured("hat", [bomb.getvalue()]).refused == 1
    assert made.counts() == {"hat": 0}


def test_names_stay_inside_and_never_replace_anything(tmp_path):
    root = tmp_path / "data"
    (root / "flowers").mkdir(parents=True)
    made = MadeFolder.create(root, "flowers")
    assert made.name == "flowers-2"  # the existing folder is left alone
    assert MadeFolder.create(root, "../../outside").path.parent == root.resolve()
    assert MadeFolder.create(root, "...").name == "my-classes"
    made.add_class("ants")
    for bad in ("", "///", "train", "Val", "test"):
        with pytest.raises(UserError):
            made.add_class(bad)
    with pytest.raises(UserError, match="already"):
        made.add_class("ANTS")
    made.add_class("bees")
    with pytest.raises(UserError, match="already"):
        made.rename_class("bees", "ants")
    with pytest.raises(UserError, match="no class"):
        made.rename_class("../flowers", "x")
    with pytest.raises(UserError):
        MadeFolder(root, root / "flowers")  # not made here: no marker, never changed
    with pytest.raises(UserError):
        MadeFolder(root, tmp_path)  # not inside the data folder


def test_a_link_in_a_made_folder_is_never_followed(tmp_path):
    root = tmp_path / "data"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.jpg").write_bytes(_jpegs("hat", 1)[0])
    made = MadeFolder.create(root, "linked")
    os.symlink(outside, made.path / "sneaky")
    assert made.classes() == []
    for action in (lambda: made.remove_class("sneaky"), lambda: made.save_captured("sneaky", _jpegs("hat", 1))):
        with pytest.raises(UserError):
            action()
    with pytest.raises(UserError):
        made.delete_picture(made.path / "sneaky" / "keep.jpg")
    assert (outside / "keep.jpg").is_file()
    os.symlink(made.path, root / "alias")
    with pytest.raises(UserError):
        MadeFolder(root, root / "alias")


def test_deleting_one_picture_and_a_whole_class(tmp_path):
    made = MadeFolder.create(tmp_path / "data", "mine")
    made.add_class("hat")
    made.add_class("shoes")
    made.save_captured("hat", _jpegs("hat", 3))
    made.save_captured("shoes", _jpegs("shoes", 2))
    doomed = made.pictures("hat")[0]
    made.delete_picture(doomed)
    assert not doomed.exists() and made.counts() == {"hat": 2, "shoes": 2}
    with pytest.raises(UserError):
        made.delete_picture(made.path / MARKER)  # only pictures of a class
    stranger = tmp_path / "elsewhere.jpg"
    stranger.write_bytes(_jpegs("hat", 1)[0])
    with pytest.raises(UserError):
        made.delete_picture(stranger)
    assert stranger.exists()
    assert made.remove_class("shoes") == 2
    assert made.classes() == ["hat"] and Path(made.path / "shoes").exists() is False
