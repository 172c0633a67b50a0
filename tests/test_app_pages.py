"""The app's pages through Streamlit's AppTest: the main path of each page and
the errors a person can run into, on real photos with real pretrained weights.

Every test gets its own runs, data and cache folders (through the environment
variables the app reads), so nothing leaks between tests or into ./runs.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import time
import zipfile
from dataclasses import fields
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.folders import PHOTO_CLASSES, small_copy

REPO = Path(__file__).resolve().parent.parent
APP = str(REPO / "app.py")
DATA, MODEL, TRAIN, PLAYGROUND, RUNS = (
    "pages/1_data.py",
    "pages/2_model.py",
    "pages/3_train.py",
    "pages/4_playground.py",
    "pages/5_runs.py",
)


# --- fixtures -------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def every_run_goes_through_app_py(monkeypatch):
    """Run the app as the real server does: every rerun executes app.py, whose
    st.navigation picks the page. (AppTest resets Streamlit's legacy "pages/
    folder" flag before each run, and with a pages/ folder beside app.py that
    would rerun a page script on its own, without app.py's sidebar.)"""
    from streamlit.runtime.pages_manager import PagesManager

    original = PagesManager.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init)


def _app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    _ok(at)
    return at


def _ok(at: AppTest) -> None:
    """No traceback, and no 'something went wrong' fallback message."""
    assert not at.exception, [e.value for e in at.exception]
    assert not [e.value for e in at.error if "Something went wrong" in e.value]


def _goto(at: AppTest, page: str) -> AppTest:
    at.switch_page(page).run()
    _ok(at)
    return at


def _button(at: AppTest, label: str):
    for b in at.button:
        if b.label == label:
            return b
    raise AssertionError(f"no button {label!r}; buttons: {[b.label for b in at.button]}")


def _texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def _choose_data(at: AppTest, path: Path | str) -> AppTest:
    _goto(at, DATA)
    at.text_input(key="data_dir_input").set_value(str(path)).run()
    _ok(at)
    return at


def _wait_for(at: AppTest, predicate, timeout: float = 120.0) -> AppTest:
    end = time.time() + timeout
    while time.time() < end:
        at.run()
        _ok(at)
        if predicate(at):
            return at
        time.sleep(1.0)
    raise AssertionError(f"timed out; page shows:\n{_texts(at.markdown)}\n{_texts(at.error)}")


# --- Data --------------------------------------------------------------------------------


def test_data_page_scans_a_folder_and_remembers_it(env, small_data):
    # Before a folder is chosen, the hint under the tabs names every way in, whichever tab is open.
    hint = _texts(_goto(_app(), DATA).info)
    assert "a folder on this computer, pictures you upload, classes you make with the camera" in hint, hint
    assert "Type the path" not in hint
    at = _choose_data(_app(), small_data)
    assert "Ready to train" in _texts(at.success)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Classes"] == "4"
    assert metrics["Pictures to learn from"] == "40"
    assert metrics["Pictures to check with"] == "16"
    assert "from your folders" in _texts(at.markdown)
    assert at.get("plotly_chart"), "the images-per-class chart is missing"
    assert at.get("image"), "no thumbnails"
    # The sidebar follows the choice.
    assert "clothes (4 classes, 56 pictures)" in _texts(at.sidebar.markdown)

    # A new session (another tab, or tomorrow) offers it as a recent folder.
    again = _app()
    assert str(small_data) in again.selectbox(key="recent_pick").options
    again.selectbox(key="recent_pick").set_value(str(small_data)).run()
    assert "Ready to train" in _texts(again.success)


