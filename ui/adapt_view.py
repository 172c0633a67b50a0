"""Domain adaptation on the Results page: "Adapt to new pictures" (a folder
of pictures of another kind, no labels needed) and, once adapted, source and
target accuracy side by side (the run's adapt.json, written by core.adapt),
and "Keep the adapted model as a new run" (core.adapted_run), after which
the Playground, the export and Compare take it like any run. A run that is
such a kept model says where it came from, with a link to that run."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.adapt import DEFAULT_METHOD, METHODS, adapt_run, read_record
from core.adapted_run import keep_as_run, kept_run, origin_words
from core.config import ADAPT_DONE
from core.errors import friendly
from ui import state, widgets, words

METHOD_TITLES = {"self-training": "self-training (learns)", "adabn": "AdaBN (nothing learned)"}
METHOD_DONE = ADAPT_DONE
AVERAGES_ONLY = "Averages re-measured only"  # the table's middle column: what AdaBN alone gave


def _pct(value) -> str:
    return "–" if value is None or value != value else words.fmt_pct(value)  # value != value: NaN


def comparison_table(record: dict) -> pd.DataFrame:
    """One row per kind of picture: accuracy before and after adapting, and,
    after self-training, what re-measuring the averages alone gave (AdaBN):
    a column shown only when it holds a number (after AdaBN it is "Adapted")."""
    s, t = record["source"], record["target"]
    rows = [{"Pictures": f"Your validation pictures ({s['n']})", "Before": s["before"], "Adapted": s["after"]}]
    if t.get("after") is not None:
        rows.append(
            {
                "Pictures": f"The new pictures ({record['scored_pictures']} with labels)",
                "Before": t["before"],
                "Adapted": t["after"],
            }
        )
    if record["method"] != "adabn":
        for row, part in zip(rows, (s, t)):
            row[AVERAGES_ONLY] = part.get("adabn")
    table = pd.DataFrame(rows)
    if AVERAGES_ONLY in table and table[AVERAGES_ONLY].isna().all():  # an adapt.json from before it was kept
        table = table.drop(columns=AVERAGES_ONLY)
    for column in table.columns[1:]:
        table[column] = [_pct(v) for v in table[column]]
    return table[[c for c in ("Pictures", "Before", AVERAGES_ONLY, "Adapted") if c in table]]


def worse_warnings(record: dict) -> list[str]:
    """What to say when adapting lowered the accuracy: on the person's own
    validation pictures first (the model forgot some of what it knew), then on
    labelled new pictures (it did not help where it was meant to)."""
    said = []
    s, t = record["source"], record["target"]
    if s.get("before") is not None and s.get("after") is not None and s["after"] < s["before"]:
        said.append(
            f"The adapted model did worse on your own checking pictures: {_pct(s['after'])} right, against "
            f"{_pct(s['before'])} before adapting. Keep the earlier model: it is unchanged, and it is the one the "
            "Playground and the export use for this run. Keep the adapted one as a new run only for pictures like "
            "the new ones, or try the other method."
        )
    if t.get("before") is not None and t.get("after") is not None and t["after"] < t["before"]:
        said.append(
            f"Adapting did not help on the new pictures either: {_pct(t['after'])} right, against "
            f"{_pct(t['before'])} before. The earlier model is the better one for them too."
        )
    return said


def averages_did_better(record: dict) -> list[str]:
    """Where re-measuring the averages alone (AdaBN) did better on the labelled
    new pictures than self-training: how to keep that model instead."""
    t = record["target"]
    if record["method"] == "adabn" or None in (t.get("adabn"), t.get("after")) or t["adabn"] <= t["after"]:
        return []
    return [
        f"Re-measuring the averages alone did better on the new pictures ({_pct(t['adabn'])} right, against "
        f"{_pct(t['after'])} after self-training). To keep that model, adapt again with the method "
        f"“{METHOD_TITLES['adabn']}”, then keep it as a new run."
    ]


def _show(record: dict) -> None:
    how = METHOD_DONE.get(record["method"], record["method"])
    st.markdown(
        f"Adapted to **{record['target_pictures']}** pictures from `{record['target_dir']}` {how}, "
        f"in {words.fmt_duration(record['seconds'])}."
    )
    table = comparison_table(record)
    st.dataframe(
        table,
        hide_index=True,
        column_config={
            "Before": st.column_config.TextColumn(help="Share right with the run's own model."),
            AVERAGES_ONLY: st.column_config.TextColumn(
                help="Share right after only re-measuring the network's internal averages on the new pictures "
                "(AdaBN), before self-training learned anything: how much of the change is the learning's."
            ),
            "Adapted": st.column_config.TextColumn(help="Share right with the adapted model."),
        },
    )
    if AVERAGES_ONLY in table:
        st.caption(
            f"**{AVERAGES_ONLY}**: what the first step of self-training alone gave, re-measuring the network's "
            "internal averages on the new pictures (the AdaBN method), before it learned anything."
        )
    for text in worse_warnings(record) + averages_did_better(record):
        st.warning(text, icon=":material/trending_down:")
    if record["target"].get("after") is None:
        st.caption(
            "The new pictures had no class subfolders, so the accuracy on them cannot be shown; add a labelled "
            "folder of the same kind to see it."
        )
    st.caption(
        "This run's own model is unchanged. Keep the adapted one as a new run to try it in the Playground, take it "
        "with you (export) and compare it with the others."
    )


def keep_section(run) -> None:
    """The button that keeps the adapted model as a new run, or the run it was kept as."""
    kept = kept_run(run.path)
    if kept is None and st.button(
        "Keep the adapted model as a new run",
        icon=":material/library_add:",
        key="adapt_keep",
        help="Makes a new run in the runs folder holding the adapted model, beside this one, which stays as it is.",
    ):
        try:
            with st.spinner("Keeping the adapted model and checking it on your validation pictures…"):
                kept = keep_as_run(run.path)
        except Exception as exc:  # noqa: BLE001 - reported in words
            st.error(f"The adapted model could not be kept: {friendly(exc)}", icon=":material/error:")
            return
        st.toast(f"Kept as the run {kept.name}.", icon=":material/library_add_check:")
        st.rerun()  # redraw: the run it was kept as instead of the button, and the new run in every list
    if kept is not None:
        st.success(
            f"The adapted model is kept as the run **{words.md_text(kept.name)}**: choose it in the Playground, "
            "on this page (to export it) and in Compare like any model you trained.",
            icon=":material/library_add_check:",
        )
        widgets.run_links(kept.name, "See the adapted model's results and export it", "Try the adapted model")


def source_link(run, came: dict, page: str) -> None:
    """A link to the run a kept adapted model came from, on `page` (the Runs or
    the Results page), while that run is still beside it; else that said."""
    source = str(came.get("run") or "")
    if source and not {"/", "\\"} & set(source) and (run.path.parent / source / "config.json").is_file():
        st.page_link(
            page, label="Open the run it was adapted from", icon=":material/call_split:", query_params={"run": source}
        )
    else:
        st.caption(f"The run it was adapted from, {words.md_text(source or '?')}, is no longer in the runs folder.")


def origin_md(came: dict) -> str:
    """Where a kept adapted model came from, in markdown: the one sentence
    the model card says too (core.adapted_run.origin_words)."""
    return origin_words(came, name=lambda n: f"**{words.md_text(n)}**", folder=lambda f: f"`{f}`")


def origin_note(run) -> bool:
    """For a run that is a kept adapted model: which run (and what it
    trained), which pictures, which method, how it does on them, and a link
    to that run's results. False for any other run."""
    came = run.summary().get("adapted_from")
    if not came:
        return False
    text = origin_md(came)
    t = came.get("target") or {}
    if t.get("after") is not None:
        text += f" On those pictures it names {_pct(t['after'])} right, against {_pct(t.get('before'))} before."
    st.info(text, icon=":material/call_split:")
    source_link(run, came, state.PAGE_RESULTS)
    return True


