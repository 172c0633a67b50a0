"""Checking a folder before training (duplicates, leaks, suspect labels,
quality), fixing it by hand with undo, and the interval around an accuracy.

The planted folder is built from real hymenoptera photos: three bees filed
under ants, a resized and re-encoded copy of a training ant in val, a lightly
cropped copy of a training bee in val, an exact copy and a darkened copy."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from core.curation import SET_ASIDE_DIR, changes, move_to_class, set_aside, undo
from core.held_out import wilson_interval
from core.scan import scan_folder
from tests.folders import PACKAGED_BACKBONE


def _planted(src: Path, dst: Path) -> dict:
    for split, n in (("train", 30), ("val", 15)):
        for cls in ("ants", "bees"):
            (dst / split / cls).mkdir(parents=True)
            for f in sorted((src / split / cls).glob("*.jpg"))[:n]:
                shutil.copy(f, dst / split / cls / f.name)
    flips = []
    for f in sorted((src / "train" / "bees").glob("*.jpg"))[40:43]:
        shutil.copy(f, dst / "train" / "ants" / f"flip_{f.name}")
        flips.append(f"train/ants/flip_{f.name}")
    ant = sorted((dst / "train" / "ants").glob("*.jpg"))[0]
    im = Image.open(ant).convert("RGB")
    im.resize((im.width * 2 // 3, im.height * 2 // 3)).save(dst / "val" / "ants" / "resized.jpg", quality=70)
    bee = sorted((dst / "train" / "bees").glob("*.jpg"))[1]
    im = Image.open(bee).convert("RGB")
    w, h = im.size
    im.crop((w // 20, h // 20, w - w // 20, h - h // 20)).save(dst / "val" / "bees" / "cropped.jpg", quality=90)
    twin = sorted((dst / "train" / "bees").glob("*.jpg"))[2]
    shutil.copy(twin, dst / "train" / "bees" / "copy.jpg")
    Image.open(twin).convert("RGB").point(lambda v: v // 12).save(dst / "train" / "bees" / "dark.jpg")
    both = sorted((dst / "train" / "ants").glob("*.jpg"))[3]  # one photo filed as an ant and as a bee
    shutil.copy(both, dst / "train" / "bees" / "ant_in_bees.jpg")
    rel = lambda p: p.relative_to(dst).as_posix()  # noqa: E731
    return {
        "flips": flips,
        "resized": (rel(ant), "val/ants/resized.jpg"),
        "cropped": (rel(bee), "val/bees/cropped.jpg"),
        "copy": (rel(twin), "train/bees/copy.jpg"),
        "conflict": (rel(both), "train/bees/ant_in_bees.jpg"),
    }


@pytest.fixture(scope="module")
def planted(hymenoptera, tmp_path_factory):
    root = tmp_path_factory.mktemp("planted") / "pictures"
    return root, _planted(hymenoptera, root)


def _same_group(groups: list[list[str]], a: str, b: str) -> bool:
    return any(a in g and b in g for g in groups)


def test_inspect_finds_what_was_planted(planted, shared_torch_home, tmp_path, monkeypatch, capsys):
    from core import cli

    root, plan = planted
    monkeypatch.setenv("TORCH_HOME", str(shared_torch_home))
    monkeypatch.setenv("TRANSFER_STUDIO_CACHE", str(tmp_path / "cache"))
    # `inspect` in this process (cli.main, as `python -m core` runs it): no interpreter to start.
    code = cli.main(["inspect", str(root), "--backbone", "mobilenet_v2", "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    found = json.loads(out.out.strip().splitlines()[-1])
    assert set(found) >= {"duplicates", "conflicts", "leaks", "suspect_labels", "quality"}
    assert _same_group(found["duplicates"], *plan["copy"])
    for pair in (plan["resized"], plan["cropped"]):
        assert _same_group(found["duplicates"], *pair)
        assert _same_group(found["leaks"], *pair)
    assert not any(plan["copy"][0] in g for g in found["leaks"])  # both copies are in train: no leak
    suspects = [s["path"] for s in found["suspect_labels"]]
    # One picture in two classes: said as such, and neither copy is called a wrong label (the ant's
    # copy in bees made the label check doubt the real ant too) nor a leak.
    assert _same_group(found["conflicts"], *plan["conflict"]) and len(found["conflicts"]) == 1
    assert not set(plan["conflict"]) & set(suspects)
    assert not any(plan["conflict"][0] in g for g in found["leaks"])
    # Every planted flip is found, among the most suspicious few of 98 pictures.
    assert set(plan["flips"]) <= set(suspects[:10]), suspects
    flip = next(s for s in found["suspect_labels"] if s["path"] == plan["flips"][0])
    assert flip["given"] == "ants" and flip["suggested"] == "bees" and 0.5 < flip["confidence"] <= 1
    assert {"path": "train/bees/dark.jpg", "problem": "too dark"} in found["quality"]


def test_two_blank_pictures_are_not_called_copies(small_data, tmp_path, monkeypatch):
    """A white frame and a small black square hash alike (pHash sets almost
    no bit of a picture without detail, whatever its colour): they were
    reported as "the same picture" across the splits. Real copies still are."""
    from core.inspection import inspect_folder

    monkeypatch.setenv("TRANSFER_STUDIO_CACHE", str(tmp_path / "cache"))
    root = shutil.copytree(small_data, tmp_path / "pictures")
    Image.new("RGB", (300, 300), (255, 255, 255)).save(root / "train" / "hat" / "blank_white.jpg")
    Image.new("RGB", (40, 40), (0, 0, 0)).save(root / "val" / "shoes" / "blank_black.png")
    hat = sorted((root / "train" / "hat").glob("*.jpg"))[0]
    shutil.copy(hat, root / "val" / "hat" / "again.jpg")
    report = inspect_folder(str(root), PACKAGED_BACKBONE, device="cpu")
    groups = report.to_dict()["duplicates"]
    assert not _same_group(groups, "train/hat/blank_white.jpg", "val/shoes/blank_black.png"), groups
    assert _same_group(groups, hat.relative_to(root).as_posix(), "val/hat/again.jpg")


def test_pictures_removed_during_the_check_are_listed_and_the_rest_checked(small_data, tmp_path, monkeypatch):
    # A person tidies the folder in the file manager while the check runs.
    from core.inspection import inspect_folder

    monkeypatch.setenv("TRANSFER_STUDIO_CACHE", str(tmp_path / "cache"))
    root = shutil.copytree(small_data, tmp_path / "pictures")
    hat = sorted((root / "train" / "hat").glob("*.jpg"))[0]
    shutil.copy(hat, root / "val" / "hat" / "again.jpg")
    gone = [sorted((root / "train" / "shoes").glob("*.jpg"))[-1], sorted((root / "val" / "pants").glob("*.jpg"))[-1]]

    def progress(phase, done, _total):
        if phase == "Looking at each picture" and done == 1:
            for path in gone:
                path.unlink()

    report = inspect_folder(str(root), PACKAGED_BACKBONE, device="cpu", progress=progress).to_dict()
    removed = {row["path"]: row["problem"] for row in report["quality"] if row["problem"].startswith("could not")}
    assert removed == {
        p.relative_to(root).as_posix(): "could not be read: file disappeared while the folder was being checked"
        for p in gone
    }
    assert _same_group(report["duplicates"], hat.relative_to(root).as_posix(), "val/hat/again.jpg")
    assert not any(p.relative_to(root).as_posix() in g for g in report["duplicates"] for p in gone)


def _digest(root: Path) -> dict:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".transfer-studio" not in p.parts
    }


def test_move_and_set_aside_then_undo_restore_the_folder_byte_for_byte(hymenoptera, tmp_path):
    root = tmp_path / "pictures"
    shutil.copytree(hymenoptera / "val", root)
    before = _digest(root)
    bee = sorted((root / "bees").glob("*.jpg"))[0].relative_to(root).as_posix()
    ant = sorted((root / "ants").glob("*.jpg"))[0].relative_to(root).as_posix()
    moved = move_to_class(root, bee, "ants")
    aside = set_aside(root, ant)
    assert (root / moved.target).parent.name == "ants" and not (root / bee).exists()
    assert (root / SET_ASIDE_DIR / ant).is_file()
    report = scan_folder(root)
    paths = {Path(p).relative_to(root).as_posix() for p, _ in report.train + report.val}
    assert ant not in paths and moved.target in paths  # the scan ignores set-aside pictures
    assert report.skipped == []  # and the app's own folders (.set-aside, the journal) are not "left out"
    assert [c.id for c in changes(root)] == [aside.id, moved.id]
    undo(root, aside.id)
    undo(root, moved.id)
    assert _digest(root) == {k: v for k, v in before.items()}
    assert scan_folder(root).skipped == []
    assert all(c.undone for c in changes(root))


def test_curation_stays_inside_the_folder(hymenoptera, tmp_path):
    from core.curation import CurationError

    root = tmp_path / "pictures"
    shutil.copytree(hymenoptera / "val", root)
    outside = tmp_path / "elsewhere.jpg"
    outside.write_bytes(b"x")
    with pytest.raises(CurationError):
        set_aside(root, str(outside))
    with pytest.raises(CurationError):
        set_aside(root, "../elsewhere.jpg")
    ant = sorted((root / "ants").glob("*.jpg"))[0].relative_to(root).as_posix()
    with pytest.raises(CurationError):
        move_to_class(root, ant, "../../escape")
    assert outside.read_bytes() == b"x"


def test_wilson_interval_matches_known_values():
    low, high = wilson_interval(144, 153)  # 94 % of 153 pictures
    assert low == pytest.approx(0.8918, abs=1e-3) and high == pytest.approx(0.9686, abs=1e-3)
    low, high = wilson_interval(10, 10)
    assert high == pytest.approx(1.0) and low == pytest.approx(0.7225, abs=1e-3)
    assert wilson_interval(0, 0) == (0.0, 1.0)
