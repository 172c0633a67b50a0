"""Compare: trained models side by side, and one click to train one per network."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from core.backbones import list_backbones
from core.compare import curves, latest_sweep, leaderboard, queue_sweep, sweep_of
from core.config import strategy_words
from core.devices import pick_device
from core.errors import friendly
from core.jobs import ACTIVE
from core.runs import Run
from ui import bookmarks, charts, live, networks, page_width, resources, state, widgets, words

bookmarks.open_inside_app(state.PAGE_COMPARE)  # a bookmark opened first on a fresh server
st.title(":material/leaderboard: Compare")
widgets.intro(
    "Put trained models side by side: which network learned your classes best, how long it took and how fast "
    "it names a picture. Or let Transfer Studio <b>train one model per network</b> on your pictures with one click."
)

SWEEP_STRATEGIES = ["linear", "last-1", "last-2", "full", "gradual", "discriminative"]


def _speed_device() -> str:
    try:
        return pick_device("auto").type
    except Exception:  # noqa: BLE001 - a CPU is always there
        return "cpu"


# --- queueing a sweep -----------------------------------------------------------------------


def _queue() -> None:
    """Button callback: one run per chosen network (and strategy), queued."""
    backbones = st.session_state.get("sweep_backbones") or []
    strategies = st.session_state.get("sweep_strategies") or None
    try:
        config = state.build_config()
        jobs = queue_sweep(resources.manager(), config, backbones, strategies)
    except Exception as exc:  # noqa: BLE001 - shown on the page
        st.session_state["_sweep_error"] = friendly(exc)
        return
    names = [Path(j.run_dir).name for j in jobs]
    sweep = sweep_of(jobs[0].run_dir) or {}
    st.session_state["_sweep"] = {"id": sweep.get("sweep"), "runs": names, "jobs": [j.id for j in jobs]}
    st.session_state["compare_runs"] = names  # compare what was just queued
    st.session_state.pop("_sweep_error", None)


def sweep_form() -> None:
    with st.container(border=True):
        st.markdown("#### Compare networks on your pictures")
        report, scan_error = state.scan_or_none()
        if not state.choice("data_dir") or scan_error or report is None or not report.can_train:
            why = scan_error or (" ".join(report.errors) if report is not None else "")
            st.warning(
                f"Choose a folder of pictures on the **Data** page first. {why}".strip(), icon=":material/arrow_back:"
            )
            st.page_link(state.PAGE_DATA, label="Go to the Data page", icon=":material/photo_library:")
            return
        strategy = state.strategy_name()
        if strategy == "custom":
            strategy = "linear"
        by_name = {b.name: b for b in list_backbones()}
        if "sweep_backbones" not in st.session_state:
            st.session_state["sweep_backbones"] = networks.default_sweep()  # ready ones: they work offline
        if "sweep_strategies" not in st.session_state:
            st.session_state["sweep_strategies"] = [strategy]
        st.markdown(
            f"One new training per network, all on **{words.md_text(Path(report.root).name)}** "
            f"({len(report.classes)} classes, {report.num_images} pictures) with your settings from the "
            f"**Model** page ({state.choice('epochs')} epochs). They train one after another; the table above "
            "fills in as each one finishes."
        )
        # Full width, one under the other: in a column the third network's chip
        # was hidden past the edge while the button said "Train 3 models".
        st.multiselect(
            "Networks",
            list(by_name),
            key="sweep_backbones",
            format_func=networks.sweep_label,
            help="Small, fast networks first is a good start. Those not ready on this computer download their "
            "weights once, which needs internet.",
        )
        st.multiselect(
            "What learns",
            SWEEP_STRATEGIES,
            key="sweep_strategies",
            format_func=words.strategy_label,
            help="Choose more than one to train each network each way: one run per network and per choice.",
        )
        chosen = st.session_state.get("sweep_backbones") or []
        ways = st.session_state.get("sweep_strategies") or [strategy]
        count = len(chosen) * len(ways)
        networks.sweep_needs_internet(chosen)
        st.button(
            f"Train {count} model{'s' if count != 1 else ''}",
            type="primary",
            icon=":material/play_arrow:",
            on_click=_queue,
            disabled=count == 0,
            key="sweep_go",
            help="They are queued and train one after another in the background; you can keep using the app.",
        )
        if st.session_state.get("_sweep_error"):
            st.error(f"Could not start: {st.session_state.pop('_sweep_error')}", icon=":material/error:")


# --- the leaderboard --------------------------------------------------------------------------


def sweep_progress(paths: list[str], rows: list[dict], states: dict, mgr) -> None:
    """How far the sweep started on this page has come: a bar while it trains,
    one line once every run of it has ended."""
    sweep = st.session_state.get("_sweep")
    if not (sweep and set(sweep["runs"]) & {Path(p).name for p in paths}):
        return
    ended = [r for r in rows if r["run"] in sweep["runs"] and (states.get(r["run"]) or r["state"]) not in ACTIVE]
    done, failed = len(ended), sum(1 for r in ended if (states.get(r["run"]) or r["state"]) == "failed")
    total = len(sweep["runs"])
    text = f"{done - failed} of {total} trained" + (
        f" · {failed} could not train (why: below the table)" if failed else ""
    )
    if done >= total:  # a full bar beside "0 of 1 trained" would say the opposite of its words
        icon = ":material/warning:" if failed else ":material/check_circle:"
        st.markdown(f"{icon} {text}")
        return
    now = next((r for r in rows if r["run"] in sweep["runs"] and states.get(r["run"]) == "running"), None)
    if now is not None:
        job = mgr.job_for_run(now["path"])
        step = live.doing_now(job.snapshot()) if job else "getting ready"
        text += f" · now training {now['backbone_title']}: {step}"
    st.progress(done / max(1, total), text=text)


# The leaderboard's columns and their widths in pixels. Together they fit the 818 px a page gives a table in a
# 1280 px window with the sidebar open (eleven columns did not: the last ones hid past a sideways scroll; with
# "Pictures" they took 830). "Line" is the run's colour in the charts below (charts.run_colours: the table is
# sorted by accuracy, the charts' legends are not, and a person matched them by their text). "Pictures" only
# appears when the runs learned from different folders, and then "What learned" narrows.
BOARD_WIDTHS = {
    "Line": 44,
    "Network": 120,
    "What learned": 185,
    "Pictures": 85,
    "Accuracy": 95,
    words.F1_LABEL: 100,
    "Training": 85,
    "Speed": 70,
    "Started": 95,
}
NARROWER = {"What learned": 120, "Started": 90}  # with "Pictures" shown: 809 px in all
# In a narrower page (562 px in a 1024 px window with the sidebar open) the columns a person needs most, at
# these widths, as many as fit (ui.page_width): which run, its colour, how well it did, then the rest.
SMALL_WINDOW = {**BOARD_WIDTHS, "What learned": 130, "Pictures": 80, "Accuracy": 80, "Speed": 65}  # 554, 539 px
NEEDED_FIRST = [
    *("Network", "What learned", "Line", "Accuracy", "Pictures"),
    *(words.F1_LABEL, "Speed", "Training", "Started"),
]


def _training(row: dict, state: str | None) -> str:
    """How long it trained, or, until it has finished, where it is (waiting, training, failed...)."""
    state = state or row["state"]
    if state == "finished" and row["training_seconds"]:
        return words.fmt_duration(row["training_seconds"])
    return words.state_word(state)


def _what_learned(row: dict, told: dict) -> str:
    """What learned, in words; where another row has the same network learning
    the same way, with the settings that tell them apart (words.run_differences)."""
    return words.what_learned(row["strategy"], bool(row.get("adapted_from")), told.get(row["run"], ""), _plain)


def _plain(strategy: str | None) -> str:
    """What learned in plain words alone: the column is narrow for the technical name too."""
    return strategy_words(strategy)[0]


def board_frame(rows: list[dict], states: dict, colours: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per run; what is not known yet is a dash (Streamlit writes "None"
    in a number cell with no value, whatever its format, so these numbers are
    shown as text). "Line": the run's colour in the charts (`colours`, of the
    runs that have lines there; leaderboard_table draws it), empty for the others."""
    colours = colours or {}

    def number(value, pattern: str) -> str:
        return "–" if value is None or value != value else pattern.format(value)  # value != value: NaN

    told = words.run_differences([Run(Path(r["path"])) for r in rows])
    table = pd.DataFrame(
        [
            {
                "Line": colours.get(r["run"]),  # a mark in that colour once the rows' height is known
                "Network": r["backbone_title"],
                "What learned": _what_learned(r, told),
                "Pictures": _folder_name(r),
                "Accuracy": None
                if r["best_val_accuracy"] is None or r["best_val_accuracy"] < 0
                else 100 * r["best_val_accuracy"],
                words.F1_LABEL: number(r["macro_f1"], "{:.2f}"),
                "Training": _training(r, states.get(r["run"])),
                "Speed": number(r["ms_per_image"], "{:.0f} ms"),
                "Started": words.fmt_when(r["created"]),
            }
            for r in rows
        ]
    )
    table["Accuracy"] = pd.to_numeric(table["Accuracy"], errors="coerce")  # a bar: empty if none
    if table["Pictures"].nunique() <= 1:  # all on the same folder: the sentence below names it
        table = table.drop(columns="Pictures")
    return table