def _refused(folder: str) -> str | None:
    if not folder:
        return None
    return state.folder_refusal(folder)


def adapt_section(run) -> None:
    st.subheader(":material/tune: Adapt to new pictures")
    st.caption(
        "Pictures of another kind (another camera, darker rooms, another school) can fool a model. Give it a "
        "folder of such pictures, no labels needed, and it adjusts itself to them. If the folder has one "
        "subfolder per class, named like this model's classes, those names are used only to score it."
    )
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    folder = left.text_input(
        "Folder of new pictures", key="adapt_folder", placeholder="e.g. /home/me/Pictures/from-the-new-camera"
    ).strip()
    method = right.selectbox(
        "Method",
        list(METHODS),
        index=list(METHODS).index(DEFAULT_METHOD),
        key="adapt_method",
        format_func=METHOD_TITLES.get,
        help=" ".join(f"{m}: {text}" for m, text in METHODS.items()),
    )
    refusal = _refused(folder)
    if refusal:
        st.error(refusal, icon=":material/block:")
    if st.button(
        "Adapt to these pictures", icon=":material/tune:", key="adapt_go", disabled=not folder or bool(refusal)
    ):
        try:
            with st.spinner("Adapting the model to the new pictures (a minute or two on a CPU)…"):
                adapt_run(run.path, folder, method=method)
        except Exception as exc:  # noqa: BLE001 - reported in words
            st.error(f"The adaptation did not work: {friendly(exc)}", icon=":material/error:")
    record = read_record(run.path)
    if record:
        _show(record)
        keep_section(run)
