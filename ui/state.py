"""What the user has chosen, kept in Streamlit's session: every training
choice with its default, the scan of the chosen data folder, and the
TrainConfig built from those choices; and the app's places, which are not a
choice of the browser: where runs and uploads are written, and whether the app
is shared on a network, are fixed when the server starts (see `places`).

The defaults and the config come from `TrainConfig`'s own fields (each field
whose metadata does not say ui=False is a widget key of the same name), so a new
setting needs no edit here. Only the few choices that exist in the pages alone
are listed: the data folder, the preset and how many last blocks.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import logging
import os
import sys
import time
from pathlib import Path

import streamlit as st
import torch

from core.backbones import default_backbone
from core.config import TrainConfig, defaults, help_text, limits, setting_label, settings_without_effect
from core.features import default_cache_dir
from core.files import atomic_write_json
from core.freeze import freeze_plan_for
from core.paths import pasted_path
from core.runs import RUNS_ENV, default_runs_dir, read_json  # noqa: F401 - RUNS_ENV beside DATA_ENV for app.py
from core.scan import DataFolderError, scan_folder, scan_if_checked_before
from core.scan_report import ScanReport

log = logging.getLogger("transfer_studio")

DATA_ENV = "TRANSFER_STUDIO_DATA"
SHARE_ENV = "TRANSFER_STUDIO_SHARE"

# The page scripts, in the order of the guided flow; Results (after Train) and
# Compare (after Runs) are not numbered steps.
PAGE_DATA = "pages/1_data.py"
PAGE_MODEL = "pages/2_model.py"
PAGE_TRAIN = "pages/3_train.py"
PAGE_PLAYGROUND = "pages/4_playground.py"
PAGE_RUNS = "pages/5_runs.py"
PAGE_RESULTS = "pages/6_results.py"
PAGE_COMPARE = "pages/7_compare.py"

# Settings the pages derive rather than offer as a widget of the same name: the
# strategy comes from the preset (and last_n, and the custom blocks), and the
# backbone's default depends on which weights are on this machine.
DERIVED = ("strategy", "backbone")


def _offered() -> list[dataclasses.Field]:
    """TrainConfig's fields that are a page's widget key."""
    return [f for f in dataclasses.fields(TrainConfig) if f.metadata.get("ui", True) and f.name not in DERIVED]


def _widget_defaults() -> dict:
    values = defaults()
    out = {f.name: values[f.name] for f in _offered()}
    # A number widget cannot hold None: 0 stands for "empty" (the backbone's own
    # picture size; the batch size chosen for this machine).
    out = {name: 0 if value is None else value for name, value in out.items()}
    if torch.cuda.is_available():
        out["batch_size"] = 0  # "auto": the engine picks bigger batches on a big GPU
    return out


# Every choice a user makes, with its default. Widgets use these names as keys
# (with persist_state="session"), so a choice survives switching pages.
DEFAULTS: dict = {"data_dir": "", "preset": "linear", "last_n": 2, **_widget_defaults()}


@dataclasses.dataclass(frozen=True)
class Places:
    """Where the app writes, and whether it is shared: set by whoever starts
    the server, never by a browser (a visitor could otherwise unpack a zip
    into any folder, or point Delete at any folder)."""

    runs: Path  # one folder per training run
    data: Path  # uploads are unpacked into new folders inside this one
    shared: bool  # started for the network: the browser sees only the data folder


def _command_line() -> argparse.Namespace:
    """The options after `--` in `streamlit run app.py -- --runs DIR --data DIR
    --share` (Streamlit hands them to the script as sys.argv[1:]). Unknown
    arguments are ignored, so a test runner's own arguments are harmless."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--runs")
    parser.add_argument("--data")
    parser.add_argument("--share", action="store_true")
    return parser.parse_known_args(sys.argv[1:])[0]


def places() -> Places:
    """The command line wins over the environment, which wins over the
    defaults (./runs and ./data). Read from the process, so every session
    sees the same places."""
    args = _command_line()
    runs = args.runs or str(default_runs_dir())
    data = args.data or os.environ.get(DATA_ENV) or "data"
    shared = args.share or os.environ.get(SHARE_ENV, "").strip().lower() in ("1", "true", "yes")
    # A server reachable from the network is shared whether or not anyone said
    # so (e.g. started from another folder, without the project's config).
    shared = shared or not serves_this_machine_only()
    return Places(Path(runs).expanduser().resolve(), Path(data).expanduser().resolve(), shared)