ROW_PX = 35  # a table's row where its cells fit on one line

BOARD_HELP = {
    "Line": "The colour of its lines in the charts below.",
    "What learned": "Which parts of the network learned your classes (the Model page says more).",
    "Pictures": "The folder of pictures it learned from.",
    "Accuracy": "Share of the validation pictures the best epoch got right.",
    words.F1_LABEL: words.F1_HELP,
    "Training": f"How long it trained (for models {words.ADAPTED}: how long adapting took); until it has finished, "
    "where it is.",
    "Speed": "How long the model takes to name one picture on this computer. Measured once per model, when no "
    "training runs.",
    "Started": "When the training started.",
}
RIGHT_ALIGNED = (words.F1_LABEL, "Training", "Speed")


def board_columns(table: pd.DataFrame, widths: dict[str, int]) -> dict:
    """Each column's width and what it means, as hover help on its name."""
    config = {
        column: st.column_config.TextColumn(
            width=widths[column], help=BOARD_HELP.get(column), alignment="right" if column in RIGHT_ALIGNED else None
        )
        for column in table.columns
    }
    config["Accuracy"] = widgets.percent_bar(BOARD_HELP["Accuracy"], 1, width=widths["Accuracy"])
    if "Line" in table:
        config["Line"] = st.column_config.ImageColumn(width=widths["Line"], help=BOARD_HELP["Line"])
    return config


