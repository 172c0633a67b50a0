"""What every page shares: the folders, the user's choices, the job manager,
formatting, charts, and turning errors into short messages.

Pages stay thin: widgets and layout here and in the page scripts, the work in
`core`. Nothing here is ever called from the training thread.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch
from PIL import Image, ImageOps

from core.images import IMAGE_EXTENSIONS, open_rgb
from core.scan import DataFolderError, scan_folder
from core.scan_report import ScanReport
from core.evaluation import LoadedModel, load_run_model
from core.evaluation import per_class_table as per_class_rows
from core.explain import colorize, explain_image
from core.jobs import ACTIVE, get_job_manager
from core.backbones import WeightsUnavailableError, default_backbone, get_backbone
from core.freeze import freeze_plan_for
from core.models import HeadConfig, build_model
from core.runs import RunStore, atomic_write_json, read_json
from core.config import TrainConfig
from core.errors import TrainingError

log = logging.getLogger("transfer_studio")

RUNS_ENV = "TRANSFER_STUDIO_RUNS"
DATA_ENV = "TRANSFER_STUDIO_DATA"

# The page scripts, in the order of the guided flow; Results (after Train) and
# Compare (after Runs) are not numbered steps.
PAGE_DATA = "pages/1_data.py"
PAGE_MODEL = "pages/2_model.py"
PAGE_TRAIN = "pages/3_train.py"
PAGE_PLAYGROUND = "pages/4_playground.py"
PAGE_RUNS = "pages/5_runs.py"
PAGE_RESULTS = "pages/6_results.py"
PAGE_COMPARE = "pages/7_compare.py"

_D = TrainConfig(data_dir="")

# Every choice a user makes, with its default. Widgets use these names as keys
# (with persist_state="session"), so a choice survives switching pages.
DEFAULTS: dict = {
    "data_dir": "",
    "preset": "linear",
    "last_n": 2,
    "unfreeze_every": _D.unfreeze_every,
    "lr_factor": _D.lr_factor,
    "head_hidden": _D.head_hidden,
    "head_dropout": _D.head_dropout,
    "epochs": _D.epochs,
    # 0 = "auto": the engine picks from the machine (bigger batches on a big GPU).
    "batch_size": 0 if torch.cuda.is_available() else _D.batch_size,
    "lr": _D.lr,
    "optimizer": _D.optimizer,
    "schedule": _D.schedule,
    "weight_decay": _D.weight_decay,
    "momentum": _D.momentum,
    "augment": _D.augment,
    "label_smoothing": _D.label_smoothing,
    "class_weighted": _D.class_weighted,
    "early_stopping": _D.early_stopping,
    "image_size": 0,  # 0: the backbone's own size
    "seed": _D.seed,
    "val_fraction": _D.val_fraction,
    "device": _D.device,
    "mixed_precision": _D.mixed_precision,
    "feature_cache": _D.feature_cache,
    "init": _D.init,
}

PRESETS = {
    "linear": "Linear probe",
    "last": "Last blocks",
    "full": "Full fine-tune",
    "gradual": "Gradual unfreezing",
    "discriminative": "Discriminative rates",
    "custom": "My own choice",
}
PRESET_HELP = {
    "linear": "Only the new head learns; the pretrained network is a fixed feature extractor. Fastest, and very good with few pictures.",
    "last": "The new head and the last few pretrained blocks learn; the earlier blocks stay frozen.",
    "full": "Every block learns. Slowest; needs more pictures and a smaller learning rate.",
    "gradual": "Starts with only the head; one more block unfreezes, from the top down, every few epochs.",
    "discriminative": "Every block learns, the earlier (more general) blocks at smaller learning rates.",
    "custom": "You switched blocks on or off yourself.",
}


# --- settings ------------------------------------------------------------------


def default_runs_dir() -> str:
    return os.environ.get(RUNS_ENV) or "runs"


def default_data_root() -> str:
    return os.environ.get(DATA_ENV) or "data"


def runs_dir() -> Path:
    return Path(st.session_state.get("runs_dir") or default_runs_dir()).expanduser()


def data_root() -> Path:
    return Path(st.session_state.get("data_root") or default_data_root()).expanduser()


def manager():
    """The process-wide job manager for the runs folder: every tab, page and
    rerun finds the same jobs."""
    return get_job_manager(runs_dir())


def store() -> RunStore:
    return RunStore(runs_dir())


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


def init_choice_setting(name: str, default) -> None:
    if name not in st.session_state:
        st.session_state[name] = default


# --- recent folders -------------------------------------------------------------


def _recent_file() -> Path:
    return runs_dir() / ".recent-folders.json"


def recent_folders() -> list[str]:
    items = read_json(_recent_file(), [])
    return [p for p in items if isinstance(p, str)] if isinstance(items, list) else []


def remember_folder(path: str) -> None:
    items = [path] + [p for p in recent_folders() if p != path]
    try:
        _recent_file().parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(_recent_file(), items[:8])
    except OSError:
        log.warning("could not save the recent folders list", exc_info=True)


# --- the scan of the chosen folder ----------------------------------------------


def current_scan(rescan: bool = False) -> ScanReport | None:
    """The scan of the chosen data folder, made once per folder and split
    setting (and again when asked). Raises DataFolderError for a bad path."""
    path = choice("data_dir")
    if not path:
        return None
    key = (os.path.abspath(os.path.expanduser(path)), float(choice("val_fraction")), int(choice("seed")))
    cached = st.session_state.get("_scan")
    if cached and cached["key"] == key and not rescan:
        return ScanReport.from_dict(cached["report"])
    report = scan_folder(key[0], val_fraction=key[1], seed=key[2])
    st.session_state["_scan"] = {"key": key, "report": report.to_dict(), "time": time.time()}
    return report


def scan_or_none() -> tuple[ScanReport | None, str | None]:
    """(report, None), or (None, message) when the folder cannot be scanned."""
    try:
        return current_scan(), None
    except DataFolderError as exc:
        return None, str(exc)


@st.cache_data(show_spinner=False, max_entries=400)
def thumbnail(path: str, mtime: float, side: int = 160):
    """A square thumbnail (centre crop), so a row of them lines up."""
    try:
        image = open_rgb(path, max_side=side)
    except Exception:  # noqa: BLE001 - a thumbnail is never worth an error
        return None
    return ImageOps.fit(image, (side, side))


# --- models ---------------------------------------------------------------------


@st.cache_data(show_spinner=False, max_entries=32)
def block_param_counts(backbone: str, num_classes: int, head_hidden: int, head_dropout: float) -> dict[str, int]:
    """Parameters per block, from a randomly initialised model (no download)."""
    model = build_model(
        backbone,
        max(num_classes, 2),
        init="random",
        head=HeadConfig(hidden=int(head_hidden), dropout=float(head_dropout)),
    )
    return model.block_param_counts()


def strategy_name() -> str:
    preset = choice("preset")
    if preset == "last":
        return f"last-{int(choice('last_n'))}"
    return preset


def custom_trained(backbone: str) -> dict | None:
    return (st.session_state.get("custom_trained") or {}).get(backbone)


def current_plan(counts: dict[str, int]):
    strategy = strategy_name()
    if strategy == "custom":
        trained = custom_trained(choice("backbone"))
        if not trained or set(trained) - set(counts):
            strategy, trained = "linear", None
        return freeze_plan_for(counts, {"strategy": "custom" if trained else "linear", "trained_blocks": trained})
    return freeze_plan_for(
        counts, {"strategy": strategy, "unfreeze_every": int(choice("unfreeze_every")), "lr_factor": float(choice("lr_factor"))}
    )


def strategy_label(strategy: str | None) -> str:
    if not strategy:
        return "?"
    if strategy.startswith("last-"):
        n = strategy.split("-", 1)[1]
        return f"last {n} block{'s' if n != '1' else ''}"
    return {"linear": "linear probe", "custom": "own choice of blocks"}.get(
        strategy, PRESETS.get(strategy, strategy).lower()
    )


def build_config() -> TrainConfig:
    """A TrainConfig from the user's choices."""
    backbone = choice("backbone")
    strategy = strategy_name()
    trained = None
    if strategy == "custom":
        trained = custom_trained(backbone)
        if not trained:
            strategy = "linear"
    image_size = int(choice("image_size")) or None
    return TrainConfig(
        data_dir=os.path.abspath(os.path.expanduser(choice("data_dir"))),
        backbone=backbone,
        init=choice("init"),
        strategy=strategy,
        trained_blocks=trained,
        unfreeze_every=int(choice("unfreeze_every")),
        lr_factor=float(choice("lr_factor")),
        head_hidden=int(choice("head_hidden")),
        head_dropout=float(choice("head_dropout")),
        epochs=int(choice("epochs")),
        batch_size=int(choice("batch_size")) or None,
        image_size=image_size,
        optimizer=choice("optimizer"),
        lr=float(choice("lr")),
        weight_decay=float(choice("weight_decay")),
        momentum=float(choice("momentum")),
        schedule=choice("schedule"),
        augment=choice("augment"),
        label_smoothing=float(choice("label_smoothing")),
        class_weighted=bool(choice("class_weighted")),
        early_stopping=int(choice("early_stopping")),
        seed=int(choice("seed")),
        val_fraction=float(choice("val_fraction")),
        device=choice("device"),
        mixed_precision=bool(choice("mixed_precision")),
        feature_cache=bool(choice("feature_cache")),
    )