def test_a_folder_checked_before_is_not_decoded_again(env, small_data, monkeypatch):
    small_data = shutil.copytree(small_data, env / "pictures" / "clothes")  # this test changes a picture
    """Pictures that a scan checked and that have not changed since are not
    decoded again: a new session's sidebar knows the counts of a folder it
    was handed (a run's settings carried over) and choosing the folder again
    is quick; "Check this folder" still looks at every picture. The real
    decoder runs; the test only counts its calls."""
    import core.scan_cache

    decoded, decode = [], core.scan_cache.verify_image
    monkeypatch.setattr(
        core.scan_cache, "verify_image", lambda path, *a, **k: decoded.append(path) or decode(path, *a, **k)
    )
    _choose_data(_app(), small_data)
    pictures = len(decoded)
    assert pictures == 56

    decoded.clear()
    again = AppTest.from_file(APP, default_timeout=60)
    again.session_state["data_dir"] = str(small_data)  # as "use these settings" leaves it
    again.switch_page(RUNS).run()
    _ok(again)
    assert "clothes (4 classes, 56 pictures)" in _texts(again.sidebar.markdown) and decoded == []
    _goto(again, DATA)
    assert "Ready to train" in _texts(again.success) and decoded == []
    _button(again, "Check this folder").click().run()
    _ok(again)
    assert len(decoded) == pictures and "Ready to train" in _texts(again.success)

    # A changed picture brings the decoding back, for the sidebar too.
    victim = sorted((small_data / "train" / "hat").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:300])  # now a truncated JPEG
    decoded.clear()
    fresh = AppTest.from_file(APP, default_timeout=60)
    fresh.session_state["data_dir"] = str(small_data)
    fresh.switch_page(RUNS).run()
    _ok(fresh)
    assert "Data:** clothes" in _texts(fresh.sidebar.markdown) and "pictures)" not in _texts(fresh.sidebar.markdown)
    assert decoded == []
    _goto(fresh, DATA)
    assert len(decoded) == pictures and "1 file was skipped" in _texts(fresh.warning)


def test_data_page_explains_a_missing_folder(env, small_data):
    at = _choose_data(_app(), small_data)
    assert "clothes (4 classes, 56 pictures)" in _texts(at.sidebar.markdown)
    at.text_input(key="data_dir_input").set_value(str(env / "no-such-folder")).run()
    _ok(at)
    errors = _texts(at.error)
    assert "does not exist" in errors and "Check the spelling" in errors
    assert not at.success
    # The sidebar follows: not the last good folder's counts.
    assert "no-such-folder (not found)" in _texts(at.sidebar.markdown)
    assert "56 pictures" not in _texts(at.sidebar.markdown)


def test_data_page_refuses_a_folder_with_one_class(env, small_data):
    one = env / "only-hats"
    shutil.copytree(small_data / "train" / "hat", one / "hat")
    at = _choose_data(_app(), one)
    assert "Only one class" in _texts(at.error)
    assert "Ready to train" not in _texts(at.success)
    # Nothing that reads as if it could go on: no split, no picture check until the folder is fixed.
    assert "Split:" not in _texts(at.markdown)
    assert "Check my pictures" not in [b.label for b in at.button]
    # Training cannot start on it either; the Train page says why.
    _goto(at, TRAIN)
    assert "Only one class" in _texts(at.warning)
    assert not [b for b in at.button if b.label == "Start training"]


