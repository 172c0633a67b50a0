"""Page furniture every page shares: the opening sentence, the "next step"
button, a guard that turns errors into a short message, the run picker and
what it leaves out, the feature-cache caption, the per-class table and the row height at which a
table's long cells show whole."""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Collection
from contextlib import contextmanager

import pandas as pd
import streamlit as st

from core.counts import how_many
from core.errors import friendly
from core.evaluation import per_class_table as per_class_rows
from core.features import describe_cache
from core.jobs import ACTIVE
from ui.words import md_text, run_labels

log = logging.getLogger("transfer_studio")


def feature_cache_caption(record: dict | None) -> None:
    """Say in words whether stored features made a run fast (the job's or
    the run's "feature_cache" record). The note is written afresh from the
    record, so a run saved before a wording was fixed reads the new words."""
    note = describe_cache(record) if isinstance(record, dict) and record else ""  # a damaged status may hold anything
    if note:
        icon = ":material/bolt:" if record.get("used") else ":material/info:"
        st.caption(f"{icon} {note}")


def intro(text: str) -> None:
    """One sentence: what this page is for and what to do."""
    st.markdown(f"<div style='font-size:1.1rem;margin-bottom:0.5rem'>{text}</div>", unsafe_allow_html=True)


def next_step(page: str, label: str, icon: str = ":material/arrow_forward:") -> None:
    """The guided flow's "what now": one clear button to the next page."""
    if st.button(label, icon=icon, type="primary", key=f"next_{page}"):
        st.switch_page(page)


def run_links(run_name: str, results_label: str, playground_label: str = "Try it in the Playground") -> None:
    """Side by side: the run's Results page and its Playground, where a run has just been made."""
    from ui.state import PAGE_PLAYGROUND, PAGE_RESULTS

    left, right, _ = st.columns([1, 1, 1])
    left.page_link(PAGE_RESULTS, label=results_label, icon=":material/insights:", query_params={"run": run_name})
    right.page_link(PAGE_PLAYGROUND, label=playground_label, icon=":material/science:", query_params={"run": run_name})


@contextmanager
def guard(what: str = ""):
    """Show any error inside as a short message instead of a traceback."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - the page must never show a traceback
        log.exception("error %s", what)
        st.error(f"{what + ': ' if what else ''}{friendly(exc)}", icon=":material/error:")


def pick_run(
    runs: list,
    key: str,
    label: str = "Trained model",
    help: str | None = None,
    prefer: str | None = None,
    known: Collection[str] = (),
):
    """A selectbox of runs (newest first) that follows a ?run=NAME link,
    remembers the choice across pages, and returns the chosen Run. `known`:
    runs in the folder that are not offered here (the page says why), so a
    link to one is not called deleted."""
    names = [r.name for r in runs]
    by_name = {r.name: r for r in runs}
    wanted = st.query_params.get("run")
    seen = f"_{key}_query"
    if wanted in names and st.session_state.get(seen) != wanted:
        st.session_state[key] = wanted
        st.session_state[seen] = wanted
    gone = wanted if wanted and wanted not in names and wanted not in known else None
    gone = gone if st.session_state.get(seen) != wanted else None
    if st.session_state.get(key) not in names:
        st.session_state[key] = prefer if prefer in names else names[0]
    # The label must not change while a run trains, or the choice would be lost.
    labels = run_labels(runs, with_accuracy=lambda r: r.state not in ACTIVE)
    if gone:  # a link or bookmark to a run deleted since: say so, rather than show another run silently
        st.info(
            f"The run {md_text(gone)} is not in the runs folder any more (deleted or moved); "
            f"showing {md_text(labels[st.session_state[key]])} instead.",
            icon=":material/link_off:",
        )
    st.selectbox(label, names, key=key, format_func=labels.get, help=help, persist_state="session")
    chosen = st.session_state[key]
    # The address follows the choice: a reload keeps it, and a link to another run still wins.
    st.query_params["run"] = chosen
    st.session_state[seen] = chosen
    return by_name[chosen]


def left_out_caption(left_out: list, why: str) -> None:
    """Under a run picker: how many runs of the folder it leaves out and why
    (`why`, for one run or several as `left_out` holds), with a link to the
    Runs page, which says what is wrong with each and what can be done (it
    opens the one a link asked for, else the newest)."""
    if not left_out:
        return
    from ui.state import PAGE_RUNS

    wanted = st.query_params.get("run")  # a link to one of them: the Runs page opens that one
    st.caption(
        f":material/broken_image: {how_many(len(left_out), 'run')} left out of this list: {why}. "
        "The Runs page says what is wrong and what can be done."
    )
    st.page_link(
        PAGE_RUNS,
        label="See it on the Runs page" if len(left_out) == 1 else "See them on the Runs page",
        icon=":material/history:",
        query_params={"run": wanted if wanted in {r.name for r in left_out} else left_out[0].name},
    )


def percent_bar(help: str, decimals: int = 0, width: int | None = None):
    """A table column of percentages (0 to 100) drawn as bars, with `decimals` after the point."""
    return st.column_config.ProgressColumn(
        format=f"%.{decimals}f%%", min_value=0, max_value=100, width=width, help=help
    )


# The per-class table's columns but the class's name, in px: what their headers and bars need. The name takes
# what is left of the page (at least CLASS_PX), on as many lines as it needs; on a page too narrow for the
# precision's header in words (a 1024 px window with the sidebar open: 562 px), the header is its short form.
PER_CLASS_PX = {"Pictures": 75, "Found (recall)": 120, "Right when it says so (precision)": 235, "F1": 60}
SHORT_PRECISION, SHORT_PRECISION_PX, CLASS_PX = "Right (precision)", 130, 140
WIDE_PAGE_PX = 790  # the per-class table with no width known (a wide page): a 1280 px window's is 818


def per_class_widths(page: int | None) -> dict[str, int]:
    """The per-class table's columns and their widths in px on a page `page` px wide (None: a wide page): the
    whole table fits the page, the class's name with what is left."""
    widths = dict(PER_CLASS_PX)
    room = (page or WIDE_PAGE_PX) - 4  # the table's frame
    if room - sum(widths.values()) < 2 * CLASS_PX:
        del widths["Right when it says so (precision)"]
        widths[SHORT_PRECISION] = SHORT_PRECISION_PX
    return {"Class": max(CLASS_PX, room - sum(widths.values())), **widths}


