"""Train: start a training in the background and watch it live."""

from __future__ import annotations

import math
from pathlib import Path

import streamlit as st

from core.backbones import get_backbone, weights_cached
from core.counts import how_many
from core.errors import friendly
from core.jobs import ACTIVE
from core.runs import open_run
from ui import bookmarks, charts, follow_view, live, networks, page_width, resources, state, widgets, words

bookmarks.open_inside_app(state.PAGE_TRAIN)  # a bookmark opened first on a fresh server
st.title(":material/fitness_center: Train")
widgets.intro(
    "<b>Step 3 of 4.</b> Press <b>Start training</b> and watch the model learn: the charts fill in as it "
    "goes (you can switch pages meanwhile). When it is done, try it in the <b>Playground</b>."
)


def _start() -> None:
    if resources.manager().active_jobs():  # e.g. a second tab started one a moment ago
        st.session_state["_start_error"] = "A training is already running. Wait for it to end, or stop it."
        return
    try:
        config = state.build_config()
        if st.session_state.get("_gpus_to_use"):  # "use all N GPUs": a torchrun subprocess, followed
            follow_view.start_launch(config, state.runs_dir(), st.session_state["_gpus_to_use"])
            return
        job = resources.manager().submit(config)
    except Exception as exc:  # noqa: BLE001 - reported on the page
        st.session_state["_start_error"] = friendly(exc)
        return
    st.session_state["job_id"] = job.id
    st.session_state.pop("_start_error", None)


def _stop(job) -> None:
    job.request_stop()


def _steps_per_epoch(snap: dict) -> int | None:
    """Batches per epoch, for putting the per-batch losses on the epoch axis."""
    cache = st.session_state.setdefault("_steps_per_epoch", {})
    run_dir = snap.get("run_dir")
    if run_dir in cache:
        return cache[run_dir]
    if snap.get("phase") == "Training" and snap.get("batches"):
        cache[run_dir] = int(snap["batches"])
        return cache[run_dir]
    try:
        run = open_run(run_dir)
        if run.batch_losses.steps_per_epoch:  # as the run's own file says
            cache[run_dir] = run.batch_losses.steps_per_epoch
            return cache[run_dir]
        scan = run.scan
        if scan and scan.get("train"):
            cache[run_dir] = math.ceil(len(scan["train"]) / int(run.config.get("batch_size") or 32))
            return cache[run_dir]
    except (FileNotFoundError, TypeError, ValueError):
        pass
    return None


def _evaluation(run_dir: str | None) -> dict | None:
    try:
        return open_run(run_dir).evaluation if run_dir else None
    except FileNotFoundError:
        return None


def _device_words(snap: dict) -> tuple[str, str]:
    """The kind of device, short enough for a metric's big figures (there
    "CPU (2 cores)" showed as "CPU (2 cor…"), and its name and memory below."""
    name = snap.get("device_name") or ""
    if snap.get("device_memory_gb"):
        name += f" · {snap['device_memory_gb']:.0f} GB"
    kind = str(snap.get("device") or "").split(":")[0]
    return {"cuda": "GPU", "mps": "GPU", "cpu": "CPU"}.get(kind, name or "–"), name


def _rerun_when_it_ends(job, job_state: str) -> None:
    """While a job is active the fragment redraws only itself; when it has just
    ended, redraw the whole page once (without the timer)."""
    if job_state in ACTIVE and st.session_state.get("_seen_state", {}).get(job.id) in (None, *ACTIVE):
        st.session_state.setdefault("_seen_state", {})[job.id] = job_state
    elif job_state not in ACTIVE and st.session_state.get("_seen_state", {}).get(job.id) in ACTIVE:
        st.session_state["_seen_state"][job.id] = job_state
        st.rerun()


def progress_bars(snap: dict) -> None:
    """What the training does now (the download, the feature pass, the epochs
    and batches, the final evaluation), in the sidebar's words (ui.live)."""
    left = live.time_left(snap)
    st.progress(live.fraction(snap), text=live.doing_now(snap) + (f" · {left}" if left else ""))
    if "features" in (snap.get("phase") or ""):
        st.caption(
            "The frozen blocks look at each picture once and their output is remembered, "
            "so every epoch after that takes only seconds."
        )