def test_data_page_lists_left_out_files_with_reasons(env, small_data):
    folder = env / "messy"
    for name in ("hat", "shoes"):
        shutil.copytree(small_data / "train" / name, folder / name)
    (folder / "shoes" / "notes.jpg").write_text("this is not a picture")
    (folder / "shoes" / "empty.png").write_bytes(b"")
    (folder / "shoes" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(100))  # what a Mac leaves
    shutil.copyfile(next((folder / "hat").glob("*.jpg")), folder / "hat" / "._photo.jpg")
    at = _choose_data(_app(), folder)
    assert "Ready to train" in _texts(at.success)
    assert {m.label: m.value for m in at.metric}["Files left out"] == "2"  # the system files are no problem
    assert "2 files were skipped" in _texts(at.warning)
    assert "Ignored 2 hidden or system files that computers make by themselves" in _texts(at.caption)
    assert "random" in _texts(at.markdown)  # no train/val folders: a random split
    table = at.dataframe[0].value
    reasons = dict(zip(table["file"], table["why it was left out"]))
    assert "not an image" in reasons[str(Path("shoes") / "notes.jpg")]
    assert "empty" in reasons[str(Path("shoes") / "empty.png")]
    assert len(table) == 2  # .DS_Store and ._photo.jpg are not in the list

    # Only what a computer made by itself: nothing left out, no warning, one quiet line.
    (folder / "shoes" / "notes.jpg").unlink()
    (folder / "shoes" / "empty.png").unlink()
    _button(at, "Check this folder").click().run()
    _ok(at)
    assert {m.label: m.value for m in at.metric}["Files left out"] == "0"
    assert "skipped" not in _texts(at.warning) and not [e for e in at.expander if e.label.startswith("Left out")]
    assert "Ignored 2 hidden or system files" in _texts(at.caption)


def test_data_page_unpacks_an_uploaded_zip(env, small_data):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for f in sorted(small_data.rglob("*.jpg")):
            zf.write(f, Path("my photos") / f.relative_to(small_data))  # a wrapping folder, as zips often have
        zf.writestr("__MACOSX/._junk", b"junk")
        zf.writestr("my photos/train/hat/Thumbs.db", b"a thumbnail cache")  # what computers leave: not unpacked
        zf.writestr("my photos/val/shoes/desktop.ini", b"[.ShellClassInfo]")
        zf.writestr("../escape.jpg", b"never written outside")
    at = _app()
    at.text_input(key="upload_folder").set_value("insects").run()
    at.radio(key="upload_kind").set_value("A zip file with one folder per class").run()
    at.file_uploader(key="zip_0").upload("insects.zip", buffer.getvalue(), "application/zip").run()
    _button(at, "Unpack and use this folder").click().run()
    _ok(at)
    target = env / "data" / "insects"
    assert sorted(p.name for p in target.iterdir()) == ["train", "val"]
    assert not (env / "data" / "escape.jpg").exists()
    assert not [p for p in target.rglob("*") if p.name.lower() in ("thumbs.db", "desktop.ini")]
    assert "Ready to train" in _texts(at.success)
    assert {m.label: m.value for m in at.metric}["Classes"] == "4"


def test_data_page_saves_uploaded_pictures_one_class_at_a_time(env, small_data):
    at = _app()
    for nonce, name in enumerate(("hat", "shoes")):
        if nonce == 1:  # a reload between the two classes: the second still joins the first's folder
            at = _app()
        at.text_input(key="upload_folder").set_value("wardrobe").run()
        at.radio(key="upload_kind").set_value("Pictures of one class").run()
        if nonce == 1:
            assert "wardrobe, the folder you started before" in _texts(at.caption)
        at.text_input(key="upload_class").set_value(name).run()
        files = [
            (f.name, f.read_bytes(), "image/jpeg") for f in sorted((small_data / "train" / name).glob("*.jpg"))[:4]
        ]
        at.file_uploader(key="images_0").set_value(files).run()  # each class in a fresh session: nonce 0
        _button(at, "Add these pictures").click().run()
        _ok(at)
    assert sorted(p.name for p in (env / "data" / "wardrobe").iterdir()) == ["hat", "shoes"]
    assert len(list((env / "data" / "wardrobe" / "shoes").iterdir())) == 4
    assert "Ready to train" in _texts(at.success)


# --- Model -------------------------------------------------------------------------------


def _learning(at: AppTest) -> int:
    return int(next(m.value for m in at.metric if m.label == "Numbers that learn").replace(",", ""))


