"""Export and batch use: the zip reloads in torch and onnxruntime and predicts
what the app predicts; batch prediction writes a CSV row per image."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from core import cli
from core.evaluation import CSV_COLUMNS, load_run_model, predict_images
from core.images import open_rgb
from core.runs import open_run

EXPECTED_FILES = {
    "model.ts",
    "model.onnx",
    "classes.json",
    "preprocessing.json",
    "MODEL_CARD.md",
    "confusion.png",
    "predict.py",
    "export_check.json",
}


@pytest.fixture(scope="module")
def run_dir(fine_tuned_run):
    return fine_tuned_run


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    """`python -m core export RUN_DIR --out DIR`, in-process; returns the unzipped folder."""
    out = tmp_path_factory.mktemp("export")
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert cli.main(["export", str(run_dir), "--out", str(out / "zips")]) == 0
    zip_path = Path(buffer.getvalue().strip().splitlines()[-1])
    assert zip_path == out / "zips" / f"{Path(run_dir).name}.zip" and zip_path.is_file()
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        zf.extractall(out / "unzipped")
    return {"zip": zip_path, "names": names, "folder": out / "unzipped" / Path(run_dir).name}


def test_zip_holds_everything_in_one_folder(exported, run_dir):
    name = Path(run_dir).name
    assert {n.split("/", 1)[0] for n in exported["names"]} == {name}
    assert {n.split("/", 1)[1] for n in exported["names"]} == EXPECTED_FILES
    # Only the zip is left in the output folder: no half-written temporaries.
    assert [p.name for p in exported["zip"].parent.iterdir()] == [exported["zip"].name]


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_exports_predict_like_the_app_on_real_val_images(exported, run_dir):
    folder = exported["folder"]
    loaded = load_run_model(run_dir)
    assert json.loads((folder / "classes.json").read_text()) == loaded.classes == ["ants", "bees"]
    prep = json.loads((folder / "preprocessing.json").read_text())
    assert prep["image_size"] == 224 and prep["resize_size"] == loaded.resize_size
    assert prep["mean"] == pytest.approx([0.485, 0.456, 0.406]) and prep["std"] == pytest.approx([0.229, 0.224, 0.225])

    val = open_run(run_dir).scan["val"]
    x = torch.stack([loaded.transform(open_rgb(p, max_side=loaded.resize_size)) for p, _ in val])
    with torch.no_grad():
        expected = loaded.model(x).softmax(1).numpy()

    scripted = torch.jit.load(str(folder / "model.ts"))
    with torch.no_grad():
        got_ts = scripted(x).numpy()
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == "image"
    got_onnx = session.run(["probabilities"], {"image": x.numpy()})[0]  # the whole val set in one batch

    for got in (got_ts, got_onnx):
        assert got.shape == (len(val), 2)
        assert np.array_equal(got.argmax(1), expected.argmax(1))
        np.testing.assert_allclose(got, expected, atol=1e-4)

    check = json.loads((folder / "export_check.json").read_text())
    assert check["torchscript"]["same_top_class"] and check["onnx"]["same_top_class"]
    assert check["onnx"]["max_abs_difference"] < 1e-4


def test_model_card_tells_what_a_teacher_needs(exported, run_dir):
    card = (exported["folder"] / "MODEL_CARD.md").read_text()
    ev = open_run(run_dir).evaluation
    assert "MobileNetV2" in card and "mobilenet_v2" in card
    assert "| ants | 30 | 20 |" in card and "| bees | 30 | 20 |" in card  # data and counts per class
    # Blocks and strategy in the words the app uses, the code names beside them for whoever loads the weights.
    assert "**The last block learns too** (last-1 fine-tune, `last-1`)" in card
    assert "Trained blocks: Final layer, New head." in card
    assert "Frozen blocks: Stem, Stage 1, Stage 2, Stage 3, Stage 4." in card
    assert "| Stage 3 (`stage3`) |" in card
    assert f"Accuracy: **{100 * ev['accuracy']:.1f}%**" in card
    assert f"Macro F1: **{ev['macro_f1']:.3f}**" in card
    assert "![confusion matrix](confusion.png)" in card
    assert "## Limits" in card and "only knows these 2 classes" in card
    assert "adamw" in card and "| epochs | 2 done of 2" in card
    with Image.open(exported["folder"] / "confusion.png") as img:
        assert img.format == "PNG" and img.width >= 150 and img.height >= 150


def test_standalone_predict_py_agrees_with_the_app(exported, run_dir):
    """The example in the zip runs on its own (onnxruntime, Pillow, NumPy)."""
    loaded = load_run_model(run_dir)
    images = [p for p, _ in open_run(run_dir).scan["val"][::10]]
    done = subprocess.run(
        [sys.executable, "predict.py", *images], cwd=exported["folder"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == len(images)
    for line, app in zip(lines, predict_images(loaded, images)):
        assert line.startswith(app["path"] + ": " + app["top"][0][0] + " ")


def test_standalone_predict_py_reads_folders_and_goes_on_past_a_bad_file(exported, run_dir, tmp_path):
    """`python predict.py FOLDER`: every picture inside it; a damaged file, a
    text file and a missing one are named on stderr and the others answered."""
    folder = tmp_path / "to-sort"
    (folder / "inner").mkdir(parents=True)
    good = [p for p, _ in open_run(run_dir).scan["val"][:3]]
    for i, path in enumerate(good):
        (folder / ("inner" if i else "") / f"{i}.jpg").write_bytes(Path(path).read_bytes())
    (folder / "broken.jpg").write_bytes(Path(good[0]).read_bytes()[:300])  # cut short
    (folder / "notes.txt").write_text("not a picture")
    done = subprocess.run(
        [sys.executable, "predict.py", str(folder), str(tmp_path / "missing.jpg")],
        cwd=exported["folder"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    answered = sorted(line.split(": ")[0] for line in done.stdout.strip().splitlines())
    assert answered == sorted(str(folder / ("inner" if i else "") / f"{i}.jpg") for i in range(3))
    assert "broken.jpg: skipped, not a readable picture" in done.stderr
    assert "missing.jpg: skipped" in done.stderr and "Traceback" not in done.stderr
    assert "notes.txt" not in done.stdout + done.stderr  # not a picture's name: not read

    nothing = subprocess.run(
        [sys.executable, "predict.py", str(folder / "broken.jpg")], cwd=exported["folder"], capture_output=True
    )
    assert nothing.returncode == 1  # nothing could be answered


def test_predict_folder_to_csv_from_the_command_line(run_dir, tmp_path):
    folder = tmp_path / "to-sort"
    val = open_run(run_dir).scan["val"]
    for i, (path, _) in enumerate(val[:12]):
        sub = folder / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        Path(sub / Path(path).name).write_bytes(Path(path).read_bytes())
    (folder / "b" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out" / "predictions.csv"

    assert cli.main(["predict", str(run_dir), str(folder), "--csv", str(out), "--top-k", "2"]) == 0
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0].keys()) == CSV_COLUMNS == ["file", "top_class", "confidence", "top_k", "error"]
    assert len(rows) == 13  # one per image file, the broken one included
    by_file = {r["file"]: r for r in rows}
    assert by_file["b/broken.jpg"]["error"] and not by_file["b/broken.jpg"]["top_class"]
    # Why, in the words the Data page's list uses: not the name of a Python exception.
    assert by_file["b/broken.jpg"]["error"].startswith("could not read this picture: "), by_file["b/broken.jpg"]
    assert "Error" not in by_file["b/broken.jpg"]["error"]
    loaded = load_run_model(run_dir)
    good = [r for r in rows if not r["error"]]
    app = predict_images(loaded, [folder / r["file"] for r in good], k=2)
    for row, expected in zip(good, app):
        assert row["top_class"] == expected["top"][0][0]
        assert float(row["confidence"]) == pytest.approx(expected["top"][0][1], abs=1e-3)
        names = [part.rsplit(" ", 1)[0] for part in row["top_k"].split("; ")]
        assert names == [c for c, _ in expected["top"]] and len(names) == 2