def live_numbers(job, snap: dict, narrow: bool) -> None:
    """Speed, time left, the latest accuracy, the device, and the Stop button (two rows of two in a `narrow`
    page: four in a row cut "Time left (estim…" and its "at least 0.3 s" to "at lea…")."""
    job_state = snap["state"]
    m1, m2, m3, m4 = st.columns(4) if not narrow else [*st.columns(2), *st.columns(2)]
    speed = snap.get("images_per_second")
    m1.metric(
        "Pictures per second",
        f"{speed:.0f}" if speed else "–",
        help="How many training pictures the model gets through each second.",
    )
    in_step = live.counted(snap) is not None  # before the epochs (reading, the frozen blocks' pass): its own time
    m2.metric(
        "Time left in this step" if in_step else "Time left (estimate)",
        words.fmt_time_left(snap),
        help="Before the epochs start, the time left in the step shown above; then, in the whole training.",
    )
    last = snap["history"][-1] if snap["history"] else None
    m3.metric(
        "Validation accuracy",
        words.fmt_pct(last["val_accuracy"]) if last else "–",
        help="The share of the validation pictures the model gets right after the last finished epoch.",
    )
    kind, name = _device_words(snap)
    m4.metric("Running on", kind, help="The GPU (with its memory) or the CPU that trains the model.")
    if name and name != kind:
        m4.caption(words.md_text(name))
    st.button(
        "Stop training",
        icon=":material/stop_circle:",
        on_click=_stop,
        args=(job,),
        key=f"stop_{job.id}",
        disabled=job_state == "stopping",
        help="Stops after the current batch; the last finished epoch is kept and can be resumed."
        if snap["history"]
        else "Stops after the current batch. No epoch has finished yet, so there will be nothing to resume.",
    )


def finished_box(snap: dict, run_name: str) -> None:
    """What the run achieved, in words, and where to go next."""
    result = snap.get("result") or {}
    st.success(
        f"**Finished.** Best validation accuracy **{words.fmt_pct(result.get('val_accuracy'))}** "
        f"at epoch {result.get('best_epoch')} of {result.get('epochs_done')}, in "
        f"{words.fmt_duration(result.get('seconds'))} on {result.get('device')}.{words.why_this_epoch(snap.get('history'), result)}",
        icon=":material/celebration:",
    )
    evaluation = _evaluation(snap.get("run_dir"))
    if evaluation and evaluation.get("count"):
        right = round(evaluation["accuracy"] * evaluation["count"])
        st.markdown(
            f"In plain words: the model named **{right} of the {evaluation['count']}** validation "
            "pictures correctly, pictures it never learned from."
        )
    if snap.get("skipped_files"):
        left_out = len(snap["skipped_files"])
        st.caption(
            f"{how_many(left_out, 'file')} {'was' if left_out == 1 else 'were'} left out (not pictures, or unreadable): "
            "the Data page lists which and why."
        )
    widgets.feature_cache_caption(snap.get("feature_cache"))
    if evaluation is not None:
        widgets.run_links(run_name, "See the results")
    else:  # its eval.json lost or broken since: the Runs page says what and offers "Check it again"
        st.page_link(
            state.PAGE_RUNS,
            label="Its results cannot be read: open it on the Runs page",
            icon=":material/history:",
            query_params={"run": run_name},
        )


def training_curves(job, snap: dict, config, narrow: bool) -> None:
    """Loss and accuracy, filling in as the model trains: side by side, or one above the other in a `narrow`
    page (side by side there, the loss chart's legend lay over its title)."""
    job_state = snap["state"]
    history = snap["history"]
    if not history and job_state not in ACTIVE:
        return  # nothing was learned: no empty charts
    if not history:
        st.caption(
            "The charts fill in as the model trains: the faint line after every few batches, the dots after each epoch."
        )
    epochs = charts.epoch_axis(history, snap.get("epochs") or config.epochs, running=job_state in ACTIVE)
    c1, c2 = st.columns(2) if not narrow else (st.container(), st.container())
    c1.plotly_chart(
        charts.loss_figure(history, snap.get("batch_losses"), _steps_per_epoch(snap), epochs), key=f"loss_{job.id}"
    )
    c2.plotly_chart(charts.accuracy_figure(history, epochs), key=f"acc_{job.id}")


def show_job(job, narrow: bool) -> None:
    """The live view of one job (a fragment redraws it every 1.5 s while it is active), for a `narrow` page or not."""
    snap = job.snapshot()
    job_state = snap["state"]
    config = job.config
    _rerun_when_it_ends(job, job_state)

    run_name = Path(snap["run_dir"]).name if snap.get("run_dir") else "?"
    st.markdown(
        f"**{words.state_label(job_state)}** — {words.backbone_title(config.backbone)}, "
        f"{words.strategy_label(config.strategy)}, on {words.md_text(Path(config.data_dir).name)} · run `{run_name}`"
    )
    if job_state in ACTIVE:
        progress_bars(snap)
        widgets.feature_cache_caption(snap.get("feature_cache"))
        live.notes(snap)
        live_numbers(job, snap, narrow)
    if job_state == "finished":
        finished_box(snap, run_name)
    elif job_state == "failed":
        st.error(f"**Training failed.** {snap.get('reason')}", icon=":material/error:")
        networks.offer_after_failure(snap.get("run_dir"), key=f"switch_{job.id}")
    elif job_state == "stopped":
        resumable = _resumable(snap)
        where = "with the button below" if resumable else "from the Runs page"
        st.info(words.stopped_words(snap, where), icon=":material/stop_circle:")
        if resumable:
            st.button(
                "Resume", icon=":material/play_arrow:", on_click=_resume, args=(snap["run_dir"],), key="resume_here"
            )
    training_curves(job, snap, config, narrow)