def per_class_table(evaluation: dict, pictures: str = "Validation pictures of this class.", page: int | None = None):
    """Recall, precision and F1 per class, as bars a person can read, the table
    as wide as a page `page` px wide (ui.page_width; None: a wide one), a long
    class name whole on several lines; `pictures` (the Pictures column's help)
    says which pictures were scored."""
    widths = per_class_widths(page)
    precision = next(c for c in widths if c.startswith("Right"))
    table = pd.DataFrame(
        [
            {
                "Class": c["class"],
                "Pictures": c["support"],
                "Found (recall)": 100 * c["recall"],
                precision: 100 * c["precision"],
                "F1": c["f1"],
            }
            for c in per_class_rows(evaluation)
        ]
    )
    st.dataframe(
        table,
        hide_index=True,
        column_config={
            "Class": st.column_config.TextColumn(width=widths["Class"]),
            "Pictures": st.column_config.NumberColumn(help=pictures, width=widths["Pictures"]),
            "Found (recall)": percent_bar(
                "Of this class's pictures, the share the model recognised.", width=widths["Found (recall)"]
            ),
            precision: percent_bar(
                "Right when it says so: of the pictures the model called this class, the share that really were.",
                width=widths[precision],
            ),
            "F1": st.column_config.NumberColumn(
                format="%.2f", help="Balances recall and precision; 1.0 is perfect.", width=widths["F1"]
            ),
        },
        **whole_cells(list(table["Class"]) if len(table) else [], widths["Class"]),
    )


# A table cell wraps its text only in rows taller than 4rem (Streamlit's dataframe); these are the sizes that
# fit it, measured in Chromium: about 5.6 px a character of these sentences (6 here, to be safe), 19 px a line,
# 8.5 px of padding each side; the header row stays 35 px.
_CHAR_PX, _LINE_PX, _PADDING_PX, _WRAPPING_ROW_PX, _HEADER_PX = 6.0, 19, 17, 66, 35


def whole_cells(texts: list[str], width: int, rows_shown: int = 10) -> dict:
    """st.dataframe's row_height and height at which each of `texts` (one
    column's cells) shows whole in its `width` px, wrapped onto as many lines
    as it needs, and up to `rows_shown` rows show without scrolling, as
    one-line rows do; {} (one-line rows) where each fits on one line."""
    chars = max(8, int((width - _PADDING_PX) / _CHAR_PX))
    lines = max((len(textwrap.wrap(str(t), chars)) for t in texts), default=1)
    if lines <= 1:
        return {}
    row = max(_WRAPPING_ROW_PX, lines * _LINE_PX + 10)
    return {"row_height": row, "height": _HEADER_PX + min(len(texts), rows_shown) * row + 3}


def whole_rows(columns: dict[str, list[str]], widths: dict[str, int], rows_shown: int = 10) -> dict:
    """whole_cells for several columns of one table (`columns`: each one's
    cells, `widths`: each one's px): rows as tall as the tallest cell needs."""
    sizes = [whole_cells(texts, widths[name], rows_shown) for name, texts in columns.items()]
    return max(sizes, key=lambda size: size.get("row_height", 0), default={})
