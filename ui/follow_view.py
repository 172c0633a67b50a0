"""A run trained by another process (the command line, torchrun, another app
process or machine), followed live from its folder (core.follow), with a
Stop that works across processes (a stop request in the run folder)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core import follow, launch
from core.runs import ACTIVE_STATES, Run
from ui import charts, widgets, words
from ui.live import doing_now, fraction, notes


def _stop(run_dir: str) -> None:
    follow.request_stop(run_dir)


def _who(snap: dict) -> str:
    n = snap.get("world_size") or 1
    where = f" on {words.md_text(str(snap['host']))}" if snap.get("host") else ""
    return (f"{n} processes (torchrun)" if n > 1 else "another process") + where


def _progress(snap: dict) -> None:
    """The Train page's bar and notes, in its words (ui.live)."""
    st.progress(fraction(snap), text=doing_now(snap))
    notes(snap)


def _numbers(snap: dict) -> None:
    m1, m2, m3 = st.columns(3)
    speed = snap.get("images_per_second")
    m1.metric("Pictures per second", f"{speed:.0f}" if speed else "–")
    m2.metric("Time left (estimate)", words.fmt_time_left(snap))
    last = snap["history"][-1] if snap["history"] else None
    m3.metric("Validation accuracy", words.fmt_pct(last["val_accuracy"]) if last else "–")


def _ending(snap: dict) -> None:
    state, reason = snap["state"], snap.get("reason")
    if state == "finished":
        result = snap.get("result") or {}
        st.success(
            f"**Finished.** Best validation accuracy **{words.fmt_pct(result.get('val_accuracy'))}** "
            f"at epoch {result.get('best_epoch')}.",
            icon=":material/celebration:",
        )
    elif state in ("failed", "damaged"):
        st.error(f"**Training failed.** {reason or ''}", icon=":material/error:")
    elif state == "stopped":
        st.info(words.stopped_words(snap), icon=":material/stop_circle:")
    elif state == "interrupted":
        st.warning(
            "The process that trained this run ended without saying how. Resume it from the Runs page.",
            icon=":material/warning:",
        )


def show(run_dir: str) -> None:
    """The live view of one run from its folder (redrawn by the caller's fragment)."""
    snap = follow.snapshot(run_dir)
    config = Run(Path(run_dir)).config
    state = snap["state"]
    st.markdown(
        f"**{words.state_label(state)}** — {words.backbone_title(config.get('backbone'))}, "
        f"{words.strategy_label(config.get('strategy'))} · run `{Path(run_dir).name}` · trained by {_who(snap)}"
    )
    going = state in ACTIVE_STATES or state == "stopping"
    if going:
        _progress(snap)
        _numbers(snap)
        st.button(
            "Stop training",
            icon=":material/stop_circle:",
            on_click=_stop,
            args=(run_dir,),
            key=f"stop_run_{Path(run_dir).name}",
            disabled=bool(snap.get("stop_asked")),
            help="Asks the process that trains it to stop after its current batch; the last finished epoch is kept.",
        )
    else:
        _ending(snap)
    history, epochs = snap["history"], snap.get("epochs") or 1
    if history or snap.get("batch_losses"):
        steps = snap.get("batches") if snap.get("phase") == "Training" else snap.get("steps_per_epoch")
        axis = charts.epoch_axis(history, epochs, running=going)
        c1, c2 = st.columns(2)
        c1.plotly_chart(
            charts.loss_figure(history, snap.get("batch_losses"), steps, axis), key=f"floss_{Path(run_dir).name}"
        )
        c2.plotly_chart(charts.accuracy_figure(history, axis), key=f"facc_{Path(run_dir).name}")
        st.caption(f"{len(history)} of {epochs} epochs done.")


def _show_safely(run_dir: str) -> None:
    with widgets.guard("Could not show the training's progress"):
        show(run_dir)


def live(run_dir: str) -> None:
    """One followed run, redrawn every 1.5 s while this page is open."""
    st.fragment(run_every=1.5)(_show_safely)(run_dir)


def elsewhere(runs_dir: str | Path, own: set[str]) -> None:
    """Every run some other process trains now in this runs folder, live."""
    mine = st.session_state.get("_launch")  # shown by launched()
    runs = [r for r in follow.active_runs(runs_dir, own) if not mine or r.status.get("launch_id") != mine.id]
    if not runs:
        return
    st.subheader("Training elsewhere")
    st.caption("Started from the command line, with torchrun, or in another window: followed from their run folders.")
    for run in runs:
        with st.container(border=True):
            live(str(run.path))


# --- a torchrun training this app started ("use all N GPUs") ---------------------------


def gpu_choice() -> int:
    """With more than one GPU, a box to train on all of them (torchrun). Returns
    how many processes to start: 0 for the usual training in this app."""
    gpus = launch.gpu_count()
    if gpus < 2:
        return 0
    use = st.checkbox(
        f"Use all {gpus} GPUs",
        key="use_all_gpus",
        help="Starts one training over all the GPUs with torchrun (one process per GPU, PyTorch's "
        "DistributedDataParallel) and follows it here.",
    )
    return gpus if use else 0


def start_launch(config, runs_dir: str | Path, processes: int) -> None:
    st.session_state["_launch"] = launch.start(config, runs_dir, processes)


def _launched(runs_dir: str) -> None:
    with widgets.guard("Could not show the training's progress"):
        _launched_view(runs_dir)


def _launched_view(runs_dir: str) -> None:
    started = st.session_state.get("_launch")
    if started is None:
        return
    run = launch.find_run(runs_dir, started.id)
    if run is not None:
        show(str(run.path))
    elif started.ended:
        st.error(
            "The torchrun training ended before it made its run folder. Its last words:",
            icon=":material/error:",
        )
        st.code(launch.log_tail(started), language=None)
    else:
        st.progress(0.0, text="Starting the processes…")


def launched(runs_dir: str | Path) -> bool:
    """The torchrun training this session started, if any, followed live. Returns whether there is one."""
    if st.session_state.get("_launch") is None:
        return False
    st.subheader("Training on all GPUs")
    with st.container(border=True):
        st.fragment(run_every=1.5)(_launched)(str(runs_dir))
    return True