def _resumable(snap: dict) -> bool:
    """A stopped run with a finished epoch, and nothing training now."""
    try:
        return bool(snap["history"]) and open_run(snap["run_dir"]).can_resume and not resources.manager().active_jobs()
    except (FileNotFoundError, KeyError, TypeError):
        return False


def _resume(run_dir: str) -> None:
    try:
        st.session_state["job_id"] = resources.manager().resume(run_dir).id
    except Exception as exc:  # noqa: BLE001 - said on the page
        st.session_state["_start_error"] = friendly(exc)


def _show_job_safely(job, narrow: bool) -> None:
    # A fragment rerun does not pass through app.py's error handler.
    with widgets.guard("Could not show the training's progress"):
        show_job(job, narrow)


# The page's width (ui.page_width): the four live numbers in a row and the two charts side by side need LIVE_PX;
# a narrower page (562 px in a 1024 px window with the sidebar open) has them in two rows. At most the 818 px of a
# 1280 px window's page, so that a page that wide is drawn once, without waiting for its width: there a long time
# left in big figures ("at least 1 min 40 s") can still be cut.
LIVE_PX = 800
page = page_width.main_width(LIVE_PX)
narrow = page is not None and page < LIVE_PX
job = resources.current_job()
active = job is not None and job.state in ACTIVE

# --- the running (or last) training first -------------------------------------------
if job is not None:
    st.subheader("Training now" if active else "Last training")
    if active:
        st.fragment(run_every=1.5)(_show_job_safely)(job, narrow)
    else:
        _show_job_safely(job, narrow)
    st.divider()

# --- runs other processes train now (CLI, torchrun, another app), and this session's torchrun one
follow_view.launched(state.runs_dir())
follow_view.elsewhere(state.runs_dir(), resources.manager().alive_run_dirs())

# --- what will be trained, and the start button -------------------------------------
if not active:
    report, scan_error = state.scan_or_none()
    config = None
    problem = None
    if not state.choice("data_dir"):
        problem = "Choose a folder of pictures on the **Data** page first."
    elif scan_error:
        problem = f"{scan_error} Choose another folder on the **Data** page."
    elif report is not None and not report.can_train:
        problem = " ".join(report.errors) + " Fix the folder, or choose another one on the **Data** page."
    else:
        config = state.build_config()

    with st.container(border=True):
        st.markdown("#### " + ("Train again" if job is not None else "Ready to train"))
        if config is not None:
            info = get_backbone(config.backbone)
            r1, r2, r3, r4 = st.columns(4)
            r1.markdown(
                f"**Pictures**  \n{words.md_text(Path(config.data_dir).name)}: {len(report.classes)} classes, "
                f"{report.num_images} pictures"
            )
            r2.markdown(f"**Network**  \n{info.title}" + ("" if config.init == "pretrained" else " (random weights)"))
            r3.markdown(f"**What learns**  \n{words.strategy_lines(config.strategy)}")
            r4.markdown(
                f"**Settings**  \n{config.epochs} epochs, batch {config.batch_size or 'auto'}, rate {config.lr:g}"
            )
            if config.init == "pretrained" and not weights_cached(config.backbone):
                st.info(
                    f"{info.title}'s weights ({info.file_mb:.0f} MB) will be downloaded first; that needs internet.",
                    icon=":material/cloud_download:",
                )
            st.session_state["_gpus_to_use"] = follow_view.gpu_choice()
            # Side by side at their own widths: a quarter of a narrow page (a 1024 px window) cut "Start train…".
            with st.container(horizontal=True, vertical_alignment="center"):
                st.button(
                    "Start training",
                    type="primary",
                    icon=":material/play_arrow:",
                    on_click=_start,
                    help="Training runs in the background: you can keep using the app.",
                )
                st.page_link(state.PAGE_MODEL, label="Change the model or settings", icon=":material/layers:")
        else:
            st.warning(problem, icon=":material/arrow_back:")
            st.page_link(state.PAGE_DATA, label="Go to the Data page", icon=":material/photo_library:")
    if st.session_state.get("_start_error"):
        st.error(f"Could not start: {st.session_state.pop('_start_error')}", icon=":material/error:")
