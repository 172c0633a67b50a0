"""The pages' defaults and build_config() come from TrainConfig's own fields, so
a new setting reaches the pages without an edit in ui/state.py."""

from __future__ import annotations

import dataclasses

import streamlit as st

from core.config import TrainConfig, defaults
from ui import state


def test_every_offered_setting_has_a_widget_default():
    offered = {f.name for f in dataclasses.fields(TrainConfig) if f.metadata.get("ui", True)}
    assert offered - set(state.DERIVED) <= set(state.DEFAULTS)
    assert {"data_dir", "preset", "last_n"} <= set(state.DEFAULTS)  # the pages' own choices
    assert state.DEFAULTS["epochs"] == defaults()["epochs"]
    assert state.DEFAULTS["image_size"] == 0  # None shows as 0 ("the backbone's own size")


def test_build_config_reads_each_choice_by_its_field_name():
    st.session_state.clear()
    st.session_state.update(
        data_dir="pictures",
        preset="last",
        last_n=3,
        epochs=7,
        lr=0.01,
        batch_size=0,
        image_size=160,
        class_weighted=True,
        mixed_precision=False,
        backbone="resnet18",
    )
    config = state.build_config()
    assert config.strategy == "last-3" and config.backbone == "resnet18"
    assert (config.epochs, config.lr, config.image_size) == (7, 0.01, 160)
    assert config.batch_size is None  # 0: chosen for this machine
    assert config.class_weighted is True and config.mixed_precision is False
    assert config.data_dir.endswith("pictures")
    st.session_state.clear()