def leaderboard_table(rows: list[dict], states: dict, page: int | None, colours: dict[str, str]) -> None:
    """The board, with the columns that fit a page `page` px wide (every one
    while that is not known), each run's line in its colour in the charts
    (`colours`); rows as tall as the longest name or "What learned" needs to
    show whole."""
    table = board_frame(rows, states, colours)
    wide = {**BOARD_WIDTHS, **(NARROWER if "Pictures" in table else {})}
    columns, widths, left_out = page_width.columns_for(
        page,
        {c: wide[c] for c in table.columns},
        {c: SMALL_WINDOW[c] for c in table.columns},
        [c for c in NEEDED_FIRST if c in table],
    )
    table = table[columns]
    config = board_columns(table, widths)
    whole = widgets.whole_rows(
        {c: list(table[c]) for c in ("Network", "What learned", "Pictures") if c in table}, widths
    )
    if "Line" in table:
        marks = {c: charts.line_mark(c, whole.get("row_height", ROW_PX)) for c in set(colours.values())}
        table = table.assign(Line=[marks.get(c) for c in table["Line"]])
    st.dataframe(table, hide_index=True, column_config=config, **whole)
    if left_out:
        st.caption(page_width.left_out_note(left_out))


def _folder_name(row: dict) -> str:
    return Path(row["data"]).name if row.get("data") else "?"