# --- jobs -------------------------------------------------------------------------


def current_job():
    """The job this page should show: the one this tab started, else a running
    one, else the latest (so a reload or a second tab finds it again)."""
    mgr = manager()
    job_id = st.session_state.get("job_id")
    job = mgr.get(job_id) if job_id else None
    if job is not None and job.state in ACTIVE:
        return job
    active = mgr.active_jobs()
    if active:
        return active[0]
    return job or mgr.latest_job()


# --- formatting -------------------------------------------------------------------


def fmt_params(n: int | float | None) -> str:
    if n is None:
        return "?"
    n = float(n)
    if n >= 1e6:
        return f"{n / 1e6:.1f} million"
    if n >= 1e4:
        return f"{n / 1e3:.0f} thousand"
    return f"{int(n):,}"


def fmt_short(n: int | float) -> str:
    n = float(n)
    if n >= 1e6:
        return f"{n / 1e6:.1f} M"
    if n >= 1e3:
        return f"{n / 1e3:.0f} k"
    return f"{int(n)}"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "–"
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {s:02d} s"
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m:02d} min"


def fmt_pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}%"


def fmt_when(ts: float | None) -> str:
    return "–" if not ts else time.strftime("%d %b %H:%M", time.localtime(ts))


STATE_WORDS = {
    "queued": "waiting",
    "running": "training",
    "stopping": "stopping",
    "stopped": "stopped",
    "finished": "finished",
    "failed": "failed",
    "interrupted": "interrupted",
}
STATE_ICONS = {
    "queued": ":material/hourglass_top:",
    "running": ":material/directions_run:",
    "stopping": ":material/pan_tool:",
    "stopped": ":material/stop_circle:",
    "finished": ":material/check_circle:",
    "failed": ":material/error:",
    "interrupted": ":material/warning:",
}


