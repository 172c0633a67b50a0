"""A folder with test/ beside train/ and val/: the test pictures stay out of
training and the choice of the best epoch, and are scored once, at the end.

How "never read before the end" is checked: Python's audit hooks (PEP 578)
see every file the process opens (PIL opens pictures through Python's
open()). The hook notes, for each opening of a test picture, whether the run
had already written scan.json (the scan, which verifies every picture, is
over) and eval.json (the best epoch is chosen and scored on val). A test
picture opened after the scan but before eval.json would be a test picture
read by the decoded cache, the feature pass or the epochs. The run reads
pictures with threads (num_workers=0, also on a GPU), so every read is in
this process, where the hook sees it. Without the end-of-run step, no test_eval.json and no
test_accuracy: the test fails.
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
from pathlib import Path

import pytest

from core.scan_report import ScanReport
from tests.folders import PACKAGED_BACKBONE, PHOTOS, small_copy
from tests.test_app_pages import _app, _goto, _texts, every_run_goes_through_app_py  # noqa: F401 - autouse
from ui import charts

_opened: list[tuple[str, bool, bool]] = []
_watch: dict = {"runs": None, "test_dir": None}
_lock = threading.Lock()


def _audit(event: str, args) -> None:
    if event != "open" or _watch["test_dir"] is None or not isinstance(args[0], str):
        return
    path = args[0]
    if not path.startswith(_watch["test_dir"]):
        return
    runs = Path(_watch["runs"])
    scanned = any(runs.glob("*/scan.json"))
    evaluated = any(runs.glob("*/eval.json"))
    with _lock:
        _opened.append((path, scanned, evaluated))


sys.addaudithook(_audit)  # hooks cannot be removed; it does nothing unless _watch is set


@pytest.fixture(scope="module")
def with_test_split(tmp_path_factory) -> Path:
    """The repository's photos: 10 + 2 of each of 4 classes in train/ and val/,
    and the other 2 of each class's val photos in test/."""
    root = small_copy(PHOTOS, tmp_path_factory.mktemp("split") / "pictures", train=10, val=2)
    for class_dir in sorted(p for p in (PHOTOS / "val").iterdir() if p.is_dir()):
        (root / "test" / class_dir.name).mkdir(parents=True)
        for f in sorted(class_dir.glob("*.jpg"))[2:4]:
            shutil.copy(f, root / "test" / class_dir.name / f.name)
    return root


def test_test_pictures_are_read_only_after_the_best_epoch_is_chosen(with_test_split, env, tmp_path):
    from core.config import TrainConfig
    from core.jobs import train_blocking

    runs = env / "runs"  # the app's runs folder: the Results page shows this run below
    runs.mkdir()
    config = TrainConfig(
        data_dir=str(with_test_split),
        backbone=PACKAGED_BACKBONE,
        strategy="linear",
        epochs=2,
        num_workers=0,
        cache_dir=str(tmp_path / "cache"),
    )
    _opened.clear()
    _watch.update(runs=str(runs), test_dir=str(with_test_split / "test"))
    try:
        job, run = train_blocking(config, runs_dir=runs)
    finally:
        _watch.update(runs=None, test_dir=None)
    assert job.state == "finished", job.snapshot()["reason"]

    during_training = [p for p, scanned, evaluated in _opened if scanned and not evaluated]
    assert during_training == [], f"test pictures read while training: {during_training}"
    at_the_end = {p for p, scanned, evaluated in _opened if evaluated}
    assert len(at_the_end) == 8  # each test picture, once the best epoch was chosen

    status = json.loads((run.path / "status.json").read_text())
    assert status["decoded_images"].get("images") in (None, 4 * 10 + 4 * 2)  # train + val only
    test_eval = json.loads((run.path / "test_eval.json").read_text())
    assert test_eval["n"] == 8 and len(test_eval["predictions"]) == 8
    assert {Path(r["path"]).parent.parent.name for r in test_eval["predictions"]} == {"test"}
    low, high = test_eval["ci95"]
    assert 0 <= low <= test_eval["accuracy"] <= high <= 1
    assert "95% sure" in test_eval["words"]
    eval_val = json.loads((run.path / "eval.json").read_text())
    assert all("/test/" not in r["path"] for r in eval_val["predictions"])
    result = job.snapshot()["result"]
    assert result["test_accuracy"] == test_eval["accuracy"] and result["test_ci95"] == [low, high]
    assert status["test_accuracy"] == test_eval["accuracy"]

    # The Results page shows the test pictures apart from validation.
    at = _goto(_app(), "pages/6_results.py")
    assert "On the test pictures" in _texts(at.subheader)
    assert f"of the {test_eval['n']}** test pictures correctly" in _texts(at.markdown)
    assert test_eval["words"] in _texts(at.markdown)
    # Each table says which pictures its Pictures column counts (the test one said "Validation pictures").
    helps = [json.loads(table.proto.columns)["Pictures"]["help"] for table in at.dataframe[:2]]
    assert helps == ["Validation pictures of this class.", "Test pictures of this class (the test/ folder)."]


