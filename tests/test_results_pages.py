"""The Results and Compare pages, and the Playground's Grad-CAM and folder
prediction, through Streamlit's AppTest on real photos with a really trained
model (the same pattern as tests/test_app_pages.py, whose helpers these reuse).
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import zipfile
from pathlib import Path

from tests.folders import PHOTO_CLASSES, small_copy
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
from ui import words

MODEL, PLAYGROUND, RUNS, RESULTS, COMPARE = (
    "pages/2_model.py",
    "pages/4_playground.py",
    "pages/5_runs.py",
    "pages/6_results.py",
    "pages/7_compare.py",
)


def _images(at) -> int:
    """How many pictures the page shows."""
    return sum(len(e.value) for e in at.get("image"))


def _image_captions(at) -> str:
    return "\n".join(c for e in at.get("image") for c in e.captions)


def _toggle(at, key: str, value: bool = True):
    at.toggle(key=key).set_value(value).run()
    _ok(at)
    return at


# --- Results ---------------------------------------------------------------------------


def test_results_page_table_cells_grad_cam_map_and_export(env, with_run):
    evaluation = json.loads((with_run / "eval.json").read_text())
    at = _goto(_app(), RESULTS)
    assert at.selectbox(key="results_run").value == with_run.name
    right = round(evaluation["accuracy"] * evaluation["count"])
    assert f"It named **{right} of the {evaluation['count']}** validation pictures" in _texts(at.markdown)
    assert "frozen blocks ran once" in _texts(at.caption)  # a linear probe ran on stored features
    table = at.dataframe[0].value
    assert list(table["Class"]) == list(PHOTO_CLASSES)
    assert list(table["Pictures"]) == [4, 4, 4, 4]
    assert at.get("plotly_chart"), "no confusion matrix"

    # Choose a square with the keyboard-friendly choosers: its pictures appear.
    for true, pred in (("shoes", "shoes"), ("hat", "shoes")):
        at.selectbox(key="cell_true").set_value(true).run()
        at.selectbox(key="cell_pred").set_value(pred).run()
        _ok(at)
        n = evaluation["confusion"][evaluation["classes"].index(true)][evaluation["classes"].index(pred)]
        said = "got right" if true == pred else f"took for **{pred}**"
        assert f"**{n} picture{'s' if n != 1 else ''}** of **{true}** the model {said}" in _texts(at.markdown)
        # The square's pictures, the 12 hardest below, and the 3 of "look closer".
        assert _images(at) == n + 12 + 3
        # Each names where it is in the folder (several classes hold a 0.jpg), not only its file name.
        assert ":gray[val/shoes/" in _texts(at.caption) or n == 0
    at.selectbox(key="cell_true").set_value("shoes").run()  # back to the shoes it got right
    _ok(at)

    # Where did it look: Grad-CAM overlays in place of the thumbnails.
    assert "where the model looked" not in _texts(at.caption)
    before = _images(at)
    _toggle(at, "cam_cell")
    assert "where the model looked" in _texts(at.caption)
    assert _images(at) == before
    _toggle(at, "cam_hard")
    at.radio(key="cam_target").set_value("real").run()
    _ok(at)
    assert _images(at) == before

    # Look closer: the picture, its heat map and both together.
    captions = _image_captions(at)
    assert "What the model saw" in captions and "Where it looked" in captions and "Both together" in captions

    # The embedding map: two scatter plots once asked for.
    charts = len(at.get("plotly_chart"))
    _button(at, "Draw the map").click().run()
    _ok(at)
    assert len(at.get("plotly_chart")) == charts + 2
    assert "lie nearest the centre of their own class" in _texts(at.caption)
    assert "only the new head" in _texts(at.info)  # a linear probe: both pictures are the same

    # Export: a zip with ONNX, TorchScript and a model card, offered as a download.
    assert not at.get("download_button")
    _button(at, "Export").click().run()
    _ok(at)
    (download,) = at.get("download_button")
    assert ".zip" in download.proto.label
    (zip_path,) = (with_run / "export").glob("*.zip")
    with zipfile.ZipFile(zip_path) as zf:
        names = {Path(n).name for n in zf.namelist()}
    assert {"model.onnx", "model.ts", "MODEL_CARD.md", "classes.json", "preprocessing.json"} <= names
    # Coming back later, the zip is still there to download without exporting again.
    again = _goto(_app(), RESULTS)
    assert again.get("download_button")
    assert [b for b in again.button if b.label == "Export again"]


def test_results_page_follows_a_link_and_explains_no_runs(env, with_run):
    at = _goto(_app(), RUNS)
    links = [e.proto for e in at.get("page_link")]
    assert any(
        link.label == "See the results" and link.page == "results" and link.query_string == f"run={with_run.name}"
        for link in links
    )

    # A second run, newer: the page opens on it, a link opens the older one.
    newer = with_run.parent / f"{with_run.name}-b"
    shutil.copytree(with_run, newer)
    at = _goto(_app(), RESULTS)
    assert at.selectbox(key="results_run").value == newer.name
    at.query_params["run"] = with_run.name
    at.run()
    assert at.selectbox(key="results_run").value == with_run.name
    at.selectbox(key="results_run").set_value(newer.name).run()
    assert at.query_params["run"] == newer.name  # the address follows the choice
    at.query_params["run"] = with_run.name  # and following a link to the other one again still works
    at.run()
    assert at.selectbox(key="results_run").value == with_run.name
    assert "not in the runs folder any more" not in _texts(at.info)
    at.query_params["run"] = "20250101-000000-deleted-since"  # a bookmark of a run deleted since: said, not hidden
    at.run()
    assert "deleted-since is not in the runs folder any more" in _texts(at.info)
    assert at.selectbox(key="results_run").value == with_run.name
    at.run()  # said once: the address now follows the run shown
    assert "not in the runs folder any more" not in _texts(at.info)
    at = _goto(_app(), RUNS)  # the Runs page's own picker says so too
    at.query_params["run"] = "20250101-000000-deleted-since"
    at.run()
    assert "deleted-since is not in the runs folder any more" in _texts(at.info)
    assert at.selectbox(key="open_run").value == newer.name
    at.selectbox(key="open_run").set_value(with_run.name).run()
    assert at.query_params["run"] == with_run.name  # a reload keeps the run opened
    shutil.rmtree(newer)

    shutil.rmtree(with_run)
    at = _goto(_app(), RESULTS)
    assert "no trained model yet" in _texts(at.info)


def _a_stopped_run(env, small_data) -> tuple[Path, int]:
    """A real run stopped by its user once an epoch is saved: a full fine-tune of 12 epochs on
    4 + 2 photos a class (each epoch takes seconds here). Returns its folder and the epochs it did."""
    import time

    from core.config import TrainConfig
    from core.jobs import JobManager

    few = small_copy(small_data, env / "few-clothes", train=4, val=2)
    config = TrainConfig(
        data_dir=str(few), backbone="efficientnet_lite0", strategy="full", epochs=12, image_size=128, device="cpu"
    )
    job = JobManager(env / "runs").submit(config)
    end = time.time() + 300
    while not job.snapshot()["history"] and job.state != "finished" and time.time() < end:
        time.sleep(0.2)
    job.request_stop()
    assert job.wait(120) and job.state == "stopped", "all 12 epochs ended before the stop arrived"
    done = len(job.snapshot()["history"])
    assert 1 <= done < 12
    return Path(job.run_dir), done


def test_a_stopped_run_is_said_on_results_and_named_with_its_epochs(env, with_run, small_data):
    """Before: after a stop, the Playground opened on the stopped run, labelled '… · 12 epochs · 78%' though it
    trained 2 of them, while the Results page showed an older run with another accuracy and said nothing of it."""
    stopped, done = _a_stopped_run(env, small_data)

    at = _goto(_app(), RESULTS)
    assert at.selectbox(key="results_run").value == with_run.name  # the stopped run has no results
    note = _texts(at.info)
    assert "Your newest training (" in note and f"stopped after epoch {done} of 12" in note
    assert "Resume it on the **Runs** page" in note and "Playground" in note

    at = _goto(_app(), PLAYGROUND)
    assert at.selectbox(key="play_run").value == stopped.name
    label = at.selectbox(key="play_run").format_func(stopped.name)
    assert f"{done} of 12 epochs" in label, label
    finished = at.selectbox(key="play_run").format_func(with_run.name)
    assert " of " not in finished, finished  # a finished run is named as before


def test_a_run_label_gives_the_epochs_a_run_that_ended_early_did():
    """The words of the run pickers, for runs as Run.summary() gives them."""
    stopped = {"state": "stopped", "epochs_done": 2, "epochs": 12}
    assert words._epochs_it_did(stopped, "12 epochs, learning rate: 0.01") == "2 of 12 epochs, learning rate: 0.01"
    assert words._epochs_it_did(stopped, "learning rate: 0.01") == "2 of 12 epochs, learning rate: 0.01"
    assert words._epochs_it_did(stopped, "") == "2 of 12 epochs"
    assert words._epochs_it_did({**stopped, "state": "finished", "epochs_done": 12}, "12 epochs") == "12 epochs"
    assert words._epochs_it_did({**stopped, "state": "running"}, "12 epochs") == "12 epochs"  # a label that stays
    assert words._epochs_it_did({**stopped, "adapted_from": {"run": "x"}, "epochs_done": 0}, "") == ""


# --- Playground -------------------------------------------------------------------------


def test_playground_shows_where_it_looked_and_names_a_folder(env, with_run, small_data):
    at = _goto(_app(), PLAYGROUND)
    shoe = sorted((small_data / "val" / "shoes").glob("*.jpg"))[0]
    at.file_uploader(key="play_upload").upload(shoe.name, shoe.read_bytes(), "image/jpeg").run()
    _ok(at)
    assert any("It looks like" in m.value for m in at.markdown)
    assert _images(at) == 2  # the picture and its Grad-CAM overlay
    assert "where the model looked" in _texts(at.caption)

    folder = env / "new-pictures"
    shutil.copytree(small_data / "val", folder)
    (folder / "shoes" / "notes.jpg").write_text("not a picture")
    at.text_input(key="batch_folder").set_value(str(folder)).run()
    _button(at, "Name them all").click().run()
    _ok(at)
    table = next(d.value for d in at.dataframe if "It looks like" in d.value.columns)
    assert len(table) == 17
    assert set(table["It looks like"]) <= {*PHOTO_CLASSES, "–"}
    # Each thing once: the answer, how sure, then the other two of its three likeliest ("Top 3" began with the
    # answer again, and was the column cut off).
    assert list(table.columns) == ["Picture", "It looks like", "Sure", "Also possible", "Problem"]
    for said, others in zip(table["It looks like"], table["Also possible"]):
        if said != "–":
            assert said not in [o.rsplit(" ", 1)[0] for o in others.split("; ")] and others.count("%") == 2, others
    # Named with its reason in the warning, as well as in the table's Problem column.
    assert "could not be read as a picture: shoes/notes.jpg (not an image (text file named .jpg))" in _texts(
        at.warning
    ), _texts(at.warning)
    assert list(table.loc[table["Picture"] == "shoes/notes.jpg", "Problem"]) == ["not an image (text file named .jpg)"]
    (download,) = at.get("download_button")
    assert download.proto.label == "Download the table (CSV)"
    assert "Named **16** pictures" in _texts(at.markdown)

    at.text_input(key="batch_folder").set_value(str(env / "nowhere")).run()
    _button(at, "Name them all").click().run()
    _ok(at)
    assert "does not exist" in _texts(at.error)


def test_playground_shortens_long_picture_names_in_the_middle_and_keeps_them_whole(env, with_run, small_data):
    """A path of 120 characters with no spaces, or with spaces, shows on one line of its column, shortened
    in the middle (its start and its file's ending kept); the cell, the CSV and a double click keep it whole
    (tests/test_long_names_browser.py looks at it in a real browser)."""
    from streamlit import dataframe_util

    folder = env / "trip"
    (folder / "hat").mkdir(parents=True)
    hats = sorted((small_data / "val" / "hat").glob("*.jpg"))
    names = [
        "hat/IMG_20230612_" + "x" * 95 + "_final.jpg",
        "hat/the hat my class photographed on the school trip to the botanical garden in the rain.jpg",
    ]
    for name, hat in zip(names, hats):
        shutil.copy(hat, folder / name)
    at = _goto(_app(), PLAYGROUND)
    at.text_input(key="batch_folder").set_value(str(folder)).run()
    _button(at, "Name them all").click().run()
    _ok(at)
    (table,) = [d for d in at.dataframe if "It looks like" in d.value.columns]
    assert sorted(table.value["Picture"]) == sorted(names)  # the cell holds the path whole
    shown = dataframe_util.convert_arrow_bytes_to_pandas_df(table.proto.arrow_data.styler.display_values)
    # The Picture column's 330 px (no Problem column; a page of unknown width gets the wide layout), 7 px a character
    fits = int((330 - 17) / 7.0)
    for whole, short in zip(table.value["Picture"], shown["Picture"]):
        assert len(short) <= fits and "…" in short, short
        start, end = short.split("…")
        assert whole.startswith(start) and whole.endswith(end) and end.endswith(".jpg"), short


def test_predictions_csv_from_the_command_line(env, with_run, small_data):
    from core.cli import main

    out = env / "out.csv"
    main(["predict", str(with_run), str(small_data / "val"), "--csv", str(out)])
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == 16 and {r["top_class"] for r in rows} <= set(PHOTO_CLASSES)


# --- Compare ----------------------------------------------------------------------------


def test_compare_does_not_rank_runs_on_different_pictures(env, with_run):
    """Two runs on different folders: Compare starts with the newest run's
    folder only, and when both are chosen it says they do not rank against
    each other instead of naming a best one (each accuracy is on its own
    folder's validation pictures)."""
    other = env / "runs" / "20990101-000000-efficientnet_lite0-linear"  # newer: chosen first
    shutil.copytree(with_run, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "data_dir": str(env / "ants-and-bees")}))

    at = _goto(_app(), COMPARE)
    assert at.multiselect(key="compare_runs").value == [other.name]
    at.multiselect(key="compare_runs").set_value([other.name, with_run.name]).run()
    _ok(at)
    board = at.dataframe[0].value
    assert sorted(board["Pictures"]) == ["ants-and-bees", "clothes"]
    assert "do not rank against each other" in _texts(at.warning)
    assert "Best so far" not in _texts(at.caption)
    _fits_the_page(at.dataframe[0])  # with its "Pictures" column too
    at.session_state["_page_width"] = 562  # a 1024 px window, as the browser reports it (ui.page_width)
    at.run()
    narrow = at.dataframe[0]
    assert list(narrow.value.columns) == ["Line", "Network", "What learned", "Pictures", "Accuracy", words.F1_LABEL]
    widths = json.loads(narrow.proto.columns)
    assert sum(widths[c]["width"] for c in narrow.value.columns) <= 562 - 4, widths
    assert "the table leaves out Training, Speed and Started" in _texts(at.caption)


