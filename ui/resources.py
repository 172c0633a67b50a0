"""What is expensive and shared: the job manager, run store, a run's loaded
model, its evaluation and Grad-CAM pictures, thumbnails and block sizes, each
cached by Streamlit (st.cache_resource / st.cache_data) and keyed by a file's
modification time so a changed file is read again. Nothing here is ever called
from the training thread."""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st
from PIL import Image, ImageOps

from core.evaluation import LoadedModel, load_run_model
from core.explain import colorize, embedding_view, explain_image
from core.images import open_rgb
from core.jobs import ACTIVE, get_job_manager
from core.models import HeadConfig, build_model
from core.runs import Run, RunStore, open_run
from ui.state import runs_dir


def manager():
    """The process-wide job manager for the runs folder: every tab, page and
    rerun finds the same jobs."""
    return get_job_manager(runs_dir())


def store() -> RunStore:
    return RunStore(runs_dir())


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


@st.cache_data(show_spinner=False, max_entries=400)
def thumbnail(path: str, mtime: float, side: int = 160):
    """A square thumbnail (centre crop), so a row of them lines up."""
    try:
        image = open_rgb(path, max_side=side)
    except Exception:  # noqa: BLE001 - a thumbnail is never worth an error
        return None
    return ImageOps.fit(image, (side, side))


@st.cache_data(show_spinner=False, max_entries=32)
def block_param_counts(
    backbone: str,
    num_classes: int,
    head_hidden: int,
    head_dropout: float,
    fusion: str = "none",
    fusion_stages: int = 3,
) -> dict[str, int]:
    """Parameters per block, from a randomly initialised model (no download),
    with the head the settings ask for (a fused head has more numbers)."""
    head = HeadConfig.from_settings(
        {"head_hidden": head_hidden, "head_dropout": head_dropout, "fusion": fusion, "fusion_stages": fusion_stages}
    )
    model = build_model(backbone, max(num_classes, 2), init="random", head=head)
    return model.block_param_counts()


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
    return Run(Path(run_dir)).evaluation  # None when damaged or not whole: the run's reason says what


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


@st.cache_data(show_spinner=False, max_entries=20, hash_funcs={Image.Image: lambda _: None})
def _explain_upload(run_dir: str, mtime: float, data: bytes, image: Image.Image) -> dict:
    return explain_picture(open_run(run_dir), image)


def explain_upload(run, data: bytes, image: Image.Image) -> dict:
    """Grad-CAM of an upload, kept per picture (the image itself is keyed by its bytes)."""
    return _explain_upload(str(run.path), file_mtime(run.best_checkpoint), data, image)


@st.cache_data(show_spinner=False, max_entries=6)
def _embedding(run_dir: str, mtime: float, method: str) -> dict:
    return embedding_view(run_dir, method=method)


def embedding(run, method: str) -> dict:
    """Where the network places each validation picture, before and after
    training (slow: made once per run and method)."""
    return _embedding(str(run.path), file_mtime(run.best_checkpoint), method)
