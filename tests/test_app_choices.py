"""Choices that stay, and a sidebar that agrees with the page, through
Streamlit's AppTest on the real app, real photos and real training.

A fresh AppTest is a new session: what a reload, a new tab or a restarted
server starts with (the choices come from the runs folder on disk)."""

from __future__ import annotations

import json
import time

from core.choices import choices_path, save_choices
from core.config import TrainConfig
from core.jobs import get_job_manager
from tests.test_app_pages import (  # noqa: F401 - the autouse fixture runs every rerun through app.py
    DATA,
    MODEL,
    TRAIN,
    _app,
    _choose_data,
    _goto,
    _ok,
    _texts,
    every_run_goes_through_app_py,
)


def _sidebar(at) -> str:
    return _texts(at.sidebar.markdown) + "\n" + _texts(at.sidebar.caption)


def test_choices_stay_for_a_new_session(env, small_data):
    at = _goto(_choose_data(_app(), small_data), MODEL)
    at.radio(key="preset").set_value("gradual").run()
    at.number_input(key="epochs").set_value(3).run()
    at.select_slider(key="lr").set_value(0.01).run()
    _ok(at)
    saved = json.loads(choices_path(env / "runs").read_text())
    assert saved["data_dir"] == str(small_data) and saved["epochs"] == 3 and saved["preset"] == "gradual"

    again = _app()  # a reload, a new tab, or the server started again
    side = _sidebar(again)
    assert "clothes" in side and "not chosen yet" not in side
    assert "gradual unfreezing" in side and "3 epochs" in side
    _goto(again, MODEL)
    assert again.number_input(key="epochs").value == 3
    assert again.radio(key="preset").value == "gradual"
    assert again.select_slider(key="lr").value == 0.01
    _goto(again, DATA)
    assert again.text_input(key="data_dir_input").value == str(small_data)
    _goto(again, TRAIN)
    assert "Ready to train" in _texts(again.markdown)
    summary = _texts(again.markdown)
    assert "clothes" in summary and "3 epochs" in summary and "rate 0.01" in summary
    assert "clothes (4 classes, 56 pictures)" in _sidebar(again)  # checked now, and the sidebar says so


def test_a_second_tab_never_wipes_the_first_tabs_choices(env, small_data):
    second = _app()  # opened first, on the defaults
    first = _goto(_choose_data(_app(), small_data), MODEL)
    first.number_input(key="epochs").set_value(4).run()
    first.selectbox(key="backbone").set_value("resnet18").run()

    _goto(second, MODEL)  # the older tab goes on (its Model page shows its own defaults) ...
    second.select_slider(key="lr").set_value(0.01).run()  # ... and changes the learning rate only
    _goto(second, TRAIN)
    saved = json.loads(choices_path(env / "runs").read_text())
    assert saved["data_dir"] == str(small_data) and saved["epochs"] == 4  # the first tab's choices
    assert saved["backbone"] == "resnet18"
    assert saved["lr"] == 0.01  # and the second's change: the last change of each choice wins

    third = _goto(_app(), MODEL)
    assert third.number_input(key="epochs").value == 4 and third.select_slider(key="lr").value == 0.01
    assert third.selectbox(key="backbone").value == "resnet18"


def test_a_damaged_choices_file_gives_the_defaults(env):
    path = choices_path(env / "runs")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x00{not json")
    at = _goto(_app(), MODEL)
    assert at.number_input(key="epochs").value == 5
    assert "not chosen yet" in _sidebar(at)

    # Readable, but wrong: each bad value is left out (its default stays), the good one is kept.
    path.write_text(
        json.dumps(
            {
                "epochs": -3,
                "val_fraction": 9,
                "lr_factor": "half",
                "optimizer": "bogus",
                "preset": "nope",
                "backbone": "no-such-network",
                "data_dir": 5,
                "custom_trained": [1, 2],
                "class_weighted": 1,
                "head_dropout": 0.2,
                "unknown": "x",
            }
        )
    )
    at = _goto(_app(), MODEL)
    assert at.number_input(key="epochs").value == 5
    assert at.selectbox(key="optimizer").value == "adamw"
    assert at.radio(key="preset").value == "linear"
    assert at.selectbox(key="backbone").value == "efficientnet_lite0"
    assert at.toggle(key="class_weighted").value is False
    assert at.slider(key="head_dropout").value == 0.2
    assert "not chosen yet" in _sidebar(at)

    path.write_text("[1, 2, 3]")  # not an object at all
    _goto(_app(), TRAIN)


def _page_progress(at) -> str:
    bars = at.get("progress")
    return bars[0].proto.text if bars else ""


def test_a_new_tab_during_a_training_shows_that_training_and_the_sidebar_points_to_it(env, small_data):
    # The saved choices say another folder and 9 epochs; the training that runs says otherwise.
    save_choices(env / "runs", {"data_dir": str(env / "elsewhere"), "epochs": 9})
    slow = TrainConfig(
        data_dir=str(small_data),
        backbone="efficientnet_lite0",
        strategy="full",
        epochs=40,
        batch_size=4,
        image_size=128,
        feature_cache=False,
        device="cpu",
    )
    job = get_job_manager(env / "runs").submit(slow)  # started by another tab (or before a reload)
    try:
        at = _app()
        side = _sidebar(at)
        assert "Training:** EfficientNet-Lite0 on clothes" in side
        assert "40 epochs" in side and "Everything learns" in side and "elsewhere" not in side
        # Another page: the sidebar says what the training does now, epoch and batch.
        end = time.time() + 120
        while time.time() < end and "Epoch " not in _texts(at.sidebar.caption):
            at.run()
            _ok(at)
            time.sleep(0.5)
        assert "Epoch " in _texts(at.sidebar.caption) and "of 40" in _texts(at.sidebar.caption), _sidebar(at)
        # The Train page shows it live; the sidebar points there rather than count on its own clock,
        # so the two never disagree.
        _goto(at, TRAIN)
        assert "Training now" in _texts(at.subheader)
        assert _page_progress(at).startswith("Epoch "), _page_progress(at)
        assert "Shown live on this page." in _texts(at.sidebar.caption) and "Epoch " not in _texts(at.sidebar.caption)
        assert "getting ready" not in _sidebar(at)
    finally:
        job.request_stop()
        assert job.wait(60)

    at = _goto(at, TRAIN)
    stopped = _texts(at.info)
    if job.snapshot()["history"]:  # an epoch ended before the stop landed
        assert "you can resume it with the button below" in stopped and stopped.count("esume it") == 1
        assert "Resume" in [b.label for b in at.button]
    else:
        assert "nothing to resume" in stopped and "Runs page" not in stopped
    # "Train again" trains what was running: its folder and settings.
    summary = _texts(at.markdown)
    assert "Train again" in summary and "clothes" in summary and "40 epochs, batch 4" in summary
