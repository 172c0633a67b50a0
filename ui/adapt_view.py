"""Domain adaptation on the Results page: "Adapt to new pictures" (a folder
of pictures of another kind, no labels needed) and, once adapted, source and
target accuracy side by side (the run's adapt.json, written by core.adapt)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.adapt import DEFAULT_METHOD, METHODS, adapt_run, read_record
from core.errors import friendly
from ui import state, words


def _pct(value) -> str:
    return "–" if value is None else words.fmt_pct(value)


def comparison_table(record: dict) -> pd.DataFrame:
    """One row per kind of picture: accuracy before and after adapting."""
    s, t = record["source"], record["target"]
    rows = [
        {
            "Pictures": f"Your validation pictures ({s['n']})",
            "Before": _pct(s["before"]),
            "After AdaBN only": "",
            "Adapted": _pct(s["after"]),
        }
    ]
    if t.get("after") is not None:
        rows.append(
            {
                "Pictures": f"The new pictures ({record['scored_pictures']} with labels)",
                "Before": _pct(t["before"]),
                "After AdaBN only": _pct(t["adabn"]) if record["method"] != "adabn" else "",
                "Adapted": _pct(t["after"]),
            }
        )
    return pd.DataFrame(rows)


def _show(record: dict) -> None:
    st.markdown(
        f"Adapted to **{record['target_pictures']}** pictures from `{record['target_dir']}` "
        f"({record['method']}, {record['seconds']:.0f} s). {record['method_words']}"
    )
    st.dataframe(comparison_table(record), hide_index=True)
    if record["target"].get("after") is None:
        st.caption(
            "The new pictures had no class subfolders, so the accuracy on them cannot be shown; add a labelled "
            "folder of the same kind to see it."
        )
    st.caption("The adapted model is saved as adapted.pt in the run folder; the run's own model is unchanged.")


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
        format_func=lambda m: {"self-training": "self-training (learns)", "adabn": "AdaBN (nothing learned)"}[m],
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
