"""core.images, core.scan and core.loading on real photos: the shared datasets and a folder of odd files
built from them (tests/odd_images.py). No mocks: every image is decoded."""

from __future__ import annotations

import json
import math
import os
import shutil
import threading
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageStat

from core.config import AUGMENT_PRESETS
from core.images import IMAGE_EXTENSIONS, MAX_IMAGE_PIXELS, open_rgb
from core.loading import ImageDataset, collate_skip_broken, make_transform
from core.scan import DataFolderError, scan_folder
from core.scan_report import ScanReport
from tests.odd_images import IGNORED, SKIPPED, USED, make_odd_folder

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def scan_with_deadline(root, seconds: float = 60, **kwargs) -> ScanReport:
    """scan_folder, but a hang (e.g. following a symlink loop) fails the test
    instead of freezing the run."""
    result: dict = {}

    def work():
        try:
            result["report"] = scan_folder(root, **kwargs)
        except BaseException as exc:  # handed to the test thread
            result["error"] = exc

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"scan_folder({root}) did not finish within {seconds} s")
    if "error" in result:
        raise result["error"]
    return result["report"]


def copy_photos(src_dir: Path, dst_dir: Path, n: int, start: int = 0) -> list[Path]:
    dst_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for src in sorted(src_dir.glob("*.jpg"))[start : start + n]:
        shutil.copyfile(src, dst_dir / src.name)
        out.append(dst_dir / src.name)
    return out


# --------------------------------------------------------------------------
# The shared datasets