def leaderboard_notes(rows: list[dict], busy: bool) -> None:
    """The best run so far (only between runs on the same pictures), and why a speed may be missing."""
    best = next((r for r in rows if r["best_val_accuracy"] is not None and r["best_val_accuracy"] >= 0), None)
    folders = sorted({_folder_name(r) for r in rows})
    notes = []
    if len({r.get("data") for r in rows}) > 1:  # each accuracy is on its own folder's validation pictures
        st.warning(
            f"These runs learned from different pictures ({', '.join(words.md_text(f) for f in folders)}), and "
            "each accuracy is measured on its own folder's pictures: they do not rank against each other. "
            "Choose runs on the same pictures to find the best one.",
            icon=":material/compare_arrows:",
        )
    elif best is not None and len(rows) > 1:
        notes.append(
            f":material/trophy: Best so far on {words.md_text(folders[0])}: **{best['backbone_title']}**, "
            f"{words.strategy_md(best['strategy'])}{', ' + words.ADAPTED if best.get('adapted_from') else ''}, "
            f"with {words.fmt_pct(best['best_val_accuracy'])} right."
        )
    if busy and any(r["ms_per_image"] is None and r["state"] == "finished" for r in rows):
        notes.append("Speed is measured when no training is running (it would slow both down).")
    notes.append(f"**{words.F1_LABEL}** is the macro F1. {words.F1_LINE}")  # the table's column, in one line
    st.caption("  \n".join(notes))


# The curves side by side while each gets this many px of the page (with the legend's long lines), else one
# under the other: in a 1024 px window (562 px of page) two charts of 273 px cut their legends off.
SIDE_BY_SIDE_PX = 340
WIDE_PAGE_PX = 818  # a 1280 px window's page, the sidebar open: what the page is while its width is unknown
COLUMN_GAP_PX = 16


def compared_curves(paths: list[str], page: int | None, data: list[dict], colours: dict[str, str]) -> None:
    """Every run's accuracy and loss curves (`data`, core.compare.curves), in its colour (`colours`); none for
    an adapted model, which did not train. Side by side on a wide page, one under the other on a narrow one,
    their legends' lines as long as fit."""
    adapted = any(Run(Path(p)).status.get("adapted_from") for p in paths)
    no_curves = f"Models {words.ADAPTED} have no curves: they did not train, the runs they came from did."
    no_curves = no_curves if adapted else ""
    if not data:
        if no_curves:
            st.caption(no_curves)
        return
    # Short names (the legend is narrow; the run picker above has the whole lines).
    labels = words.run_legends([Run(Path(p)) for p in paths])
    data = [dict(r, label=labels.get(r["run"], r["label"])) for r in data]
    acc = [dict(r, value=100 * r["value"]) if r["kind"] == "accuracy" else r for r in data]
    page = page or WIDE_PAGE_PX
    side_by_side = (page - COLUMN_GAP_PX) / 2 >= SIDE_BY_SIDE_PX
    chart_px = (page - COLUMN_GAP_PX) // 2 if side_by_side else page
    places = st.columns(2) if side_by_side else [st.container(), st.container()]
    for place, rows, kind, title in (
        (places[0], acc, "accuracy", "Accuracy (higher is better)"),
        (places[1], data, "loss", "Loss (lower is better)"),
    ):
        fig = charts.curves_figure(rows, kind, charts.legend_chars(chart_px), colours)
        legend_px = charts.legend_lines(fig) * charts.LEGEND_LINE_PX
        fig.update_layout(title=title, height=CURVES_PX + legend_px, **_CURVE_LAYOUT)
        if kind == "accuracy":
            fig.update_layout(yaxis_title="% correct")
            fig.update_yaxes(range=[0, 101])
        else:
            fig.update_yaxes(rangemode="tozero")
        place.plotly_chart(fig, key=f"compare_{kind}")
    st.caption(
        "Solid lines: validation pictures. Dotted: training pictures. One colour per run, as in the table's Line "
        f"column: click a run's name to hide or show its lines, point at a line to see its run in full. {no_curves}"
    )