def state_word(state: str | None) -> str:
    """Plain words, for tables."""
    return STATE_WORDS.get(state or "", state or "?")


def state_label(state: str | None) -> str:
    """An icon and words, for markdown."""
    return f"{STATE_ICONS.get(state or '', '')} {state_word(state)}".strip()


def backbone_title(name: str | None) -> str:
    try:
        return get_backbone(name).title
    except (ValueError, TypeError):
        return str(name)


# --- charts -----------------------------------------------------------------------

TRAIN_COLOR = "#1f77b4"
VAL_COLOR = "#ff7f0e"
BATCH_COLOR = "rgba(31, 119, 180, 0.3)"


def _layout(fig: go.Figure, title: str, y_title: str, height: int = 320) -> go.Figure:
    fig.update_layout(
        title=title,
        height=height,
        margin=dict(l=10, r=10, t=50, b=10),
        xaxis_title="epoch",
        yaxis_title=y_title,
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1),
    )
    return fig


def loss_figure(
    history: list[dict], batch_losses: list | None = None, steps_per_epoch: int | None = None, epochs: int | None = None
) -> go.Figure:
    fig = go.Figure()
    if batch_losses and steps_per_epoch:
        fig.add_trace(
            go.Scatter(
                x=[s / steps_per_epoch for s, _ in batch_losses],
                y=[l for _, l in batch_losses],
                mode="lines",
                name="train (each batch)",
                line=dict(color=BATCH_COLOR, width=1),
            )
        )
    epochs_x = [r["epoch"] for r in history]
    fig.add_trace(
        go.Scatter(
            x=epochs_x,
            y=[r["train_loss"] for r in history],
            mode="lines+markers",
            name="train",
            line=dict(color=TRAIN_COLOR),
        )
    )
    fig.add_trace(
        go.Scatter(
            x=epochs_x,
            y=[r["val_loss"] for r in history],
            mode="lines+markers",
            name="validation",
            line=dict(color=VAL_COLOR),
        )
    )
    _layout(fig, "Loss (lower is better)", "loss")
    if epochs:
        fig.update_xaxes(range=[0, max(epochs, 1) + 0.1], dtick=1 if epochs <= 20 else None)
    fig.update_yaxes(rangemode="tozero")
    return fig