def test_model_page_presets_and_block_switches_change_what_learns(env, offline_weights, small_data):
    at = _goto(_choose_data(_app(), small_data), MODEL)
    assert at.selectbox(key="backbone").value == "mobilenet_v2"  # offline weights here
    table = at.dataframe[0].value
    offline = dict(zip(table["Network"], table["Works offline?"]))
    assert offline["MobileNetV2"] == "Ready — works offline"
    assert offline["EfficientNet-Lite0"] == "Ready — works offline"  # ships in a package

    linear = _learning(at)
    assert linear == 1280 * 4 + 4  # only the new head, for 4 classes
    at.radio(key="preset").set_value("full").run()
    full = _learning(at)
    assert full > 2_000_000  # what the preset trains, once its head-only first epoch is over
    assert f"In the first epoch only the new head learns ({linear:,} numbers)" in _texts(at.caption)
    at.radio(key="preset").set_value("last").run()
    at.slider(key="last_n").set_value(1).run()
    last_one = _learning(at)
    assert linear < last_one < full

    # Switching a single block on makes it "my own choice" and counts it.
    at.radio(key="preset").set_value("linear").run()
    at.toggle(key="blk_stage4").set_value(True).run()
    _ok(at)
    assert at.radio(key="preset").value == "custom"
    assert _learning(at) > linear
    assert at.toggle(key="blk_stage4").value is True
    assert at.toggle(key="blk_stem").value is False

    # Another backbone has other blocks; the count follows.
    at.selectbox(key="backbone").set_value("efficientnet_lite0").run()
    _ok(at)
    at.radio(key="preset").set_value("linear").run()
    assert _learning(at) == 1280 * 4 + 4


def test_model_page_settings_read_their_label_and_help_from_core_config(env, small_data):
    """Each setting's name and help are written once, beside its field in
    core.config: the Model page shows those, and so does `train --help`."""
    from core.config import TrainConfig, help_text, setting_label

    at = _goto(_choose_data(_app(), small_data), MODEL)
    at.radio(key="preset").set_value("gradual").run()  # shows "Unfreeze one more block every … epochs"
    labelled = {f.name for f in fields(TrainConfig) if f.metadata.get("label")}
    kinds = ("slider", "number_input", "selectbox", "select_slider", "toggle", "radio")
    shown = {w.key: w for kind in kinds for w in at.get(kind) if w.key in labelled}
    assert {"epochs", "lr", "batch_size", "label_smoothing", "augment", "head_epochs", "unfreeze_every"} <= set(shown)
    for name, widget in shown.items():
        assert widget.label == setting_label(name), name
        assert widget.help.startswith(help_text(name)), name
    # The page's help words choices as the page offers them; the codes the command line takes
    # ("cuda:N", "pretrained", a weights file's path) are said in `train --help` only.
    for name in ("init", "device"):
        assert not re.search(r"cuda|mps|'pretrained'|'random'|path", help_text(name)), help_text(name)
    from core.cli import build_parser

    train = next(a for a in build_parser()._actions if a.dest == "command").choices["train"]
    cli_help = " ".join(" ".join(a.help.split()) for a in train._actions if a.help)
    assert "values: auto, cpu, cuda, cuda:N or mps" in cli_help
    assert "values: pretrained, random, or the path of a weights file" in cli_help


def test_choices_carry_over_to_the_train_page(env, small_data):
    at = _goto(_choose_data(_app(), small_data), MODEL)
    at.radio(key="preset").set_value("gradual").run()
    at.number_input(key="epochs").set_value(3).run()
    assert re.search(
        r"With gradual unfreezing more learn as blocks join: .* from epoch 2, .* from epoch 3\.", _texts(at.caption)
    )
    _goto(at, TRAIN)
    summary = _texts(at.markdown)
    assert "gradual unfreezing" in summary and "3 epochs" in summary
    _goto(at, MODEL)
    assert at.number_input(key="epochs").value == 3  # still there when coming back