def test_constants():
    assert {".jpg", ".jpeg", ".jfif", ".jpe", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"} == set(IMAGE_EXTENSIONS)
    assert MAX_IMAGE_PIXELS < Image.MAX_IMAGE_PIXELS
    assert set(AUGMENT_PRESETS) == {"none", "light", "strong"}
    assert all(isinstance(text, str) and text for text in AUGMENT_PRESETS.values())


def test_hymenoptera_uses_its_split_folders(hymenoptera):
    report = scan_with_deadline(hymenoptera)
    assert report.split_source == "folders"
    assert report.split_folders == {"train": "train", "val": "val"}
    assert report.classes == ["ants", "bees"]
    # imageNotFound.gif is a real, readable GIF: it counts as an ants image.
    assert report.counts == {"ants": {"train": 124, "val": 70}, "bees": {"train": 121, "val": 83}}
    assert str(hymenoptera / "train" / "ants" / "imageNotFound.gif") in {p for p, _ in report.train}
    assert report.num_images == 398
    assert report.skipped == [] and report.empty_classes == [] and report.errors == []
    assert report.can_train
    for path, label in report.train + report.val:
        assert os.path.isabs(path) and os.path.isfile(path)
        assert Path(path).parent.name == report.classes[label]
    assert {p for p, _ in report.train}.isdisjoint(p for p, _ in report.val)
    sizes = report.image_sizes
    assert sizes["count"] == 398
    assert sizes["min"] == [193, 130]  # the smallest photo, as the data README says
    assert sizes["max"][0] == 2592
    text = report.format_text()
    assert "ants" in text and "124" in text and "Ready to train" in text


def test_clothing10_has_ten_classes(clothing10):
    report = scan_with_deadline(clothing10)
    assert report.split_source == "folders"
    assert len(report.classes) == 10 and report.classes == sorted(report.classes)
    assert all(c["train"] == 40 for c in report.counts.values())
    assert sum(c["val"] for c in report.counts.values()) == 341
    assert report.can_train
    # The LICENSE file beside train/ and val/ is not data and not "skipped".
    assert report.skipped == []


# --------------------------------------------------------------------------
# Random split


def test_random_split_is_stratified_and_deterministic(hymenoptera):
    root = hymenoptera / "train"  # ants/ and bees/ directly: no split folders
    first = scan_with_deadline(root, val_fraction=0.2, seed=0)
    again = scan_with_deadline(root, val_fraction=0.2, seed=0)
    other = scan_with_deadline(root, val_fraction=0.2, seed=1)
    half = scan_with_deadline(root, val_fraction=0.5, seed=0)

    assert first.split_source == "random" and first.split_folders == {}
    assert first.train == again.train and first.val == again.val
    assert {p for p, _ in first.val} != {p for p, _ in other.val}

    totals = {"ants": 124, "bees": 121}
    for report, fraction in ((first, 0.2), (other, 0.2), (half, 0.5)):
        assert report.classes == ["ants", "bees"]
        for name, total in totals.items():
            counts = report.counts[name]
            assert counts["train"] + counts["val"] == total
            assert counts["val"] == math.floor(total * fraction + 0.5)
        all_paths = [p for p, _ in report.train + report.val]
        assert len(all_paths) == len(set(all_paths)) == 245
        assert report.val_fraction == fraction
        assert report.can_train


def test_random_split_keeps_one_val_image_per_small_class(hymenoptera, tmp_path):
    copy_photos(hymenoptera / "train" / "ants", tmp_path / "ants", 2)
    copy_photos(hymenoptera / "train" / "bees", tmp_path / "bees", 3)
    report = scan_with_deadline(tmp_path)
    assert report.counts == {"ants": {"train": 1, "val": 1}, "bees": {"train": 2, "val": 1}}
    assert report.can_train
    # Several small classes: one line each for training and validation pictures, not one per class.
    assert "Every class has fewer than 10 pictures to learn from: 'ants' (1), 'bees' (2);" in " ".join(report.warnings)
    assert "Every class has very few pictures to check with: 'ants' (1), 'bees' (1)," in " ".join(report.warnings)
    assert len(report.warnings) == 2, report.warnings  # balanced enough: nothing else to say
    # Some of them, but not all: counted.
    copy_photos(hymenoptera / "train" / "bees", tmp_path / "flies", 3)
    copy_photos(hymenoptera / "val" / "ants", tmp_path / "wasps", 14)
    report = scan_with_deadline(tmp_path)
    assert "3 classes have fewer than 10 pictures to learn from: 'ants' (1), 'bees' (2), 'flies' (2);" in " ".join(
        report.warnings
    ), report.warnings
    for extra in ("flies", "wasps"):
        shutil.rmtree(tmp_path / extra)

    # One small class is named on its own, in words a person writes ("1 picture to check with").
    copy_photos(hymenoptera / "train" / "ants", tmp_path / "ants", 14)
    report = scan_with_deadline(tmp_path)
    assert report.counts["ants"] == {"train": 11, "val": 3} and report.counts["bees"] == {"train": 2, "val": 1}
    assert any("Class 'bees' has only 2 pictures to learn from;" in w for w in report.warnings), report.warnings
    assert any("Class 'bees' has only 1 picture to check with," in w for w in report.warnings)


def test_class_with_a_single_image_cannot_be_validated(hymenoptera, tmp_path):
    copy_photos(hymenoptera / "train" / "ants", tmp_path / "ants", 5)
    copy_photos(hymenoptera / "train" / "bees", tmp_path / "bees", 1)
    report = scan_with_deadline(tmp_path)
    assert not report.can_train
    assert any("'bees'" in e and "at least 2" in e for e in report.errors)


def test_only_a_train_folder_is_split_at_random(hymenoptera, tmp_path):
    copy_photos(hymenoptera / "train" / "ants", tmp_path / "train" / "ants", 5)
    copy_photos(hymenoptera / "train" / "bees", tmp_path / "train" / "bees", 5)
    report = scan_with_deadline(tmp_path)
    assert report.split_source == "random"
    assert report.classes == ["ants", "bees"]  # not one class called "train"
    assert report.counts["ants"] == {"train": 4, "val": 1}
    assert any("no val/" in w for w in report.warnings)


# --------------------------------------------------------------------------
# Split folders


def test_split_folder_names_are_case_insensitive_and_val_is_preferred(hymenoptera, tmp_path):
    for split in ("train", "Valid", "test"):
        copy_photos(hymenoptera / "val" / "ants", tmp_path / split / "ants", 3)
        copy_photos(hymenoptera / "val" / "bees", tmp_path / split / "bees", 3)
    report = scan_with_deadline(tmp_path)
    assert report.split_source == "folders"
    assert report.split_folders == {"train": "train", "val": "Valid", "test": "test"}
    assert all(Path(p).parts[-3] == "Valid" for p, _ in report.val)
    # test/ beside train/ and val/ is held out: its own split, never train or val.
    assert len(report.test) == 6 and all(Path(p).parts[-3] == "test" for p, _ in report.test)
    assert report.counts["ants"] == {"train": 3, "val": 3, "test": 3}
    assert not any("test/" in w and "not used" in w for w in report.warnings)
    assert ScanReport.from_dict(report.to_dict()).test == report.test


def test_class_missing_from_val_is_an_error(hymenoptera, tmp_path):
    copy_photos(hymenoptera / "train" / "ants", tmp_path / "train" / "ants", 4)
    copy_photos(hymenoptera / "train" / "bees", tmp_path / "train" / "bees", 4)
    copy_photos(hymenoptera / "val" / "ants", tmp_path / "val" / "ants", 2)
    report = scan_with_deadline(tmp_path)
    assert report.classes == ["ants", "bees"]
    assert report.counts["bees"] == {"train": 4, "val": 0}
    assert not report.can_train
    assert any("'bees'" in e and "val/" in e for e in report.errors)


def _class_first(root: Path, hymenoptera: Path, splits: dict[str, tuple[str, int]]) -> dict[str, list[Path]]:
    """root/ants/train, root/ants/val... (each class holding its own split) from real photos:
    splits maps a folder name inside each class to (the hymenoptera split it comes from, how many)."""
    copied = {}
    for name in ("ants", "bees"):
        start = 0
        for sub, (source, n) in splits.items():
            copied[f"{name}/{sub}"] = copy_photos(hymenoptera / source / name, root / name / sub, n, start)
            start += n
    return copied


def test_class_folders_holding_their_own_train_and_val_keep_that_split(hymenoptera, tmp_path):
    copied = _class_first(tmp_path, hymenoptera, {"train": ("train", 5), "Val": ("val", 3), "test": ("val", 2)})
    (tmp_path / "ants" / "train" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(100))
    old = copy_photos(hymenoptera / "train" / "ants", tmp_path / "ants" / "old", 2, 20)  # beside the split: unused
    stray = copy_photos(hymenoptera / "train" / "bees", tmp_path / "bees", 1, 20)[0]  # in neither split
    report = scan_with_deadline(tmp_path)
    assert report.split_source == "folders" and report.split_in_each_class
    assert report.split_folders == {"train": "train", "val": "Val", "test": "test"}
    assert report.classes == ["ants", "bees"]
    assert report.counts == {name: {"train": 5, "val": 3, "test": 2} for name in ("ants", "bees")}
    for split, sub in (("train", "train"), ("val", "Val"), ("test", "test")):
        expected = {str(p) for name in ("ants", "bees") for p in copied[f"{name}/{sub}"]}
        assert {p for p, _ in getattr(report, split)} == expected, split
    labels = {p: report.classes[label] for p, label in report.train + report.val + report.test}
    assert all(Path(p).parts[-3] == name for p, name in labels.items())
    # The person's split, whatever the seed: nothing re-split at random.
    other = scan_with_deadline(tmp_path, seed=7, val_fraction=0.5)
    assert (other.train, other.val, other.test) == (report.train, report.val, report.test)
    assert not {str(p) for p in old} & set(labels) and str(stray) not in labels
    assert "The folder ants/old/ was not used: each class's pictures come from its train/ and Val/ folders." in (
        report.warnings
    )
    reasons = {s.path: s.reason for s in report.skipped}
    assert reasons == {str(stray): "image outside bees/train/, bees/Val/ and bees/test/"}
    assert report.ignored == [str(tmp_path / "ants" / "train" / ".DS_Store")]
    assert "inside each class folder" in report.format_text()
    assert ScanReport.from_dict(json.loads(json.dumps(report.to_dict()))) == report

    # A class with nothing to check with is named with its own folder.
    for p in copied["bees/Val"]:
        p.unlink()
    report = scan_with_deadline(tmp_path)
    assert not report.can_train
    assert "Class 'bees' has no pictures in bees/Val/: every class needs" in " ".join(report.errors)


def test_class_folders_of_which_only_some_hold_train_and_val_say_their_split_is_not_kept(hymenoptera, tmp_path):
    _class_first(tmp_path, hymenoptera, {"train": ("train", 6), "val": ("val", 2)})
    copy_photos(hymenoptera / "train" / "bees", tmp_path / "wasps", 6, 30)  # pictures straight in the class folder
    report = scan_with_deadline(tmp_path)
    assert report.split_source == "random" and not report.split_in_each_class
    assert report.classes == ["ants", "bees", "wasps"]
    assert report.counts["ants"] == {"train": 6, "val": 2}  # 8 pooled, 20% set aside at random
    assert (
        "ants/ and bees/ hold their own train/ and val/ folders but wasps/ does not, so that split is not used: "
        "each class's pictures are pooled and split at random instead. To keep your split, give every class folder "
        "its own train/ and val/ folders."
    ) in report.warnings

    # The first class alone, its own split inside it: not "choose the folder inside" (those hold no classes).
    for name in ("bees", "wasps"):
        shutil.rmtree(tmp_path / name)
    report = scan_with_deadline(tmp_path)
    assert not report.can_train and report.classes == ["ants"]
    assert report.errors[0].endswith(
        "The folder ants holds train/ and val/ of its own: put each other class beside it, with its train/ and val/ too."
    )


def test_a_folder_holding_whole_picture_sets_says_to_choose_one(hymenoptera, tmp_path):
    # downloads/ holding hymenoptera/train/ants/... and insects/train/ants/...: each subfolder holds
    # train/ and val/ like a class folder with its own split, but those hold classes, not pictures.
    for name in ("hymenoptera", "insects"):
        for split in ("train", "val"):
            for cls in ("ants", "bees"):
                copy_photos(hymenoptera / split / cls, tmp_path / name / split / cls, 2)
    with pytest.raises(DataFolderError) as raised:
        scan_folder(str(tmp_path))
    assert str(raised.value) == (
        f"The folder {tmp_path} holds 2 picture sets (hymenoptera/ and insects/), each with its own train/ and val/ "
        f"folders of classes: choose one of them, for example {tmp_path / 'hymenoptera'}."
    )
    assert scan_with_deadline(tmp_path / "insects").classes == ["ants", "bees"]  # as it says


# --------------------------------------------------------------------------
# Folders that cannot be trained on, or not scanned at all


def test_one_class_says_two_are_needed(hymenoptera, tmp_path):
    copy_photos(hymenoptera / "train" / "ants", tmp_path / "ants", 4)
    report = scan_with_deadline(tmp_path)
    assert report.classes == ["ants"]
    assert not report.can_train
    assert (
        "Only one class (ants) was found: training needs at least two classes, "
        "each in its own subfolder." in report.errors
    )


def test_images_without_class_folders(hymenoptera, tmp_path):
    copy_photos(hymenoptera / "train" / "ants", tmp_path, 3)
    report = scan_with_deadline(tmp_path)
    assert report.classes == [] and report.num_images == 0
    assert not report.can_train
    assert "class folders" in report.errors[0] and str(tmp_path) in report.errors[0]
    assert f"3 pictures sit directly in {tmp_path.name}" in report.errors[0]
    assert "Cannot train" in report.format_text()


def test_a_class_folder_chosen_instead_of_its_parent_says_choose_the_folder_above(hymenoptera, tmp_path):
    bees = tmp_path / "pictures" / "bees"
    copy_photos(hymenoptera / "train" / "bees", bees, 4)
    copy_photos(hymenoptera / "train" / "ants", bees / "nested", 3)  # one subfolder: read as the only class
    report = scan_with_deadline(bees)
    assert not report.can_train and report.classes == ["nested"]
    assert "Only one class (nested) was found" in report.errors[0]
    assert f"choose the folder above it, {tmp_path / 'pictures'}, which holds a folder per class" in report.errors[0]


def test_the_folder_above_the_classes_chosen_says_choose_the_one_inside(hymenoptera, tmp_path):
    year = tmp_path / "photos" / "2024"  # photos/2024/ants and photos/2024/bees: photos was chosen
    copy_photos(hymenoptera / "train" / "ants", year / "ants", 3)
    copy_photos(hymenoptera / "train" / "bees", year / "bees", 3)
    report = scan_with_deadline(tmp_path / "photos")
    assert not report.can_train and report.classes == ["2024"]
    assert "Only one class (2024) was found" in report.errors[0]
    assert (
        f"The folder 2024 holds folders of its own (ants, bees): if those are your classes, choose {year} instead."
        in (report.errors[0])
    )
    assert scan_with_deadline(year).can_train  # and that one trains


def test_missing_path_raises_naming_it(tmp_path):
    missing = tmp_path / "no" / "such" / "folder"
    with pytest.raises(DataFolderError) as info:
        scan_folder(missing)
    assert str(missing) in str(info.value)
    a_file = tmp_path / "file.jpg"
    a_file.write_bytes(b"x")
    with pytest.raises(DataFolderError, match="not a folder"):
        scan_folder(a_file)


# --------------------------------------------------------------------------
# The odd folder


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    root = tmp_path_factory.mktemp("odd")
    expected = make_odd_folder(root)
    report = scan_with_deadline(root)
    return root, expected, report


EXPECTED_REASONS = {
    "empty.jpg": "empty file (0 bytes)",
    "truncated.jpg": "unreadable or truncated image",
    "text.jpg": "not an image (text file named .jpg)",
    "notes.txt": "not an image file type",
    "huge.png": "too large to decode safely (12000×12000)",
    "loop": "symlink loop / broken link",
    "root_loop": "symlink loop / broken link",
    "broken_link.jpg": "symlink loop / broken link",
}


def test_odd_folder_reports_every_skipped_file_with_its_reason(odd):
    root, expected, report = odd
    reasons = {Path(s.path).name: s.reason for s in report.skipped}
    for name, outcome in expected.items():
        if outcome == SKIPPED:
            assert reasons.get(name) == EXPECTED_REASONS[name], name
    assert all(os.path.isabs(s.path) for s in report.skipped)
    # What computers make by themselves is not "left out": ignored, counted, never used.
    ignored = [Path(p).name for p in report.ignored]
    assert sorted(ignored) == sorted(name for name, outcome in expected.items() if outcome == IGNORED)
    assert not set(ignored) & set(reasons)
    assert not set(report.ignored) & {p for p, _ in report.train + report.val}
    # Files inside __MACOSX are not counted one by one: the folder is, once.
    assert "._copy.jpg" not in reasons and "._copy.jpg" not in ignored
    # The warning counts the real problems only.
    n_problems = sum(outcome == SKIPPED for outcome in expected.values())
    assert f"{n_problems} files were skipped" in " ".join(report.warnings)
    assert len(report.skipped) == n_problems
    # The loop was reported, not walked: no photo is listed twice.
    used = [p for p, _ in report.train + report.val]
    assert len(used) == len(set(used))
    assert not any("/loop/" in p for p in used)


def test_odd_folder_uses_the_unusual_but_good_images(odd):
    root, expected, report = odd
    used = {Path(p).name: report.classes[label] for p, label in report.train + report.val}
    for name, outcome in expected.items():
        if outcome == USED:
            assert name in used, name
    assert used["nested.jpg"] == "shoes"  # images in nested folders belong to the class
    assert report.classes == ["hat", "shoes"]
    assert report.empty_classes == ["empty_class"]
    assert report.counts["hat"]["train"] + report.counts["hat"]["val"] == 12
    assert report.counts["shoes"]["train"] + report.counts["shoes"]["val"] == 12 + 9
    assert report.can_train
    assert report.image_sizes["min"] == [24, 16]
    assert any("tiny" in w for w in report.warnings)
    assert any("empty_class" in w for w in report.warnings)


def test_odd_folder_report_text_and_round_trip(odd):
    root, expected, report = odd
    text = report.format_text()
    for line in ("empty_class", "empty file (0 bytes)", "symlink loop / broken link", "Warnings"):
        assert line in text
    assert f"Ignored {len(report.ignored)} hidden or system files that computers make by themselves (" in text
    assert ".DS_Store" not in text.split("Ignored")[0]  # not among the skipped files
    assert "\r" not in text  # Icon\r, a Mac folder icon, is shown without its carriage return
    data = json.loads(json.dumps(report.to_dict()))
    assert data["can_train"] is True and data["num_images"] == report.num_images
    again = ScanReport.from_dict(data)
    assert again == report
    assert isinstance(again.train[0], tuple) and again.to_dict() == report.to_dict()


def test_exif_rotated_size_is_reported_after_rotation(odd):
    root, _, report = odd
    path = root / "shoes" / "exif_rotated.jpg"
    with Image.open(path) as raw:
        stored = raw.size
    assert stored[0] > stored[1]
    rotated = open_rgb(path)
    assert rotated.size == (stored[1], stored[0])


def test_odd_modes_become_sensible_rgb(odd):
    root, _, _ = odd
    shoes = root / "shoes"
    grey_mean = ImageStat.Stat(Image.open(shoes / "grey.jpg")).mean[0]
    for name in ("cmyk.jpg", "sixteen_bit.png", "palette.png", "rgba.png", "grey.jpg", "bilevel.png", "tiny.png"):
        img = open_rgb(shoes / name)
        assert img.mode == "RGB", name
        lo_hi = img.getextrema()
        assert all(hi > lo for lo, hi in lo_hi), f"{name} is a flat colour"

    with Image.open(shoes / "sixteen_bit.png") as raw:
        assert raw.mode.startswith("I")
    sixteen = open_rgb(shoes / "sixteen_bit.png")
    # Scaled from 16 to 8 bits, not clipped: the same brightness as the
    # 8-bit grey it was made from (which PIL's plain convert turns white).
    assert abs(ImageStat.Stat(sixteen).mean[0] - grey_mean) < 3

    rgba = open_rgb(shoes / "rgba.png")
    assert rgba.getpixel((2, 2)) == (255, 255, 255)  # transparent over black -> white
    assert rgba.getpixel((rgba.width - 3, rgba.height // 2)) != (255, 255, 255)

    palette = open_rgb(shoes / "palette.png")
    assert palette.getpixel((5, 5)) == (255, 255, 255)  # transparent palette entry

    # CMYK converts back close to the photo it was made from (compared where
    # the palette copy keeps the photo: outside its transparent corner).
    outside_corner = (64, 64, palette.width, palette.height)
    cmyk = ImageStat.Stat(open_rgb(shoes / "cmyk.jpg").crop(outside_corner)).mean
    palette_mean = ImageStat.Stat(palette.crop(outside_corner)).mean
    assert all(abs(a - b) < 15 for a, b in zip(cmyk, palette_mean))


def test_open_rgb_draft_keeps_the_shorter_side(hymenoptera):
    big = max(
        (hymenoptera / "train" / "bees").glob("*.jpg"),
        key=lambda p: p.stat().st_size,
    )
    full = open_rgb(big)
    small = open_rgb(big, max_side=224)
    assert min(small.size) >= 224
    assert small.size[0] < full.size[0]
    assert small.mode == "RGB"


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_open_rgb_raises_on_bad_files(odd):
    root, _, _ = odd
    for name in ("truncated.jpg", "text.jpg", "empty.jpg", "huge.png"):
        with pytest.raises(Exception):  # noqa: B017 - each kind of damage raises its own PIL/OS error
            open_rgb(root / "hat" / name)


# --------------------------------------------------------------------------
# Transforms, Dataset, collate


def test_transforms_give_normalised_tensors(small_data):
    img = open_rgb(sorted((small_data / "val" / "hat").glob("*.jpg"))[0])
    eval_tf = make_transform(224, 256, IMAGENET_MEAN, IMAGENET_STD)
    x = eval_tf(img)
    assert type(x) is torch.Tensor and x.shape == (3, 224, 224) and x.dtype == torch.float32
    assert -3 < x.mean().item() < 3 and x.min() < 0 < x.max()
    assert torch.equal(x, eval_tf(img))  # deterministic
    # Augmentation only applies to training.
    assert torch.equal(x, make_transform(224, 256, IMAGENET_MEAN, IMAGENET_STD, "strong", train=False)(img))
    torch.manual_seed(0)
    for preset in ("light", "strong"):
        tf = make_transform(160, 182, IMAGENET_MEAN, IMAGENET_STD, preset, train=True)
        a, b = tf(img), tf(img)
        assert a.shape == b.shape == (3, 160, 160)
        assert not torch.equal(a, b)
    with pytest.raises(ValueError):
        make_transform(224, 256, IMAGENET_MEAN, IMAGENET_STD, "extreme", train=True)


def test_dataset_survives_a_file_deleted_after_the_scan(small_data, tmp_path):
    copy_photos(small_data / "train" / "hat", tmp_path / "hat", 3)
    copy_photos(small_data / "train" / "shoes", tmp_path / "shoes", 3)
    report = scan_with_deadline(tmp_path, val_fraction=0.34)
    samples = report.train + report.val
    gone_index = 1
    os.remove(samples[gone_index][0])

    dataset = ImageDataset(samples, make_transform(64, 72, IMAGENET_MEAN, IMAGENET_STD), max_side=72)
    assert len(dataset) == 6
    image, label, index = dataset[gone_index]
    assert image is None and label == samples[gone_index][1] and index == gone_index

    images, labels, indices, failed = collate_skip_broken([dataset[i] for i in range(len(dataset))])
    assert images.shape == (5, 3, 64, 64)
    assert labels.tolist() == [samples[i][1] for i in range(6) if i != gone_index]
    assert indices.tolist() == [i for i in range(6) if i != gone_index]
    assert failed == [gone_index]

    images, labels, indices, failed = collate_skip_broken([dataset[gone_index]])
    assert images.numel() == 0 and labels.shape == (0,) and indices.shape == (0,)
    assert failed == [gone_index]

    # The same through a real DataLoader.
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, collate_fn=collate_skip_broken)
    seen, failures = 0, []
    for _images, labels, _indices, failed in loader:
        seen += len(labels)
        failures += failed
    assert seen == 5 and failures == [gone_index]