def accuracy_figure(history: list[dict], epochs: int | None = None) -> go.Figure:
    fig = go.Figure()
    epochs_x = [r["epoch"] for r in history]
    fig.add_trace(
        go.Scatter(
            x=epochs_x,
            y=[100 * r["train_accuracy"] for r in history],
            mode="lines+markers",
            name="train",
            line=dict(color=TRAIN_COLOR),
        )
    )
    fig.add_trace(
        go.Scatter(
            x=epochs_x,
            y=[100 * r["val_accuracy"] for r in history],
            mode="lines+markers",
            name="validation",
            line=dict(color=VAL_COLOR),
        )
    )
    _layout(fig, "Accuracy (higher is better)", "% correct")
    fig.update_yaxes(range=[0, 101])
    if epochs:
        fig.update_xaxes(range=[0, max(epochs, 1) + 0.1], dtick=1 if epochs <= 20 else None)
    return fig


def class_counts_figure(report: ScanReport) -> go.Figure:
    classes = report.classes
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            x=classes,
            y=[report.counts[c]["train"] for c in classes],
            name="for training",
            marker_color=TRAIN_COLOR,
            text=[report.counts[c]["train"] for c in classes],
        )
    )
    fig.add_trace(
        go.Bar(
            x=classes,
            y=[report.counts[c]["val"] for c in classes],
            name="for checking (validation)",
            marker_color=VAL_COLOR,
            text=[report.counts[c]["val"] for c in classes],
        )
    )
    fig.update_layout(
        barmode="group",
        title="Pictures per class",
        height=320,
        margin=dict(l=10, r=10, t=50, b=10),
        yaxis_title="pictures",
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1),
    )
    return fig


def top_classes_figure(top: list) -> go.Figure:
    names = [c for c, _ in top][::-1]
    probs = [100 * p for _, p in top][::-1]
    colors = ["#c7c7c7"] * (len(names) - 1) + [VAL_COLOR]
    fig = go.Figure(
        go.Bar(
            x=probs,
            y=names,
            orientation="h",
            marker_color=colors,
            text=[f"{p:.1f}%" for p in probs],
            textposition="auto",
        )
    )
    fig.update_layout(
        title="How sure the model is",
        height=80 + 45 * len(names),
        margin=dict(l=10, r=10, t=50, b=10),
        xaxis=dict(range=[0, 100], title="probability (%)"),
    )
    return fig


# --- page furniture -------------------------------------------------------------


def _hand_over_to_app() -> None:
    """Run this page through app.py when Streamlit ran it on its own.

    Because the page scripts live in pages/, a fresh server whose very first
    request is a page's address (a bookmark of /results, say) takes the app for
    an old-style "pages folder" app: it runs that script alone, with a sidebar
    of file names and no app.py. app.py's st.navigation turns that mode off
    for the whole process, so turn it off and rerun: the rerun goes through
    app.py and lands on the same page, because each page's url_path in app.py
    is the name Streamlit derives from its file (6_results.py -> results)."""
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # a Streamlit without it has no such mode
        return
    if getattr(PagesManager, "uses_pages_directory", False):
        PagesManager.uses_pages_directory = False
        st.rerun()


def feature_cache_caption(record: dict | None) -> None:
    """Say in words whether stored features made a run fast (the job's or
    the run's "feature_cache" record, whose note core writes)."""
    if record and record.get("note"):
        icon = ":material/bolt:" if record.get("used") else ":material/info:"
        st.caption(f"{icon} {record['note']}")


