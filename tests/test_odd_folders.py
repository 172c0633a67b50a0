"""Folders as people really have them, beyond tests/odd_images.py: formats and
names the scan had not met (animated GIF, WebP, multi-page TIFF, .jfif, upper-case
endings, emoji), a folder one level too high, one picture reached twice through
links, and folders of new pictures given to `predict` and the Playground (hidden
folders, phones' HEIC files, empty files). Every picture is a real photo from
assets/examples/clothes, converted with PIL; nothing is mocked."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from core.evaluation import list_images, predict_paths
from core.images import HEIC_HINT, MAX_ASPECT, open_rgb
from core.scan import scan_folder
from tests.folders import PHOTOS, REPO_ROOT
from tests.test_app_pages import (  # noqa: F401 - every_run_goes_through_app_py is an autouse fixture
    PLAYGROUND,
    _app,
    _button,
    _goto,
    _ok,
    _texts,
    every_run_goes_through_app_py,
)

HEIC_START = b"\0\0\0\x18ftypheic" + bytes(16)  # how a phone's HEIC photo starts


def _photos(cls: str) -> list[Path]:
    return [p for split in ("train", "val") for p in sorted((PHOTOS / split / cls).glob("*.jpg"))]


def _symlink(target, link: Path) -> None:
    try:
        os.symlink(target, link)
    except (OSError, NotImplementedError):  # e.g. Windows without the privilege
        pytest.skip("this system cannot make symbolic links")


def test_formats_and_names_never_tried_before_are_all_used(tmp_path):
    hats, shoes = tmp_path / "hat", tmp_path / "shoes"
    hats.mkdir()
    shoes.mkdir()
    for src in _photos("hat")[:6]:
        shutil.copyfile(src, hats / src.name)
    for src in _photos("shoes")[:6]:
        shutil.copyfile(src, shoes / src.name)
    photo = Image.open(_photos("hat")[7]).convert("RGB")
    frames = [photo.rotate(angle) for angle in (0, 20, 40)]
    odd = {
        "animated.gif": lambda p: frames[0].save(p, save_all=True, append_images=frames[1:], duration=80, loop=0),
        "photo.webp": lambda p: photo.save(p),
        "cut-out.webp": lambda p: photo.convert("RGBA").save(p),
        "pages.tiff": lambda p: frames[0].save(p, save_all=True, append_images=frames[1:]),
        "print.tif": lambda p: photo.convert("CMYK").save(p),
        "saved from the web.jfif": lambda p: photo.save(p, format="JPEG"),
        "old camera.jpe": lambda p: photo.save(p, format="JPEG"),
        "IMG_0001.JPG": lambda p: photo.save(p, format="JPEG"),
        "IMG_0002.JPEG": lambda p: photo.save(p, format="JPEG"),
        "Scan.Png": lambda p: photo.save(p, format="PNG"),
        "café été 🎩.jpg": lambda p: photo.save(p),
        "panorama.jpg": lambda p: photo.resize((8000, 300)).save(p),
        "icon.png": lambda p: photo.resize((8, 8)).save(p),
    }
    for name, save in odd.items():
        save(hats / name)
    (hats / "._IMG_0001.JPG").write_bytes(b"\0\5\26\7" + bytes(60))  # what a Mac leaves on a USB stick

    report = scan_folder(tmp_path)
    used = {Path(p).name for p, _ in report.train + report.val}
    assert set(odd) <= used, set(odd) - used
    assert report.counts["hat"]["train"] + report.counts["hat"]["val"] == 6 + len(odd)
    assert report.skipped == [] and report.ignored == [str(hats / "._IMG_0001.JPG")]  # not a problem: no warning
    assert not any("skipped" in w for w in report.warnings)
    assert report.can_train

    gif = open_rgb(hats / "animated.gif")  # its first frame, as a still picture
    assert gif.mode == "RGB" and gif.size == photo.size
    panorama = open_rgb(hats / "panorama.jpg")  # cropped to a shape a network can take, never stretched
    assert panorama.size == (int(300 * MAX_ASPECT), 300)


def test_a_picture_reached_twice_through_links_counts_once(tmp_path):
    outside = tmp_path / "elsewhere"  # pictures kept outside the folder, linked in
    outside.mkdir()
    shared = shutil.copyfile(_photos("shoes")[8], outside / "boot.jpg")
    data = tmp_path / "data"
    for cls in ("hat", "shoes"):
        (data / cls).mkdir(parents=True)
        for src in _photos(cls)[:5]:
            shutil.copyfile(src, data / cls / src.name)
    _symlink(shared, data / "shoes" / "boot.jpg")  # a link to one picture outside: used
    _symlink(outside, data / "shoes" / "more")  # and a link to its folder: the same picture again
    os.link(data / "hat" / _photos("hat")[0].name, data / "hat" / "hard-link.jpg")  # one file, two names

    report = scan_folder(data)
    assert report.counts["shoes"]["train"] + report.counts["shoes"]["val"] == 6  # 5 + boot.jpg, once
    assert report.counts["hat"]["train"] + report.counts["hat"]["val"] == 5
    used = {Path(p).relative_to(data).as_posix() for p, _ in report.train + report.val}
    assert "shoes/boot.jpg" in used and "shoes/more/boot.jpg" not in used
    reasons = {Path(s.path).relative_to(data).as_posix(): s.reason for s in report.skipped}
    assert reasons["shoes/more/boot.jpg"] == "the same file as boot.jpg (through a link), counted once"
    first_hat = _photos("hat")[0].name
    hat_copies = {f"hat/{first_hat}", "hat/hard-link.jpg"}
    assert len(hat_copies & used) == 1 and len(hat_copies & set(reasons)) == 1


def test_the_folder_above_a_train_and_val_folder_says_choose_the_one_inside(tmp_path):
    dataset = tmp_path / "downloads" / "clothes"  # downloads/clothes/train/hat...: downloads was chosen
    for split in ("train", "val"):
        for cls in ("hat", "shoes"):
            (dataset / split / cls).mkdir(parents=True)
            for src in sorted((PHOTOS / split / cls).glob("*.jpg"))[:3]:
                shutil.copyfile(src, dataset / split / cls / src.name)
    report = scan_folder(tmp_path / "downloads")
    assert not report.can_train
    assert "The folder clothes holds train/ and val/: if your class folders are in there, choose " in report.errors[0]
    assert f"choose {dataset} instead." in report.errors[0]
    assert "if those are your classes" not in report.errors[0]  # train and val are not classes
    assert scan_folder(dataset).split_source == "folders"  # and that one trains on its own split

    shutil.rmtree(dataset / "val")  # only train/ inside: still the folder to choose
    report = scan_folder(tmp_path / "downloads")
    assert f"The folder clothes holds train/: if your class folders are in there, choose {dataset}" in report.errors[0]


def _new_pictures(folder: Path) -> None:
    """A folder of new pictures as it comes off a phone or a Mac."""
    (folder / "trip").mkdir(parents=True)
    for src in _photos("hat")[:2] + _photos("shoes")[:2]:
        shutil.copyfile(src, folder / "trip" / src.name)
    (folder / "IMG_0042.HEIC").write_bytes(HEIC_START)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "._IMG_0042.jpg").write_bytes(b"\0\5\26\7" + bytes(60))
    for hidden in (".set-aside/hat", "__MACOSX/trip", ".thumbnails"):  # the app's own, an archive's, a viewer's
        (folder / hidden).mkdir(parents=True)
        shutil.copyfile(_photos("hat")[3], folder / hidden / "copy.jpg")


def test_listing_new_pictures_leaves_hidden_folders_out_and_follows_links_once(tmp_path):
    _new_pictures(tmp_path)
    _symlink(tmp_path / "trip", tmp_path / "trip again")  # the same folder, linked
    _symlink("..", tmp_path / "trip" / "up")  # a link back up would walk round forever
    listed = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert listed == ["empty.jpg"] + sorted(f"trip/{p.name}" for p in _photos("hat")[:2] + _photos("shoes")[:2])
    with_heic = [p.name for p in list_images(tmp_path, with_heic=True)]
    assert "IMG_0042.HEIC" in with_heic and len(with_heic) == 6


def test_predict_says_why_a_phone_picture_and_an_empty_file_cannot_be_read(linear_probe_run, tmp_path):
    _new_pictures(tmp_path)
    rows = {Path(r["path"]).name: r for r in predict_paths(linear_probe_run, tmp_path)}
    assert len(rows) == 6
    assert rows["IMG_0042.HEIC"]["error"] == f"could not read this picture: {HEIC_HINT}"
    assert rows["empty.jpg"]["error"] == "could not read this picture: empty file (0 bytes)"
    assert sum(1 for r in rows.values() if r["top"]) == 4


def test_predict_on_a_folder_without_pictures_says_so(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing to see\n")
    done = subprocess.run(
        [sys.executable, "-m", "core", "predict", str(tmp_path / "no-run-needed"), str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert f"There are no pictures (JPEG, PNG, GIF, BMP, WebP or TIFF) in {tmp_path}." in done.stderr


def test_playground_names_a_phone_folder_and_says_why_some_files_are_not_pictures(env, with_run, tmp_path):
    folder = tmp_path / "from my phone"
    _new_pictures(folder)
    at = _goto(_app(), PLAYGROUND)
    at.text_input(key="batch_folder").set_value(str(folder)).run()
    _button(at, "Name them all").click().run()
    _ok(at)
    table = next(d.value for d in at.dataframe if "It looks like" in d.value.columns)
    assert len(table) == 6  # 4 photos, the HEIC file and the empty one; nothing hidden
    problems = dict(zip(table["Picture"], table["Problem"]))
    assert problems["IMG_0042.HEIC"] == HEIC_HINT
    assert problems["empty.jpg"] == "empty file (0 bytes)"
    assert "Named **4** pictures" in _texts(at.markdown)
    assert "2 files could not be read as a picture" in _texts(at.warning)