def test_a_backbone_that_needs_a_download_says_so(env, small_data, empty_torch_home):
    at = _goto(_choose_data(_app(), small_data), MODEL)
    assert at.selectbox(key="backbone").value == "efficientnet_lite0"  # the only offline one now
    at.selectbox(key="backbone").set_value("resnet18").run()
    assert "download when training starts" in _texts(at.info)


# --- Train -------------------------------------------------------------------------------


def test_train_page_asks_for_data_first(env):
    at = _goto(_app(), TRAIN)
    assert "Choose a folder of pictures on the **Data** page first" in _texts(at.warning)
    assert not [b for b in at.button if b.label == "Start training"]


def test_train_page_trains_in_the_background_and_a_second_tab_finds_it(env, small_data):
    at = _goto(_choose_data(_app(), small_data), MODEL)
    at.number_input(key="epochs").set_value(2).run()
    _goto(at, TRAIN)
    _button(at, "Start training").click().run()
    _ok(at)
    # The page came back at once: the job runs in its own thread.
    assert "Training now" in _texts(at.subheader)
    assert [b for b in at.button if b.label == "Stop training"]
    assert at.get("progress"), "no progress bar"
    assert "Running on" in [m.label for m in at.metric]
    (run_dir,) = (env / "runs").glob("*/config.json")
    run_name = run_dir.parent.name
    assert run_name in _texts(at.markdown)

    # A reload, or a second tab, finds the same job.
    other = _goto(_app(), TRAIN)
    assert run_name in _texts(other.markdown)
    assert "Training now" in _texts(other.subheader) or "Finished." in _texts(other.success)

    _wait_for(at, lambda a: "Finished." in _texts(a.success))
    assert "Best validation accuracy" in _texts(at.success)
    # A linear probe's frozen blocks ran once per picture, and the page says so.
    assert "frozen blocks ran once over the training and validation images" in _texts(at.caption)
    assert len(at.get("plotly_chart")) == 2
    assert "Train again" in _texts(at.markdown)
    assert len(list((env / "runs").glob("*/config.json"))) == 1
    config = json.loads(run_dir.read_text())
    assert config["epochs"] == 2 and config["strategy"] == "linear" and config["backbone"] == "efficientnet_lite0"
    assert config["data_dir"] == str(small_data)

    other = _goto(_app(), TRAIN)  # and after it ended, a new tab shows its summary
    assert "Finished." in _texts(other.success)


def test_stop_then_resume_from_the_runs_page(env, small_data):
    # A full fine-tune (nothing frozen, so no stored features) of 12 epochs on
    # 4 + 2 photos a class: each epoch takes seconds here, so the stop, sent
    # once the first epoch shows, lands long before the last one. (A frozen
    # prefix would make epochs so quick that all of them could end before the
    # stop arrives.)
    few = small_copy(small_data, env / "few-clothes", train=4, val=2)
    at = _goto(_choose_data(_app(), few), MODEL)
    at.radio(key="preset").set_value("full").run()
    at.number_input(key="epochs").set_value(12).run()
    at.selectbox(key="image_size").set_value(128).run()  # small pictures: quicker epochs
    _goto(at, TRAIN)
    _button(at, "Start training").click().run()

    def one_epoch_done(a):
        return any(
            m.label == "Validation accuracy" and m.value not in ("–",) for m in a.metric
        ) or "Finished." in _texts(a.success)

    _wait_for(at, one_epoch_done)
    _button(at, "Stop training").click().run()
    _wait_for(at, lambda a: "Stopped by you" in _texts(a.info) or "Finished." in _texts(a.success))
    assert "Stopped by you" in _texts(at.info), "all 12 epochs ended before the stop arrived"
    # The Train page offers to resume it there (the same manager.resume as the Runs page's button).
    assert "resume it with the button below" in _texts(at.info) and _button(at, "Resume")

    _goto(at, RUNS)
    # The stopped run's curves span the epochs it did, not the 12 it was set for; the table says how many.
    (metrics,) = (env / "runs").glob("*/metrics.jsonl")
    done = len(metrics.read_text().splitlines())
    assert list(at.dataframe[0].value["Status"]) == [f"stopped, {done} of 12 epochs"]
    for chart in at.get("plotly_chart"):
        assert json.loads(chart.proto.spec)["layout"]["xaxis"]["range"] == [0, done + 0.1]
    _button(at, "Resume").click().run()
    _ok(at)
    assert "Training now" in _texts(at.subheader)  # it went on to the Train page
    _goto(at, TRAIN)  # (AppTest would otherwise go back to the page it last switched to)
    _wait_for(at, lambda a: "Finished." in _texts(a.success), timeout=300)  # ~10 epochs left, on a busy machine too
    (metrics,) = (env / "runs").glob("*/metrics.jsonl")
    assert [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()] == list(range(1, 13))