def serves_this_machine_only() -> bool:
    """Whether the server listens on a loopback address only. Unset means
    every interface (Streamlit's default)."""
    address = (st.get_option("server.address") or "").strip().strip("[]")
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def runs_dir() -> Path:
    return places().runs


def data_root() -> Path:
    return places().data


def folder_refusal(path: str | Path) -> str | None:
    """Why the browser may not look into `path`, or None. On a server shared
    on the network only folders inside the data folder may be read (else a
    visitor could list any folder of the server); on this machine alone every
    folder is the user's own."""
    where = places()
    if not where.shared:
        return None
    resolved = Path(pasted_path(path)).resolve()
    if resolved == where.data or where.data in resolved.parents:
        return None
    return (
        "This app is shared on a network, so it only opens folders inside its data folder "
        f"({where.data}). Upload your pictures, or ask the person who started it to put them there."
    )


def data_folders() -> list[str]:
    """The folders inside the data folder (for the shared app's folder choice),
    newest first; hidden ones (unfinished uploads) are left out."""
    try:
        found = [p for p in data_root().iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        return []
    return [str(p) for p in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)]


def choice(name: str):
    """The user's current choice for `name` (or its default)."""
    if name == "backbone":
        return st.session_state.get("backbone") or default_backbone()
    return st.session_state.get(name, DEFAULTS[name])


def init_choice(name: str) -> str:
    """Before a widget keyed `name` is drawn: give it the remembered value or
    the default (so the widget needs no value= argument)."""
    if name not in st.session_state:
        st.session_state[name] = default_backbone() if name == "backbone" else DEFAULTS[name]
    return name


def unused_note(name: str) -> str:
    """Why setting `name` does nothing with the preset chosen now, or "": said
    in the setting's help and under the settings, so that changing it and
    seeing nothing happen is no puzzle."""
    if name == "head_epochs" and choice("preset") == "gradual":
        return (
            f"Gradual unfreezing always starts with the new head alone, so “{setting_label(name)}” is not used "
            f"with it; “{setting_label('unfreeze_every')}” sets when the blocks join in."
        )
    return ""


def unused_now() -> set[str]:
    """The settings the current choices would keep but not use
    (core.config.settings_without_effect): their widgets are greyed out, so
    changing one and seeing nothing happen is no puzzle."""
    chosen = {f.name: choice(f.name) for f in _offered()}
    return set(settings_without_effect({**chosen, "strategy": strategy_name()}))


def setting_widget(name: str, bounded: bool = False, more_help: str = "", disabled: bool = False) -> dict:
    """The arguments a settings widget takes from its field in core.config,
    where its label and help are written once: label, help (then
    `more_help`, e.g. words on the current choice, and why the chosen preset
    does not use it), its key, kept for the session, with the remembered
    value or the default set up (init_choice).
    `bounded`: min_value and max_value from the field's limits too.
    `disabled`: greyed out; so is a setting the current choices do not use."""
    init_choice(name)
    args = {
        "label": setting_label(name),
        "key": name,
        "persist_state": "session",
        "help": " ".join(w for w in (help_text(name), more_help, unused_note(name)) if w),
        "disabled": disabled or name in unused_now(),
    }
    if bounded:
        args["min_value"], args["max_value"] = limits(name)
    return args


def init_choice_setting(name: str, default) -> None:
    if name not in st.session_state:
        st.session_state[name] = default


def _recent_file() -> Path:
    return runs_dir() / ".recent-folders.json"


def recent_folders() -> list[str]:
    items = read_json(_recent_file(), [])
    items = [p for p in items if isinstance(p, str)] if isinstance(items, list) else []
    return [p for p in items if folder_refusal(p) is None]


def remember_folder(path: str) -> None:
    items = [path] + [p for p in recent_folders() if p != path]
    try:
        _recent_file().parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(_recent_file(), items[:8])
    except OSError:
        log.warning("could not save the recent folders list", exc_info=True)