def board(paths: list[str], page: int | None) -> None:
    """Leaderboard (for a page `page` px wide, ui.page_width) and curves of the
    chosen runs. Redrawn every 2 s while one of them trains; once none does,
    the whole page is drawn again."""
    mgr = resources.manager()
    alive = mgr.alive_run_dirs()
    training = [p for p in paths if str(Path(p).resolve()) in alive]
    seen = st.session_state.setdefault("_compare_training", False)
    if seen and not training:
        st.session_state["_compare_training"] = False
        st.rerun()  # the last one just ended: full page, without the timer
    st.session_state["_compare_training"] = bool(training)

    busy = bool(mgr.active_jobs())
    with st.spinner("Timing each model on this computer (once per model)…"):
        rows = leaderboard(paths, device=_speed_device(), measure_speed=not busy)
    states = {}
    for p in paths:
        job = mgr.job_for_run(p) if str(Path(p).resolve()) in alive else None
        states[Path(p).name] = job.state if job else None

    # One colour per run, in the order chosen, for its mark in the table and its lines in the charts.
    data = curves(paths)
    colours = charts.run_colours([Path(p).name for p in paths])
    sweep_progress(paths, rows, states, mgr)
    leaderboard_table(rows, states, page, {r["run"]: colours[r["run"]] for r in data})
    networks.failed_run_notes(rows)
    leaderboard_notes(rows, busy)
    compared_curves(paths, page, data, colours)


CURVES_PX = 400  # a chart's height without its legend
_CURVE_LAYOUT = dict(
    legend=dict(orientation="h", yanchor="top", y=-0.2, xanchor="left", x=0, font=dict(size=11)),
    xaxis=dict(title="epoch"),  # its ticks: charts.curves_figure
)


def _board_safely(paths: list[str], page: int | None) -> None:
    # A fragment rerun does not pass through app.py's error handler.
    with widgets.guard("Could not show the comparison"):
        board(paths, page)


def main() -> None:
    runs = resources.store().list()
    mgr = resources.manager()
    alive = mgr.alive_run_dirs()
    # A failed run has no model, but its row says why (read from its folder).
    usable = [r for r in runs if r.best_checkpoint.exists() or str(r.path.resolve()) in alive or r.state == "failed"]
    by_name = {r.name: r for r in usable}
    if "_sweep" not in st.session_state:  # a reload or a new tab: the newest sweep, from the run folders
        st.session_state["_sweep"] = latest_sweep(state.runs_dir())

    st.subheader("Trained models side by side")
    if not usable:
        st.info(
            "No trained models yet. Train one on the **Train** page, or several at once below.",
            icon=":material/fitness_center:",
        )
    else:
        chosen = st.session_state.get("compare_runs")
        if chosen is None:
            sweep = (st.session_state.get("_sweep") or {}).get("runs", [])
            finished = [r.name for r in usable if r.state == "finished" and r.name not in sweep]
            chosen = ([n for n in sweep if n in by_name] + finished)[:5] or [usable[0].name]
            same_pictures = by_name[chosen[0]].config.get("data_dir")  # runs on other folders do not rank with it
            chosen = [n for n in chosen if by_name[n].config.get("data_dir") == same_pictures]
        st.session_state["compare_runs"] = [n for n in chosen if n in by_name]
        # Outside the fragment: a new width redraws the whole page. Wide enough for the board with its Pictures.
        page = page_width.main_width(page_width.table_px({**BOARD_WIDTHS, **NARROWER}))
        st.multiselect(
            "Runs to compare",
            list(by_name),
            key="compare_runs",
            format_func=words.run_labels(list(by_name.values()), with_accuracy=False).get,
            help="Every run that has a saved model (or is training now), newest first.",
            persist_state="session",
        )
        paths = [str(by_name[n].path) for n in st.session_state["compare_runs"]]
        if not paths:
            st.caption("Choose runs above to compare them.")
        elif any(str(Path(p).resolve()) in alive for p in paths):
            st.fragment(run_every=2)(_board_safely)(paths, page)
        else:
            _board_safely(paths, page)
    sweep_form()


main()
