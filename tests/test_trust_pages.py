"""Data and results you can trust, through the pages (Streamlit's AppTest) and
the command line: the Data page's check finds planted problems and its Move
and Undo restore the folder byte for byte; the Results page says how sure
its accuracy is, shows the test split apart, checks a new labelled folder
and marks a run whose pictures changed; `evaluate` agrees with
`predict --csv`."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

from core import cli
from core.curation import changes
from core.evaluation import cell_images
from core.held_out import interval_in_words, wilson_interval
from tests.test_app_pages import (  # noqa: F401 - every_run_goes_through_app_py is an autouse fixture
    _app,
    _button,
    _choose_data,
    _goto,
    _ok,
    _texts,
    _wait_for,
    every_run_goes_through_app_py,
)
from tests.test_inspection import _planted
from ui import words

RESULTS, RUNS = "pages/6_results.py", "pages/5_runs.py"


def _fingerprint(root: Path) -> dict[str, str]:
    """Every picture of the folder by path and content (the journal aside)."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".transfer-studio" not in p.parts
    }


def _fix_key(prefix: str, path: Path) -> str:
    from ui.fixes import _key

    return _key(prefix, str(path))


def test_data_page_check_finds_planted_problems_and_move_then_undo_restores_the_folder(
    env, offline_weights, hymenoptera, tmp_path
):
    root = tmp_path / "pictures"
    planted = _planted(hymenoptera, root)
    before = _fingerprint(root)
    at = _choose_data(_app(), root)
    _button(at, "Check my pictures").click().run()
    _ok(at)
    at = _wait_for(at, lambda a: "Check again" in [b.label for b in a.button], timeout=300)
    shown = _texts(at.markdown) + "\n" + _texts(at.caption)
    assert "Leaks between training and checking" in shown
    assert "Pictures that may be in the wrong class" in shown
    assert "Copies" in shown
    assert "The same picture in two classes (1 group)" in shown
    assert planted["conflict"][1] in shown.replace("\\", "")  # its card names it (markdown-escaped)
    assert planted["resized"][1] in shown  # the near-copy in val, shown in its leak group
    suspects = [c for c in at.caption if "→" in str(c.value)]
    assert suspects, "no suspect label shown"
    assert any("flip" in str(c.value) for c in suspects), "a card names its file, so it can be found"
    # A reload (a new session) finds the findings: the check lives in the server, not in the tab.
    again = _choose_data(_app(), root)
    assert "Check again" in [b.label for b in again.button]
    assert "Leaks between training and checking" in _texts(again.markdown)

    # Move one planted flip (a bee filed under ants) to bees, from its card.
    flip = root / planted["flips"][0]
    key = _fix_key("suspect", flip)
    at.selectbox(key=f"{key}_to").set_value("bees").run()
    at.button(key=f"{key}_move").click().run()
    _ok(at)
    assert not flip.exists() and (root / "train" / "bees" / flip.name).exists()
    assert "Moved" in _texts(at.success)
    made = changes(root)
    assert len(made) == 1

    # Undo it from the Changes list: the folder is as it was, byte for byte.
    at.button(key=f"data_changes_undo_{made[0].id}").click().run()
    _ok(at)
    assert _fingerprint(root) == before
    assert changes(root)[0].undone


def test_results_page_says_how_sure_the_accuracy_is(env, with_run):
    evaluation = json.loads((with_run / "eval.json").read_text())
    n = evaluation["count"]
    right = round(evaluation["accuracy"] * n)
    sentence = interval_in_words(evaluation["accuracy"], n, *wilson_interval(right, n))
    at = _goto(_app(), RESULTS)
    assert sentence in _texts(at.markdown)
    assert "95% sure the true accuracy is between" in sentence and f"({n} pictures)" in sentence
    assert "macro F1" in _texts(at.caption)
    assert "On the test pictures" not in _texts(at.subheader)  # no test/ split in this run's folder


def test_results_page_checks_a_new_labelled_folder(env, with_run, small_data, tmp_path):
    folder = tmp_path / "new"
    shutil.copytree(small_data / "val", folder)  # 4 pictures of each of 4 classes
    (folder / "wasps").mkdir()
    shutil.copy(next((small_data / "val" / "hat").glob("*.jpg")), folder / "wasps" / "w.jpg")
    at = _goto(_app(), RESULTS)
    at.text_input(key="held_out_folder").set_value(str(folder)).run()
    at.button(key="held_out_check").click().run()
    _ok(at)
    shown = _texts(at.markdown)
    assert "of the 16** pictures correctly" in shown
    assert "95% sure the true accuracy is between" in shown and "(16 pictures)" in shown
    assert "wasps (1)" in _texts(at.warning)  # a class the model does not know: reported, not counted
    # The pictures shown open on the most common mistake, not on an empty square.
    result = at.session_state["_held_out"]["result"]
    classes, confusion = result["classes"], result["confusion"]
    true, pred = at.selectbox(key="held_true").value, at.selectbox(key="held_pred").value
    mistakes = [n for i, row in enumerate(confusion) for j, n in enumerate(row) if i != j]
    if any(mistakes):
        assert true != pred and confusion[classes.index(true)][classes.index(pred)] == max(mistakes)
    else:
        assert true == pred

    # Its pictures are captioned as the Results page's own galleries (one shared caption): what the model
    # said and how sure, the real class when wrong, and the picture's place in the folder once, below.
    at.selectbox(key="held_pred").set_value("hat").run()
    at.selectbox(key="held_true").set_value("hat").run()
    _ok(at)
    rows = cell_images(at.session_state["_held_out"]["result"], "hat", "hat")
    assert rows and words.square_sentence(len(rows), "hat", "hat") in _texts(at.markdown)
    for row in rows:
        under = f":gray[{words.md_text('hat/' + Path(row['path']).name)}]"  # its place in the checked folder
        (caption,) = [c.value for c in at.caption if under in c.value]
        assert caption == f"{words.answer_caption(row)}  \n{under}"  # the file name once, not twice
    at.selectbox(key="cell_true").set_value("hat").run()
    at.selectbox(key="cell_pred").set_value("hat").run()
    _ok(at)
    main = cell_images(json.loads((with_run / "eval.json").read_text()), "hat", "hat")
    assert main and words.answer_caption(main[0]) in _texts(at.caption)  # the main gallery says it the same way