def current_scan(rescan: str | None = None, quick_only: bool = False) -> ScanReport | None:
    """The scan of the chosen data folder, made once per folder and split
    setting, and again when asked: rescan="changed" (a folder chosen, a
    picture moved) decodes no picture that an earlier scan or training
    checked and that has not changed since; rescan="all" (the "Check this
    folder" button) decodes every one. quick_only (the sidebar): only a
    scan that decodes nothing, else None. Raises DataFolderError for a bad path."""
    path = choice("data_dir")
    if not path:
        return None
    refusal = folder_refusal(path)
    if refusal:
        raise DataFolderError(refusal)
    key = (_folder_key(path), float(choice("val_fraction")), int(choice("seed")))
    cached = st.session_state.get("_scan")
    if cached and cached["key"] == key and not rescan:
        return ScanReport.from_dict(cached["report"])
    if not quick_only:
        report = scan_folder(key[0], key[1], key[2], reuse_checks_from=default_cache_dir(), decode_all=rescan == "all")
    elif st.session_state.get("_scan_needs_decoding") == key:  # asked before: the folder is not listed again
        return None
    else:
        report = scan_if_checked_before(key[0], key[1], key[2], default_cache_dir())
        if report is None:
            st.session_state["_scan_needs_decoding"] = key
            return None
    st.session_state["_scan"] = {"key": key, "report": report.to_dict(), "time": time.time()}
    return report


def _folder_key(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def scan_of_choice() -> dict | None:
    """The last scan's report (as a dict) if it is of the folder chosen now;
    None when no folder is chosen or it was not scanned yet (e.g. a folder
    typed with a mistake: the last good folder's counts would mislead)."""
    cached, path = st.session_state.get("_scan"), choice("data_dir")
    return cached["report"] if cached and path and cached["key"][0] == _folder_key(path) else None


def scan_or_none() -> tuple[ScanReport | None, str | None]:
    """(report, None), or (None, message) when the folder cannot be scanned."""
    try:
        return current_scan(), None
    except DataFolderError as exc:
        return None, str(exc)


def waiting_for_next_class(root: str, classes: int) -> bool:
    """A folder this session's upload just made, with its first class only:
    not a mistake to fix, a class still to come (the Data page and the sidebar)."""
    made = (st.session_state.get("_upload_made") or {}).get("path")
    return made == str(root) and classes == 1


def strategy_name() -> str:
    preset = choice("preset")
    if preset == "last":
        return f"last-{int(choice('last_n'))}"
    return preset


def custom_trained(backbone: str) -> dict | None:
    return (st.session_state.get("custom_trained") or {}).get(backbone)


def current_plan(counts: dict[str, int]):
    """The plan the chosen strategy and fine-tuning settings make, as training
    will build it: the blocks switched by hand ("custom") read the head-first
    epochs and gentler rates too, as the presets do."""
    strategy = strategy_name()
    trained = None
    if strategy == "custom":
        trained = custom_trained(choice("backbone"))
        if not trained or set(trained) - set(counts):
            strategy, trained = "linear", None
    return freeze_plan_for(
        counts,
        {
            "strategy": strategy,
            "trained_blocks": trained,
            "unfreeze_every": int(choice("unfreeze_every")),
            "lr_factor": float(choice("lr_factor")),
            "head_epochs": int(choice("head_epochs")),
            "discriminative_lr": bool(choice("discriminative_lr")),
        },
    )


def _as_field_type(field: dataclasses.Field, value):
    """A widget's value as the field's type; for an optional number 0 means None."""
    kind = str(field.type).replace(" ", "")
    if kind == "int|None":
        return int(value) or None
    if kind == "float|None":
        return float(value) or None
    return {"int": int, "float": float, "bool": bool}.get(kind, lambda v: v)(value)


def build_config() -> TrainConfig:
    """A TrainConfig from the user's choices: every offered field from the
    widget of the same name, the strategy from the preset."""
    backbone = choice("backbone")
    strategy = strategy_name()
    trained = None
    if strategy == "custom":
        trained = custom_trained(backbone)
        if not trained:
            strategy = "linear"
    values = {f.name: _as_field_type(f, choice(f.name)) for f in _offered()}
    return TrainConfig(
        data_dir=os.path.abspath(os.path.expanduser(choice("data_dir"))),
        backbone=backbone,
        strategy=strategy,
        trained_blocks=trained,
        **values,
    )