def intro(text: str) -> None:
    """One sentence: what this page is for and what to do. (Every page starts
    with it, so it also makes sure the page runs inside the app.)"""
    _hand_over_to_app()
    st.markdown(f"<div style='font-size:1.1rem;margin-bottom:0.5rem'>{text}</div>", unsafe_allow_html=True)


def next_step(page: str, label: str, icon: str = ":material/arrow_forward:") -> None:
    """The guided flow's "what now": one clear button to the next page."""
    if st.button(label, icon=icon, type="primary", key=f"next_{page}"):
        st.switch_page(page)


def friendly(exc: BaseException) -> str:
    """A short message a person can act on, for an exception from core."""
    if isinstance(exc, (DataFolderError, WeightsUnavailableError, TrainingError)):
        return str(exc)
    if isinstance(exc, FileNotFoundError):
        return f"{exc} Check that the file or folder is still there."
    if isinstance(exc, PermissionError):
        return f"Transfer Studio is not allowed to read or write {exc.filename or 'a file'}. Check its permissions."
    if isinstance(exc, (ValueError, OSError)):
        return f"{exc}"
    return f"Something went wrong ({type(exc).__name__}: {exc}). Try again; if it keeps happening, restart the app."


@contextmanager
def guard(what: str = ""):
    """Show any error inside as a short message instead of a traceback."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - the page must never show a traceback
        log.exception("error %s", what)
        st.error(f"{what + ': ' if what else ''}{friendly(exc)}", icon=":material/error:")


# --- uploads ----------------------------------------------------------------------

_SAFE = re.compile(r"[^A-Za-z0-9 _.-]+")
MAX_ZIP_BYTES = 4 * 2**30


def safe_name(text: str, fallback: str = "my-pictures") -> str:
    name = _SAFE.sub("", (text or "").strip()).strip(" .")
    return name[:80] or fallback


def save_uploaded_images(files, folder: Path, class_name: str) -> int:
    """Save uploaded pictures into folder/class_name/. Returns how many."""
    target = folder / safe_name(class_name, "class")
    target.mkdir(parents=True, exist_ok=True)
    n = 0
    for f in files:
        name = safe_name(Path(f.name).name, f"image{n}.jpg")
        if Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        (target / name).write_bytes(f.getvalue())
        n += 1
    return n


def extract_zip(data, folder: Path) -> int:
    """Unpack a zip of class folders into `folder`, safely: no paths outside
    it, no hidden or system files, and a single wrapping folder is dropped.
    Returns the number of files written."""
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(data) as zf:
        members = []
        total = 0
        for info in zf.infolist():
            if info.is_dir():
                continue
            parts = [p for p in PurePosixPath(info.filename.replace("\\", "/")).parts if p not in ("", ".")]
            if not parts or any(p == ".." for p in parts) or info.filename.startswith("/"):
                continue
            if any(p.startswith(".") or p.lower() == "__macosx" for p in parts):
                continue
            total += info.file_size
            members.append((info, parts))
        if total > MAX_ZIP_BYTES:
            raise ValueError("This zip file unpacks to more than 4 GB; unpack it yourself and type its folder instead.")
        # Drop wrapping folders ("photos/cats/1.jpg" -> "cats/1.jpg").
        while members and all(len(p) >= 3 for _, p in members) and len({p[0] for _, p in members}) == 1:
            members = [(i, p[1:]) for i, p in members]
        for info, parts in members:
            out = folder.joinpath(*[safe_name(p, "file") for p in parts])
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
    return len(members)


def run_label(run, with_accuracy: bool = True) -> str:
    """One line naming a run. A select widget remembers its choice by this
    text, so a widget whose runs may still be training passes
    with_accuracy=False (the accuracy changes every epoch)."""
    s = run.summary()
    acc = s.get("best_val_accuracy")
    acc_text = f" · {fmt_pct(acc)}" if with_accuracy and acc is not None and acc >= 0 else ""
    data = Path(s["data"]).name if s.get("data") else "?"
    return f"{s['run']} · {backbone_title(s['backbone'])} · {strategy_label(s['strategy'])} · {data}{acc_text}"


def pick_run(runs: list, key: str, label: str = "Trained model", help: str | None = None, prefer: str | None = None):
    """A selectbox of runs (newest first) that follows a ?run=NAME link,
    remembers the choice across pages, and returns the chosen Run."""
    names = [r.name for r in runs]
    by_name = {r.name: r for r in runs}
    wanted = st.query_params.get("run")
    seen = f"_{key}_query"
    if wanted in names and st.session_state.get(seen) != wanted:
        st.session_state[key] = wanted
        st.session_state[seen] = wanted
    if st.session_state.get(key) not in names:
        st.session_state[key] = prefer if prefer in names else names[0]
    # The label must not change while a run trains, or the choice would be lost.
    labels = {n: run_label(r, with_accuracy=r.state not in ACTIVE) for n, r in by_name.items()}
    st.selectbox(label, names, key=key, format_func=labels.get, help=help, persist_state="session")
    chosen = st.session_state[key]
    # The address follows the choice: a reload keeps it, and a link to another run still wins.
    st.query_params["run"] = chosen
    st.session_state[seen] = chosen
    return by_name[chosen]


# --- a run's model, cached --------------------------------------------------------


def file_mtime(path: Path) -> float:
    try:
        return os.path.getmtime(path)
    except OSError:
        return 0.0


@st.cache_resource(show_spinner=False, max_entries=3)
def _loaded_model(run_dir: str, mtime: float) -> LoadedModel:
    return load_run_model(run_dir, device="cpu")


def loaded_model(run) -> LoadedModel:
    """The run's best model on the CPU, loaded once (until best.pt changes) and
    shared by every session."""
    return _loaded_model(str(run.path), file_mtime(run.best_checkpoint))


@st.cache_data(show_spinner=False, max_entries=4)
def _evaluation(run_dir: str, mtime: float) -> dict | None:
    return read_json(Path(run_dir) / "eval.json", None)


def evaluation(run) -> dict | None:
    """The run's eval.json, read once until it changes."""
    return _evaluation(str(run.path), file_mtime(run.path / "eval.json"))