def test_a_failed_download_is_explained(env, small_data, empty_torch_home):
    at = _goto(_choose_data(_app(), small_data), MODEL)
    at.selectbox(key="backbone").set_value("resnet18").run()
    _goto(at, TRAIN)
    assert "will be downloaded first" in _texts(at.info)
    _button(at, "Start training").click().run()
    _wait_for(at, lambda a: "Training failed" in _texts(a.error))
    message = _texts(at.error)
    assert "resnet18" in message and "pick a backbone whose weights are already on this machine" in message
    assert "Traceback" not in message

    _goto(at, RUNS)
    assert re.fullmatch(r"failed, 0 of \d+ epochs", at.dataframe[0].value["Status"][0])
    assert "This run failed" in _texts(at.error)


# --- Playground --------------------------------------------------------------------------


def test_playground_predicts_an_uploaded_picture(env, with_run, small_data):
    at = _goto(_app(), PLAYGROUND)
    assert at.selectbox(key="play_run").value == with_run.name
    shoe = sorted((small_data / "val" / "shoes").glob("*.jpg"))[0]
    at.file_uploader(key="play_upload").upload(shoe.name, shoe.read_bytes(), "image/jpeg").run()
    _ok(at)
    headline = next(m.value for m in at.markdown if "It looks like" in m.value)
    assert any(f"**{name}**" in headline for name in PHOTO_CLASSES)
    assert at.get("plotly_chart")
    sure = next(m.value for m in at.markdown if m.value.startswith("The model is **"))
    assert re.fullmatch(r"The model is \*\*\d+\.\d%\*\* sure \(.*\)\.", sure), sure  # as its bars say it: 99.9%

    at.file_uploader(key="play_upload").upload("broken.jpg", b"not a picture at all", "image/jpeg").run()
    _ok(at)
    assert "could not be opened as a picture" in _texts(at.error)
    # A phone's HEIC photo is taken, to say what to do with it, as the Data page's upload does.
    at.file_uploader(key="play_upload").upload("IMG_0001.HEIC", b"\0\0\0\x18ftypheic", "image/heic").run()
    _ok(at)
    assert "HEIC format" in _texts(at.error) and "Most Compatible" in _texts(at.error)


def test_playground_with_a_camera_photo(env, with_run, small_data):
    at = _goto(_app(), PLAYGROUND)
    hat = sorted((small_data / "val" / "hat").glob("*.jpg"))[0]
    at.camera_input(key="play_camera").upload("photo.jpg", hat.read_bytes()).run()
    _ok(at)
    assert any("It looks like" in m.value for m in at.markdown)


def test_playground_without_a_trained_model(env):
    at = _goto(_app(), PLAYGROUND)
    assert "no trained model yet" in _texts(at.info)


# --- Runs --------------------------------------------------------------------------------