def test_a_run_trained_before_its_pictures_changed_is_marked(env, with_run):
    from core.curation import move_to_class

    # The run's own copy of its pictures, so the shared folder stays untouched.
    config_path = with_run / "config.json"
    config = json.loads(config_path.read_text())
    data_dir = env / "pictures"
    shutil.copytree(config["data_dir"], data_dir)
    config_path.write_text(json.dumps({**config, "data_dir": str(data_dir)}))

    at = _goto(_app(), RESULTS)
    assert "Trained on older pictures" not in _texts(at.warning)
    picture = sorted((data_dir / "train" / "hat").glob("*.jpg"))[0]
    change = move_to_class(data_dir, str(picture), "pants")
    at = _goto(_app(), RESULTS)
    assert "Trained on older pictures" in _texts(at.warning)
    at = _goto(at, RUNS)
    assert "Trained on older pictures" in _texts(at.warning)

    at = _goto(at, RESULTS)
    at.button(key=f"results_retrain_{with_run.name}").click().run()
    _ok(at)
    assert "Training again on the same settings" in _texts(at.success)
    from ui.resources import manager

    for job in manager().jobs():  # the new run is there; this test need not wait for its training
        job.request_stop()
        job.wait(120)
    retrained = [p for p in (env / "runs").iterdir() if p.is_dir() and p != with_run]
    assert len(retrained) == 1
    assert json.loads((retrained[0] / "config.json").read_text()) == json.loads(config_path.read_text())

    # Undone on the page that made the change ("You can undo it under Changes"): the folder is as the run
    # saw it again, and the marker is gone.
    at = _goto(_app(), RESULTS)
    at.button(key=f"results_changes_undo_{change.id}").click().run()
    _ok(at)
    assert picture.is_file() and "Undone: moved" in _texts(at.success)
    at = _goto(_app(), RESULTS)
    assert "Trained on older pictures" not in _texts(at.warning)


def test_evaluate_agrees_with_predict_csv(with_run, tmp_path, capsys):
    folder = Path(json.loads((with_run / "config.json").read_text())["data_dir"]) / "val"
    out_csv = tmp_path / "out.csv"
    # Both commands in this process (cli.main, as `python -m core` runs them): no interpreter to start
    # for each. A real `python -m core` process is started in tests/test_training.py and test_runs_whole.py.
    assert cli.main(["predict", str(with_run), str(folder), "--csv", str(out_csv)]) == 0
    capsys.readouterr()
    assert cli.main(["evaluate", str(with_run), str(folder), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    with open(out_csv, newline="") as f:
        rows = [r for r in csv.DictReader(f) if not r["error"]]
    assert len(rows) == result["n"] == 16
    agree = sum(Path(r["file"]).parent.name == r["top_class"] for r in rows)
    assert result["accuracy"] == agree / len(rows)
    by_file = {r["file"]: r["top_class"] for r in rows}
    classes = result["classes"]
    confusion = [[0] * len(classes) for _ in classes]
    for file, said in by_file.items():
        confusion[classes.index(Path(file).parent.name)][classes.index(said)] += 1
    assert result["confusion"] == confusion
    low, high = result["ci95"]
    assert (low, high) == wilson_interval(agree, len(rows))


def test_playground_folder_results_offer_the_same_fixes(env, with_run, small_data):
    folder = env / "new-pictures"
    shutil.copytree(small_data / "val", folder)
    for f in sorted((small_data / "train" / "shoes").glob("*.jpg"))[:3]:  # shoes filed under hat
        shutil.copy(f, folder / "hat" / f"flip_{f.name}")
    before = _fingerprint(folder)
    at = _goto(_app(), "pages/4_playground.py")
    at.text_input(key="batch_folder").set_value(str(folder)).run()
    _button(at, "Name them all").click().run()
    _ok(at)
    table = next(d.value for d in at.dataframe if "It looks like" in d.value.columns)
    wrong = [Path(p) for p, said in zip(table["Picture"], table["It looks like"]) if Path(p).parent.name != said]
    assert "Named differently from their folder" in _texts(at.markdown)
    assert any(p.name.startswith("flip_") for p in wrong), "the model took every planted shoe for a hat"
    picture = folder / next(p for p in wrong if p.name.startswith("flip_"))
    key = _fix_key("play_folder", picture)
    at.selectbox(key=f"{key}_to").set_value("shoes").run()
    at.button(key=f"{key}_move").click().run()
    _ok(at)
    assert (folder / "shoes" / picture.name).exists() and not picture.exists()
    (change,) = changes(folder)
    at.button(key=f"play_folder_changes_undo_{change.id}").click().run()
    _ok(at)
    assert _fingerprint(folder) == before