@st.cache_data(show_spinner=False, max_entries=400)
def _explain_file(run_dir: str, mtime: float, path: str, target: int | None, layer: str | None) -> dict | None:
    if not os.path.isfile(path):  # a picture gone since training: no heatmap
        return None
    result = explain_image(_loaded_model(run_dir, mtime), path, target_class=target, layer=layer)
    return _explained(result)


def _explained(result: dict) -> dict:
    return {
        "view": result["view"],
        "overlay": result["overlay"],
        "heatmap": Image.fromarray(colorize(result["heatmap"])),
        "class_name": result["class_name"],
        "probability": result["probability"],
        "layer": result["layer"],
    }


def explain_file(run, path: str, target: int | None = None, layer: str | None = None) -> dict | None:
    """Grad-CAM for one picture file with the run's model: {"view", "overlay",
    "heatmap" (coloured), "class_name", "probability", "layer"}; cached per
    picture. None when the file can no longer be read."""
    return _explain_file(str(run.path), file_mtime(run.best_checkpoint), str(path), target, layer)


def explain_picture(run, image: Image.Image) -> dict:
    """Grad-CAM for a picture in memory (an upload), for its predicted class."""
    return _explained(explain_image(loaded_model(run), image))


CAM_CAPTION = (
    "The colours show **where the model looked**: red and yellow are the parts of the picture that pushed it "
    "towards its answer, blue the parts that hardly mattered (Grad-CAM)."
)


# --- results tables ---------------------------------------------------------------


def per_class_table(evaluation: dict) -> None:
    """Recall, precision and F1 per class, as bars a person can read."""
    table = pd.DataFrame(
        [
            {
                "Class": c["class"],
                "Pictures": c["support"],
                "Found (recall)": 100 * c["recall"],
                "Right when it says so (precision)": 100 * c["precision"],
                "F1": c["f1"],
            }
            for c in per_class_rows(evaluation)
        ]
    )
    st.dataframe(
        table,
        hide_index=True,
        column_config={
            "Pictures": st.column_config.NumberColumn(help="Validation pictures of this class."),
            "Found (recall)": st.column_config.ProgressColumn(
                format="%.0f%%",
                min_value=0,
                max_value=100,
                help="Of this class's pictures, the share the model recognised.",
            ),
            "Right when it says so (precision)": st.column_config.ProgressColumn(
                format="%.0f%%",
                min_value=0,
                max_value=100,
                help="Of the pictures the model called this class, the share that really were.",
            ),
            "F1": st.column_config.NumberColumn(format="%.2f", help="Balances recall and precision; 1.0 is perfect."),
        },
    )