def test_runs_page_lists_opens_and_deletes_with_confirmation(env, with_run):
    at = _goto(_app(), RUNS)
    table = at.dataframe[0].value
    assert list(table["Run"]) == [with_run.name]
    assert list(table["Status"]) == ["finished"]
    assert list(table["Network"]) == ["EfficientNet-Lite0"]
    # Its columns add up to less than the 818 px a page has in a 1280 px window; the folder's name is hidden
    # (the table's menu shows it again), as the opened run's heading says it.
    columns = json.loads(at.dataframe[0].proto.columns)
    shown = [c for c in table.columns if not columns.get(c, {}).get("hidden")]
    assert shown == ["Started", "Network", "What learned", "Pictures", "Accuracy", "Status", "Time"]
    assert sum(columns[c]["width"] for c in shown) <= 800, columns
    assert columns["Run"]["label"] == "Folder" and with_run.name in _texts(at.caption).replace("\\", "")
    # In a 1024 px window the browser reports 562 px of page (ui.page_width): the columns a person picks a
    # run by, narrower, in the same order; when it started and how long it took are left out, and it says so.
    at.session_state["_page_width"] = 562
    at.run()
    narrow = at.dataframe[0].value
    columns = json.loads(at.dataframe[0].proto.columns)
    shown = [c for c in narrow.columns if not columns.get(c, {}).get("hidden")]
    assert shown == ["Network", "What learned", "Pictures", "Accuracy", "Status"]
    assert sum(columns[c]["width"] for c in shown) <= 562 - 4, columns
    assert "the table leaves out Started and Time" in _texts(at.caption)
    at.session_state["_page_width"] = 818
    at.run()
    assert list(at.dataframe[0].value.columns) == list(table.columns)
    assert "How well each class is recognised" in _texts(at.markdown)
    per_class = at.dataframe[1].value
    assert list(per_class["Class"]) == list(PHOTO_CLASSES)
    assert len(at.get("plotly_chart")) == 2
    settings = next(df.value for df in at.dataframe if "Setting" in df.value.columns)  # named as on the Model page
    labels = dict(zip(settings["Name"], settings["Setting"]))
    assert labels["label_smoothing"] == "Label smoothing"
    assert labels["backbone"] == "Network to start from" and labels["data_dir"] == "Folder with your pictures"
    assert set(labels) - {n for n, label in labels.items() if label != n} == set()  # every row named for people
    values = dict(zip(settings["Name"], settings["Value"]))  # and its value worded as the Model page words it
    assert values["backbone"] == "EfficientNet-Lite0" and values["init"] == "ImageNet weights"
    assert values["strategy"] == "Only the new last layer learns"
    assert "True" not in set(values.values()) and "False" not in set(values.values())
    assert values["optimizer"] == "AdamW" and values["head_hidden"] == "none (one straight layer)"
    # A linear probe's table holds what shaped it; gradual unfreezing's pace, momentum with AdamW
    # and the fine-tuning settings are listed apart, as kept but not used.
    assert not {"unfreeze_every", "momentum", "head_epochs", "warmup_epochs"} & set(values), set(values)
    unused = next(c for c in _texts(at.caption).split("\n") if c.startswith("Kept but not used by this run"))
    assert "Unfreeze one more block every … epochs (1)" in unused and "Momentum (0.9)" in unused, unused

    _button(at, "Delete…").click().run()
    assert "cannot be undone" in _texts(at.warning)
    _button(at, "Cancel").click().run()
    assert with_run.exists() and "cannot be undone" not in _texts(at.warning)

    _button(at, "Delete…").click().run()
    _button(at, "Yes, delete it").click().run()
    _ok(at)
    assert not with_run.exists()
    assert "No runs yet" in _texts(at.info)


def test_runs_page_shows_why_a_run_failed(env, with_run):
    status = json.loads((with_run / "status.json").read_text())
    status.update(state="failed", reason="The GPU ran out of memory. Try a smaller batch size.")
    (with_run / "status.json").write_text(json.dumps(status))
    at = _goto(_app(), RUNS)
    assert "The GPU ran out of memory. Try a smaller batch size." in _texts(at.error)