def test_the_data_page_counts_the_test_pictures_apart(with_test_split, env):
    """Before: '72 pictures (40 to learn from, 8 to check with)' left 24 unexplained."""
    at = _goto(_app(), "pages/1_data.py")
    at.text_input(key="data_dir_input").set_value(str(with_test_split)).run()
    assert not at.exception
    assert "(40 to learn from, 8 to check the model with, 8 kept apart for one final test)" in _texts(at.success)
    assert "test/ kept apart: scored once, at the end of each training" in _texts(at.markdown)
    bars = {
        trace.name: sum(trace.y)
        for trace in charts.class_counts_figure(ScanReport.from_dict(at.session_state["_scan"]["report"])).data
    }
    assert bars == {"for training": 40, "for checking (validation)": 8, "for the final test": 8}
    # and `python -m core scan`'s text, which counted train / validation only
    text = ScanReport.from_dict(at.session_state["_scan"]["report"]).format_text()
    assert "Test: 8 images kept apart, to score the best model once after training" in text


def test_train_command_line_reports_test_accuracy(with_test_split, env, tmp_path, monkeypatch, capsys):
    from core import cli

    # `train` in this process (cli.main, as `python -m core` runs it; tests/test_training.py starts a
    # real one), on small pictures: only the report is checked here, not how well it learns.
    monkeypatch.setenv("TRANSFER_STUDIO_CACHE", str(tmp_path / "cache"))
    code = cli.main(
        ["train", str(with_test_split), "--backbone", PACKAGED_BACKBONE, "--strategy", "linear", "--epochs", "1"]
        + ["--image-size", "64", "--runs-dir", str(tmp_path / "runs")]
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    final = json.loads(out.out.strip().splitlines()[-1])
    assert 0 <= final["test_accuracy"] <= 1 and final["test_n"] == 8
    low, high = final["test_ci95"]
    assert low <= final["test_accuracy"] <= high


def test_the_model_card_gives_the_test_pictures_and_their_score(with_test_split, trained_run):
    """Before: the exported card said '40 training images and 8 validation images (the split came from its
    train/ and val/ folders)' and gave only the validation accuracy, while the Results page showed the test
    split's score apart: the 8 test pictures, and the one honest number, were missing from the export."""
    from core.evaluation import load_run_model
    from core.model_card import model_card

    run_dir = trained_run(with_test_split, backbone=PACKAGED_BACKBONE, strategy="linear", epochs=1, image_size=64)
    test_eval = json.loads((run_dir / "test_eval.json").read_text())
    card = model_card(load_run_model(run_dir), run_dir)

    assert "40 training images, 8 validation images and 8 test images" in card
    assert "train/, val/ and test/ folders" in card
    assert "| class | training images | validation images | test images |" in card
    assert "| hat | 10 | 2 | 2 |" in card
    test_part = card[card.index("### On the test images") :]
    assert f"On the {test_eval['n']} test images" in test_part
    right = sum(r["correct"] for r in test_eval["predictions"])
    assert f"**{100 * test_eval['accuracy']:.1f}%** ({right} of {test_eval['n']})" in test_part
    assert test_eval["words"] in test_part
    assert "measured on only 8 validation images and 8 test images" in card