def _fits_the_page(board) -> None:
    """The leaderboard's columns fit the 818 px a page gives a table in a 1280 px
    window with the sidebar open, less its frame (eleven of them ran 600 px past
    it: Macro F1 hid behind a sideways scroll; with "Pictures" they took 830),
    each with a width of its own; macro F1 has a plain name."""
    config = json.loads(board.proto.columns)
    shown = list(board.value.columns)
    assert all(isinstance(config[c]["width"], int) for c in shown), config
    assert sum(config[c]["width"] for c in shown) <= 818 - 4, {c: config[c]["width"] for c in shown}
    assert "Macro F1" not in shown and words.F1_LABEL in shown
    assert config[words.F1_LABEL]["help"].startswith("Macro F1, from 0 to 1 (1 is perfect).")


def test_compare_lists_runs_and_a_sweep_fills_the_leaderboard(env, with_run, hymenoptera, offline_weights):
    at = _goto(_app(), COMPARE)
    board = at.dataframe[0].value
    assert list(board["Network"]) == ["EfficientNet-Lite0"]
    assert re.fullmatch(r"\d+ ms", board["Speed"][0])  # measured on this computer
    assert "Pictures" not in board  # every run on the same pictures: the column would repeat one name
    _fits_the_page(at.dataframe[0])
    assert "Choose a folder of pictures on the **Data** page first" in _texts(at.warning)

    # A sweep of two backbones, linear probe, 1 epoch, on a tiny copy of the photos.
    tiny = small_copy(hymenoptera, env / "tiny-ants-and-bees", train=4, val=4)
    _choose_data(at, tiny)
    _goto(at, MODEL)
    at.number_input(key="epochs").set_value(1).run()
    _goto(at, COMPARE)
    at.multiselect(key="sweep_backbones").set_value(["mobilenet_v2", "efficientnet_lite0"]).run()
    at.multiselect(key="sweep_strategies").set_value(["linear"]).run()
    _button(at, "Train 2 models").click().run()
    _ok(at)
    queued = [p.parent for p in (env / "runs").glob("*/sweep.json")]
    assert len(queued) == 2
    assert sorted(at.multiselect(key="compare_runs").value) == sorted(p.name for p in queued)

    def both_done(a) -> bool:
        # Speeds are timed only once no job of this app is active: a job that has
        # just written "finished" may still be winding down for one rerun ("–").
        table = a.dataframe[0].value if a.dataframe else None
        return (
            table is not None
            and len(table) == 2
            and table["Training"].str.endswith(" s").all()  # a time once finished, "training" until then
            and table["Speed"].str.endswith(" ms").all()
        )

    _wait_for(at, both_done, timeout=240)
    board = at.dataframe[0].value
    assert sorted(board["Network"]) == ["EfficientNet-Lite0", "MobileNetV2"]
    assert set(board["What learned"]) == {"Only the new last layer learns"}
    assert (board["Accuracy"] >= 0).all() and board[words.F1_LABEL].str.fullmatch(r"[01]\.\d\d").all()
    assert len(at.get("plotly_chart")) == 2  # accuracy and loss curves

    # And the whole list of runs can be compared.
    at.multiselect(key="compare_runs").set_value([with_run.name, *(p.name for p in queued)]).run()
    _ok(at)
    board = at.dataframe[0].value
    assert len(board) == 3
    # Two EfficientNet-Lite0 linear probes: their rows say their epochs, or they would read the same.
    lite0 = board[board["Network"] == "EfficientNet-Lite0"]["What learned"]
    assert lite0.str.fullmatch(r"Only the new last layer learns · \d+ epochs?").all(), list(lite0)
    assert list(board[board["Network"] == "MobileNetV2"]["What learned"]) == ["Only the new last layer learns"]
