"""Runs: every training, its results, and resume / delete."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from core.adapted_run import SOURCE, changes_words
from core.config import setting_label, settings_without_effect
from core.counts import how_many
from core.errors import UserError, friendly
from core.final_evaluation import check_again
from core.jobs import ACTIVE
from core.runs import made_by_us
from ui import adapt_view, bookmarks, charts, fixes, follow_view, page_width, resources, state, widgets, words

bookmarks.open_inside_app(state.PAGE_RUNS)  # a bookmark opened first on a fresh server
st.title(":material/history: Runs")
widgets.intro(
    "Every training you started, newest first. <b>Open</b> one to see how it did, see its full "
    "<b>Results</b>, try it in the <b>Playground</b>, <b>resume</b> one that was stopped, or <b>delete</b> the "
    "ones you no longer need. To put several side by side, use <b>Compare</b>."
)


def _live_state(run, mgr, alive: set) -> str:
    """A run's state, from its job while one trains it (the run's files lag behind)."""
    if str(run.path.resolve()) in alive:
        job = mgr.job_for_run(run.path)
        return job.state if job else run.state
    return run.state


# The columns' widths in px: together 790, inside the 818 px a page gives a table in a 1280 px window with the
# sidebar open (nine columns took 965: the folder's name was cut off and the table scrolled sideways).
WIDTHS = {"Started": 95, "Network": 125, "What learned": 210, "Pictures": 105, "Accuracy": 95, "Status": 80, "Time": 80}
# In a narrower page (562 px in a 1024 px window with the sidebar open): the columns a person picks a run by, at
# these widths, as many as fit (ui.page_width); when it started and how long it took are left out first.
SMALL_WINDOW = {**WIDTHS, "What learned": 170, "Pictures": 85, "Accuracy": 90}
NEEDED_FIRST = ["What learned", "Network", "Accuracy", "Pictures", "Status", "Started", "Time"]


def _state_cell(summary: dict, run_state: str) -> str:
    """The run's state and, where it ended or is still short of its planned
    epochs (stopped, failed, stopped early, training now), how many it has
    finished: "stopped, 3 of 10 epochs". A model adapted to new pictures
    trained none."""
    word, done, planned = words.state_word(run_state), summary.get("epochs_done") or 0, summary.get("epochs")
    if summary.get("adapted_from") or run_state == "queued" or not planned or done >= planned:
        return word
    return f"{word}, {done} of {how_many(planned, 'epoch')}"


def runs_table(runs: list, states: dict, page: int | None = None) -> None:
    """One row per run, with what a person picks a run by, in the columns that
    fit a page `page` px wide (every one while that is not known). "What learned"
    says, as the run pickers do, what tells a run apart from others of its
    network learning the same way, on as many lines as it needs; a model
    adapted to new pictures trained no epochs, and its time is the
    adaptation's (Run.summary); rows that would still read alike say when
    each run started, or its folder. The run's folder is a hidden column (the
    table's menu shows it; the opened run's heading says it)."""
    rows, told, created = [], words.run_differences(runs), {}
    for run in runs:
        s = run.summary()
        created[run.name] = s.get("created")
        # A damaged run's figure is not backed by its files (the Status column says damaged; the reason, why).
        acc = None if states[run.name] == "damaged" else s.get("best_val_accuracy")
        rows.append(
            {
                "Started": words.fmt_when(s.get("created")),
                "Network": words.backbone_title(s["backbone"]),
                "What learned": words.what_learned(s["strategy"], bool(s.get("adapted_from")), told[run.name]),
                "Pictures": Path(s["data"]).name if s.get("data") else "?",
                "Accuracy": None if acc is None or acc < 0 else 100 * acc,
                "Status": _state_cell(s, states[run.name]),
                "Time": words.fmt_duration(s.get("seconds")) if s.get("seconds") else "–",
                "Run": s["run"],  # its folder's name, for finding it on disk
            }
        )
    shown, widths, left_out = page_width.columns_for(page, WIDTHS, SMALL_WINDOW, NEEDED_FIRST)
    _alike_told_apart(rows, created, shown)
    config = {
        "Started": st.column_config.TextColumn(),
        "Network": st.column_config.TextColumn(),
        "What learned": st.column_config.TextColumn(),
        "Pictures": st.column_config.TextColumn(help="The folder of pictures it learned from."),
        "Accuracy": widgets.percent_bar("Share of the validation pictures the best epoch got right.", 1),
        "Status": st.column_config.TextColumn(
            help="Finished, training, stopped or failed; where it ended short of the epochs it planned, how "
            f"many it finished. Models {words.ADAPTED} trained none.",
        ),
        "Time": st.column_config.TextColumn(
            help=f"How long it trained; for models {words.ADAPTED}, how long adapting took."
        ),
    }
    st.dataframe(
        pd.DataFrame(rows)[[*shown, "Run"]],
        hide_index=True,
        **widgets.whole_rows({name: [r[name] for r in rows] for name in shown if name != "Accuracy"}, widths),
        column_config={
            **{name: {**config[name], "width": widths[name]} for name in shown},
            "Run": {
                **st.column_config.TextColumn("Folder", help="The run's folder in the runs folder."),
                "hidden": True,
            },
        },
    )
    if left_out:
        st.caption(page_width.left_out_note(left_out))


def _alike_told_apart(rows: list[dict], created: dict, shown: list[str]) -> None:
    """Rows that would read the same in the columns shown (two runs of the same
    settings; a run's accuracy and time are what it did, not which it is) say
    in "What learned" when each started, to the second, or else its folder."""
    same = [name for name in shown if name not in ("Accuracy", "Time")]
    told = words.rows_told_apart(
        {row["Run"]: " | ".join(str(row[name]) for name in same) for row in rows}, created, "Started" not in shown
    )
    for row in rows:
        if told[row["Run"]]:
            row["What learned"] += f" · {told[row['Run']]}"


def run_heading(run, run_state: str, elsewhere: bool = False) -> None:
    summary = run.summary()
    st.divider()
    st.subheader(
        f"{words.state_label(run_state)} · {words.backbone_title(summary.get('backbone'))} · "
        f"{words.strategy_label(summary.get('strategy'))}"
    )
    st.caption(f"Its folder in the runs folder: {words.md_text(run.name)}")
    if summary.get("adapted_from"):
        st.info(adapt_view.origin_md(summary["adapted_from"]), icon=":material/tune:")
    if run_state == "damaged":  # what is damaged, and what can be done (Run.summary's reason)
        st.error(summary.get("reason") or "Some of this run's files are damaged.", icon=":material/broken_image:")
    elif run_state == "failed":
        st.error(f"This run failed: {summary.get('reason') or 'no reason was saved.'}", icon=":material/error:")
    elif run_state == "stopped":
        st.info(summary.get("reason") or "This run was stopped.", icon=":material/stop_circle:")
    elif run_state == "interrupted":
        st.warning(
            "This run was interrupted (the app was closed or the computer restarted while it trained). "
            "Resume it to continue from its last finished epoch.",
            icon=":material/warning:",
        )
    elif run_state in ACTIVE and not elsewhere:
        st.info("This run is training now; watch it on the **Train** page.", icon=":material/directions_run:")
    elif run_state in ACTIVE:  # trained by another process (CLI, torchrun, another app): followed from its folder
        follow_view.live(str(run.path))


def resume_button(run, mgr, run_state: str) -> None:
    can_resume = run.can_resume and run_state not in ACTIVE and not mgr.active_jobs()
    if st.button(
        "Resume",
        icon=":material/play_arrow:",
        disabled=not can_resume,
        help="Continue from the last finished epoch." if can_resume else "Wait until the current training ends.",
    ):
        try:
            job = mgr.resume(run.path)  # a damaged run's settings come from its last.pt
            st.session_state["job_id"] = job.id
        except Exception as exc:  # noqa: BLE001
            st.error(f"Could not resume: {friendly(exc)}", icon=":material/error:")
        else:
            st.switch_page(state.PAGE_TRAIN)


def actions(run, mgr, run_state: str) -> None:
    """Links to the run's results and playground, resume, and delete."""
    has_model = run.best_checkpoint.exists() and run.model_problem is None
    has_results = resources.evaluation(run) is not None  # whole: a broken eval.json's Results page cannot show it
    recheck = run.can_check_again and run_state not in ACTIVE
    if recheck and run_state != "damaged":  # finished, and only its results are gone
        st.info(
            "This run's results (eval.json) are missing. Its trained model is whole: check it again on its "
            "validation pictures to see its results, with no training.",
            icon=":material/info:",
        )
    # One row, each as wide as its words (wrapping in a narrow window): in columns of fixed shares, four
    # actions at 1280 px were cut to "Resu…" and "Delet…".
    with st.container(horizontal=True, vertical_alignment="center"):
        if has_results:
            st.page_link(
                state.PAGE_RESULTS,
                label="See the results",
                icon=":material/insights:",
                query_params={"run": run.name},
            )
        if has_model:
            st.page_link(
                state.PAGE_PLAYGROUND,
                label="Try it in the Playground",
                icon=":material/science:",
                query_params={"run": run.name},
            )
        # resuming would train no epoch and leave classes.json as it is (Run.can_check_again)
        check_now = recheck and check_again_button()
        if not recheck and run.can_resume:
            resume_button(run, mgr, run_state)
        delete_button(run, run_state)
    if check_now:  # below the row, the width of the page: its progress bar
        check_run_again(run)
    checked = st.session_state.pop("_checked_again", None)
    if checked:
        st.success(checked, icon=":material/task_alt:")


def check_again_button() -> bool:
    return st.button(
        "Check it again",
        icon=":material/fact_check:",
        help="Names the run's validation pictures again with its trained model and saves the results, "
        "as at the end of its training. Nothing is trained.",
    )


def check_run_again(run) -> None:
    """Score the run's whole best.pt again on its validation pictures (on the GPU when there is one), with a
    count of the pictures done: its eval.json (and classes.json) anew."""
    bar = st.progress(0.0, text="Loading the trained model…")

    def done_so_far(done: int, total: int) -> None:
        bar.progress(done / total if total else 1.0, text=f"Checking the model again: {done} of {total} pictures…")

    try:
        result = check_again(run.path, on_progress=done_so_far)
    except Exception as exc:  # noqa: BLE001
        st.error(f"Could not check it again: {friendly(exc)}", icon=":material/error:")
        return
    finally:
        bar.empty()
    missing = (
        f" ({how_many(len(result['unreadable']), 'picture')} could not be read now)" if result["unreadable"] else ""
    )
    where = " on the GPU" if not result["device"].startswith("cpu") else ""
    st.session_state["_checked_again"] = (
        f"Checked again{where} on its {how_many(result['count'], 'validation picture')}{missing}: "
        f"{words.fmt_pct(result['accuracy'])} right. Its results are whole again."
    )
    st.rerun()


def delete_button(run, run_state: str) -> None:
    ours = made_by_us(run.path)
    if st.button(
        "Delete…",
        icon=":material/delete:",
        disabled=run_state in ACTIVE or not ours,
        help="Stop it first."
        if run_state in ACTIVE
        else "Delete this run and all its files."
        if ours
        else "Transfer Studio did not make this folder, so it does not delete it.",
    ):
        st.session_state["_confirm_delete"] = run.name


def delete_now(run, store, mgr) -> None:
    """Delete the run if, at this moment, nothing trains it or waits to: the
    confirmation may have been open for a while, and another tab may have
    resumed the run since (the engine then takes the run's lock)."""
    job = mgr.job_for_run(run.path)
    if job is not None and job.state in ACTIVE:
        raise UserError(f"The run {run.name} is {words.state_word(job.state)} now. Stop it first, then delete it.")
    store.delete(run)


def confirm_delete(run, store, mgr) -> None:
    """Deleting asks once more, in a box of its own."""
    if st.session_state.get("_confirm_delete") == run.name:
        with st.container(border=True):
            st.warning(
                f"Delete the run **{run.name}** and all its files (model, charts, results)? This cannot be undone.",
                icon=":material/warning:",
            )
            y, n, _ = st.columns([1, 1, 4])
            if y.button("Yes, delete it", type="primary", icon=":material/delete:"):
                st.session_state.pop("_confirm_delete", None)
                try:
                    delete_now(run, store, mgr)
                except Exception as exc:  # noqa: BLE001
                    st.error(f"Could not delete it: {friendly(exc)}", icon=":material/error:")
                else:
                    st.session_state.pop("open_run", None)
                    st.session_state["_deleted"] = run.name
                    st.rerun()
            if n.button("Cancel"):
                st.session_state.pop("_confirm_delete", None)
                st.rerun()

    deleted = st.session_state.pop("_deleted", None)
    if deleted:
        st.toast(f"Deleted {deleted}.", icon=":material/delete:")


def run_results(run, run_state: str) -> None:
    """The headline numbers and curves (the Results page has the full picture)."""
    summary = run.summary()
    if summary.get("adapted_from"):
        adapted_results(run, summary["adapted_from"])
        return
    status = run.status
    metrics = run.metrics
    if not metrics:
        st.caption("This run has not finished an epoch, so it has no results yet.")
        return
    acc = summary.get("best_val_accuracy")  # Run.summary's numbers are numbers, whatever a damaged file holds
    m1, m2, m3, m4 = st.columns(4)
    m1.metric(
        "Best val accuracy",
        words.fmt_pct(acc) if acc is not None and acc >= 0 else "–",
        help="The share of the validation pictures that the best epoch's model got right.",
    )
    m2.metric("Best epoch", f"{summary.get('best_epoch') or '–'} of {summary.get('epochs') or '?'}")
    f1 = status.get("macro_f1")
    m3.metric(words.F1_LABEL, f"{f1:.2f}" if isinstance(f1, (int, float)) else "–", help=words.F1_HELP)
    m4.metric("Training time", words.fmt_duration(summary.get("seconds")) if summary.get("seconds") else "–")
    device = summary.get("device_name") or summary.get("device")
    if device:
        st.caption(
            f"Trained on {device}"
            + (f" ({memory:.0f} GB)" if isinstance(memory := status.get("device_memory_gb"), (int, float)) else "")
            + f" · started {words.fmt_when(summary.get('created'))}"
        )

    c1, c2 = st.columns(2)
    epochs = charts.epoch_axis(metrics, summary.get("epochs"), running=run_state in ACTIVE)
    losses = run.batch_losses  # none for a run made before they were kept
    c1.plotly_chart(charts.loss_figure(metrics, losses.points, losses.steps_per_epoch, epochs), key="run_loss")
    c2.plotly_chart(charts.accuracy_figure(metrics, epochs=epochs), key="run_acc")


def adapted_results(run, came: dict) -> None:
    """A kept adapted model's numbers, beside those of the run it was adapted
    from on the same pictures. It did not train, so it has no curves: a link
    leads to the run that did (a kept run made before this had its source's
    curves copied in; they are not shown as its own). Its time and device are
    the adaptation's (Run.summary; the heading says what its source trained)."""
    status, summary = run.status, run.summary()
    acc, before = summary.get("best_val_accuracy"), (came.get("source") or {}).get("before")
    m1, m2, m3, m4 = st.columns(4)
    m1.metric(
        "Val accuracy",
        words.fmt_pct(acc) if acc is not None and acc >= 0 else "–",
        help="The share of the validation pictures that the adapted model got right.",
    )
    m2.metric(
        "Before adapting",
        words.fmt_pct(before) if isinstance(before, (int, float)) else "–",
        help="The same pictures, named by the run it was adapted from.",
    )
    m3.metric(
        words.F1_LABEL,
        f"{f1:.2f}" if isinstance(f1 := status.get("macro_f1"), (int, float)) else "–",
        help=words.F1_HELP,
    )
    m4.metric("Adapting time", words.fmt_duration(summary["seconds"]) if summary.get("seconds") else "–")
    where = f"Adapted on {summary['device_name'] or summary['device']}, kept" if summary.get("device") else "Kept"
    st.caption(
        f"{where} {words.fmt_when(summary.get('created'))}. It did not train: it is that run's model, adjusted to "
        "the new pictures, so it has no training curves of its own. How its network learned is in the run it was "
        "adapted from."
    )
    adapt_view.source_link(run, came, state.PAGE_RUNS)


def per_class_and_settings(run, page: int | None = None) -> None:
    status = run.status
    evaluation = resources.evaluation(run)
    if evaluation and evaluation.get("per_class"):
        st.markdown("#### How well each class is recognised (validation pictures)")
        widgets.per_class_table(evaluation, page=page)
        st.page_link(
            state.PAGE_RESULTS,
            label="See which classes it mixes up, its hardest pictures and where it looked, and export it",
            icon=":material/insights:",
            query_params={"run": run.name},
        )

    with st.expander("All settings of this run"):
        config, came = run.config, status.get("adapted_from")
        there = f" (in {SOURCE})" if isinstance(came, dict) else ""  # a kept adapted model did not train
        plan = status.get("freeze_plan")
        st.markdown(
            f"**What learned{there}:** {words.strategy_md(config.get('strategy'))}. "
            f"{words.md_text(words.plan_sentence(plan))}"
        )
        learned, total = status.get("trainable_params"), status.get("total_params")
        if isinstance(learned, int) and isinstance(total, int):
            st.markdown(f"**Numbers that learned{there}:** {learned:,} of {total:,}")
        if there:
            st.markdown(f"**What adapting changed:** {changes_words(came)}")
        unused = settings_without_effect(config)
        st.dataframe(
            pd.DataFrame(
                [
                    {"Setting": setting_label(k), "Value": words.setting_value(k, v), "Name": k}
                    for k, v in config.items()
                    if k not in unused
                ]
            ),
            hide_index=True,
            height="content",  # every setting at once: a scroll box of 10 rows hid most of them
        )
        if unused:
            st.caption(
                "Kept but not used by this run (they belong to other ways of training): "
                + "; ".join(f"{setting_label(k)} ({words.setting_value(k, config[k])})" for k in unused)
                + "."
            )
        st.caption(f"Folder: {words.md_text(run.path)}")


def main() -> None:
    """The runs table and the opened run."""
    store = resources.store()
    mgr = resources.manager()
    runs = store.list()
    if not runs:
        st.info(f"No runs yet in `{store.root}`. Start one on the **Train** page.", icon=":material/fitness_center:")
        st.page_link(state.PAGE_TRAIN, label="Go to Train", icon=":material/fitness_center:")
        return
    alive = mgr.alive_run_dirs()
    states = {run.name: _live_state(run, mgr, alive) for run in runs}
    page = page_width.main_width(page_width.table_px(WIDTHS))
    runs_table(runs, states, page)
    run = widgets.pick_run(runs, key="open_run", label="Open a run", help="Shows the run's results below.")
    run_heading(run, states[run.name], elsewhere=str(run.path.resolve()) not in alive)
    fixes.fix_notes()
    fixes.older_pictures_notice(run, key="runs")
    actions(run, mgr, states[run.name])
    confirm_delete(run, store, mgr)
    with widgets.guard("Its results cannot be shown"):  # a damaged run's files may hold anything
        run_results(run, states[run.name])
    with widgets.guard("Its settings cannot be shown"):
        per_class_and_settings(run, page)


main()
