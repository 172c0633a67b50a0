"""Choices that stay: a new session (a reload, another tab, tomorrow after a
restart) starts from the choices saved beside the runs (core.choices), or,
while a training runs, from that training's own config, so the sidebar, the
folder box and "Train again" match what is running. At the end of every run
of the script, the choices this session changed are saved (only those: a tab
that changed nothing never writes its defaults over another tab's choices).
"""

from __future__ import annotations

import copy
import dataclasses

import streamlit as st

from core import choices as saved
from core.backbones import list_backbones
from core.config import TrainConfig
from ui import resources, state, words

LOADED = "_choices_loaded"  # this session has taken its choices from disk (or from the running job)
SNAPSHOT = "_choices_saved"  # the persisted choices as this session last loaded or saved them

# The choices that are kept: every choice of the pages with its default, the
# network, and the blocks a person switched on by hand (per network).
EXPECTED = {**state.DEFAULTS, "backbone": "", "custom_trained": {}}

# Ranges of the number widgets, which refuse a value outside them (a slider or
# number box raises rather than clamps): a value saved outside is left out.
# The settings' own limits (core.config), and the one choice that is not a setting.
LIMITS = {
    **{f.name: f.metadata["limits"] for f in dataclasses.fields(TrainConfig) if f.metadata.get("limits")},
    "last_n": (1, 64),
}


def _allowed() -> dict:
    """The words a choice must be one of: the presets, the networks, and every
    setting whose TrainConfig field lists its choices."""
    out = {"preset": set(words.PRESETS), "backbone": {b.name for b in list_backbones()}}
    for f in dataclasses.fields(TrainConfig):
        if f.name in EXPECTED and f.metadata.get("choices"):
            out[f.name] = set(f.metadata["choices"])
    return out


def _current() -> dict:
    """This session's value of every kept choice (its default when unset)."""
    out = {name: st.session_state.get(name, default) for name, default in EXPECTED.items()}
    out["backbone"] = state.choice("backbone")  # unset means the default network, as the Model page shows
    return copy.deepcopy(out)  # a snapshot: the blocks switched by hand are a dict changed in place


def from_config(config: TrainConfig) -> dict:
    """A training's config as the pages' choices (the inverse of state.build_config)."""
    values = {}
    for name in state.DEFAULTS:
        if hasattr(config, name):
            value = getattr(config, name)
            values[name] = 0 if value is None else value
    values["data_dir"] = config.data_dir
    values["backbone"] = config.backbone
    strategy = config.strategy or "linear"
    if strategy.startswith("last-") and strategy[5:].isdigit():
        values["preset"], values["last_n"] = "last", int(strategy[5:])
    elif strategy == "custom" and config.trained_blocks:
        values["preset"] = "custom"
        values["custom_trained"] = {config.backbone: dict(config.trained_blocks)}
    else:
        values["preset"] = strategy if strategy in words.PRESETS else "linear"
    return values


def _running_config() -> TrainConfig | None:
    try:
        active = resources.manager().active_jobs()
    except Exception:  # noqa: BLE001 - a bad runs folder is reported on the pages
        return None
    return active[0].config if active else None


def restore() -> None:
    """Once per session, before the page draws its widgets: take the running
    training's choices, else the saved ones. A choice this session already
    holds is kept."""
    if st.session_state.get(LOADED):
        return
    st.session_state[LOADED] = True
    running = _running_config()
    if running is not None:
        values = from_config(running)
    else:
        values = saved.load_choices(state.runs_dir(), EXPECTED, _allowed(), LIMITS)
    for name, value in values.items():
        if name not in st.session_state and value != EXPECTED[name]:
            st.session_state[name] = value
    st.session_state[SNAPSHOT] = _current()


def save_changes() -> None:
    """After the page ran: save the choices this session changed since it
    last loaded or saved them."""
    if not st.session_state.get(LOADED):
        return
    now = _current()
    before = st.session_state.get(SNAPSHOT) or {}
    changed = {name: value for name, value in now.items() if before.get(name) != value}
    if changed and saved.save_choices(state.runs_dir(), changed):
        st.session_state[SNAPSHOT] = now
