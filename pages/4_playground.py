"""Playground: try a trained model on a new picture."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import pandas as pd
import streamlit as st

from core.counts import how_many
from core.errors import friendly
from core.evaluation import list_images, predict_batch, predict_images, predictions_csv
from core.images import HEIC_EXTENSIONS, HEIC_HINT, IMAGE_EXTENSIONS, open_rgb
from core.paths import pasted_path
from ui import bookmarks, charts, fixes, page_width, resources, state, uploads, widgets, words

bookmarks.open_inside_app(state.PAGE_PLAYGROUND)  # a bookmark opened first on a fresh server
st.title(":material/science: Playground")
widgets.intro(
    "<b>Step 4 of 4.</b> Pick a trained model, then give it a picture it has never seen (upload one, or "
    "take one with your camera) and see which class it thinks it is, how sure it is, and where it looked. "
    "Or let it name a whole folder of pictures at once."
)


def one_picture(run) -> None:
    """Upload or take a photo; show the top classes and where the model looked."""
    tab_upload, tab_camera = st.tabs([":material/upload: Upload a picture", ":material/photo_camera: Take a photo"])
    with tab_upload:
        uploaded = st.file_uploader(
            "A picture",
            type=sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS | HEIC_EXTENSIONS),  # HEIC: to say what to do
            key="play_upload",
            help="Any photo; it does not need to be from your folder.",
        )
    with tab_camera:
        st.caption(
            "Your browser asks before it uses the camera. Opened from another computer, the camera works only "
            "when the address starts with https (or on this computer, at localhost)."
        )
        photo = st.camera_input(
            "Take a photo", key="play_camera", help="Hold the object in front of the camera and click."
        )

    source = photo or uploaded
    if source is None:
        st.info("Upload a picture or take a photo to see what the model says.", icon=":material/arrow_upward:")
        return

    try:
        # The same path as every file: size checked from the header before any
        # pixel is decoded, EXIF rotation, RGB, and the shape limit.
        image = open_rgb(io.BytesIO(source.getvalue()))
    except Exception as exc:  # noqa: BLE001
        too_big = "too large" in str(exc)
        heic = Path(source.name).suffix.lower() in HEIC_EXTENSIONS
        st.error(
            f"{exc}"
            if too_big
            else f"That is {HEIC_HINT}."
            if heic
            else "That file could not be opened as a picture. Try a JPEG or PNG photo.",
            icon=":material/error:",
        )
        return

    try:
        with st.spinner("Loading the model…"):
            loaded = resources.loaded_model(run)
        k = min(5, len(loaded.classes))
        result = predict_images(loaded, [image], k=k)[0]
    except Exception as exc:  # noqa: BLE001
        st.error(f"The model could not make a prediction: {friendly(exc)}", icon=":material/error:")
        return

    if result.get("error"):
        st.error(f"The picture could not be read: {result['error']}", icon=":material/error:")
        return

    top_class, top_prob = result["top"][0]
    try:
        explained = resources.explain_upload(run, source.getvalue(), image)
    except Exception:  # noqa: BLE001 - the prediction stands without its heat map
        widgets.log.exception("Grad-CAM failed for an uploaded picture")
        explained = None

    c1, c2, c3 = st.columns([1, 1, 1.6], gap="large")
    with c1:
        # A camera photo's own name is a timestamp ("camera-input-2026-12-01T06_01_57.704Z.jpg").
        st.image(image, caption="Your photo" if source is photo else source.name, width="stretch")
    with c2:
        if explained is not None:
            st.image(explained["overlay"], caption=f"Where it looked to say “{top_class}”", width="stretch")
    with c3:
        st.markdown(f"### It looks like: **{words.md_text(top_class)}**")
        sure = "very sure" if top_prob >= 0.9 else "fairly sure" if top_prob >= 0.6 else "unsure"
        st.markdown(f"The model is **{words.fmt_pct(top_prob)}** sure ({sure}).")  # as the bars say it
        st.warning(words.always_picks(loaded.classes), icon=":material/rule:")
        st.plotly_chart(charts.top_classes_figure(result["top"]), key="top_classes")
    if explained is not None:
        st.caption(words.CAM_CAPTION)


@st.fragment
def many_pictures(run) -> None:
    """A folder of pictures: a table of what the model says, and a CSV of it.
    A fragment: using it does not redo the single picture above."""
    # A fragment's rerun does not pass through app.py's error handler.
    with widgets.guard("Could not name the pictures"):
        _many_pictures(run)


def _many_pictures(run) -> None:
    st.subheader(":material/photo_library: Many pictures at once")
    st.caption(
        "Give the model a whole folder: it names every picture in it (and in its subfolders). You get a table, "
        "and a CSV file to open in a spreadsheet."
    )
    classes = run.classes or resources.loaded_model(run).classes  # no classes.json: the model's own
    # The button's column holds its words whole in a 1024 px window with the sidebar open (1.3 cut them to "Name …").
    c1, c2, c3 = st.columns([3, 1.2, 1.6], vertical_alignment="bottom")
    c1.text_input(
        "Folder of pictures",
        key="batch_folder",
        placeholder="e.g. /home/me/Pictures/new",
        help="Type or paste the folder's path. Pictures in its subfolders are included.",
    )
    c2.number_input(
        "Classes per picture",
        min_value=1,
        max_value=max(1, min(5, len(classes))),
        value=min(3, max(1, len(classes))),
        key="batch_k",
        help="How many of the most likely classes the table lists for each picture.",
    )
    if c3.button("Name them all", icon=":material/play_arrow:", type="primary", key="batch_go"):
        _predict_folder(run, pasted_path(st.session_state.get("batch_folder") or ""), int(st.session_state["batch_k"]))

    result = st.session_state.get("_batch")
    if not result or result["run"] != run.name:
        return
    rows = result["rows"]
    named = [r for r in rows if not r["error"]]
    counts = Counter(r["top_class"] for r in named)
    text = ", ".join(f"{n} {words.md_text(c)}" for c, n in counts.most_common())
    st.markdown(
        f"Named **{len(named)}** picture{'s' if len(named) != 1 else ''} in {words.md_text(result['folder'])}: {text}."
    )
    _unreadable_warning(rows)
    _results_table(rows, result["k"])
    st.download_button(
        "Download the table (CSV)",
        data=predictions_csv(rows),
        file_name=f"predictions-{uploads.safe_name(Path(result['folder']).name, 'pictures')}.csv",
        mime="text/csv",
        icon=":material/download:",
        on_click="ignore",
        key="batch_csv",
    )
    st.caption("From a terminal: `python -m core predict RUN_FOLDER PICTURES_FOLDER --csv out.csv` does the same.")
    if Path(result["folder"]).is_dir():
        fixes.disagreements(result["folder"], rows, classes, key="play_folder")


UNREADABLE_LISTED = 3  # the warning names this many unreadable files; the table's Problem column has them all


def _why(row: dict) -> str:
    """Why a file could not be read, without the "could not read this picture" a column's name says."""
    return (row["error"] or "").removeprefix("could not read this picture: ")


def _unreadable_warning(rows: list[dict]) -> None:
    """The files that could not be read, the first few by name and why, then how many more."""
    unread = [r for r in rows if r["error"]]
    if not unread:
        return
    listed = "; ".join(f"{words.md_text(r['file'])} ({words.md_text(_why(r))})" for r in unread[:UNREADABLE_LISTED])
    more = len(unread) - UNREADABLE_LISTED
    rest = f"; and {more} more. The table's **Problem** column says why for each" if more > 0 else ""
    st.warning(
        f"{how_many(len(unread), 'file')} could not be read as a picture: {listed}{rest}.",
        icon=":material/broken_image:",
    )


# The folder table's columns in px: together 790, inside the 818 px a page gives a table in a 1280 px window with
# the sidebar open, most of the room going to the picture's name. "Problem" only appears when a file could not be
# read. In a narrower page (ui.page_width), the SMALL_WINDOW widths: together 555, inside the 562 px of a 1024 px
# window with the sidebar open (a table stretches its columns alike over any room beyond their widths).
RESULT_WIDTHS = {"Picture": 330, "It looks like": 140, "Sure": 100, "Also possible": 220}
WITH_PROBLEMS = {"Picture": 280, "It looks like": 110, "Sure": 90, "Also possible": 150, "Problem": 160}
SMALL_WINDOW = {
    "results": {"Picture": 175, "It looks like": 120, "Sure": 80, "Also possible": 180},
    "with problems": {"Picture": 140, "It looks like": 90, "Sure": 80, "Also possible": 120, "Problem": 125},
}
NAME_CHAR_PX = 7.0  # a file name's characters (capitals, digits, "_") are wider than a sentence's: 6.5 px measured
TABLE_MOST_PX = 720  # rows made tall by long class names scroll inside the table past this height


def _results_table(rows: list[dict], k: int) -> None:
    """What the model says of each picture, each thing once: its surest class,
    how sure, and the other classes of its `k` most likely. Rows are as tall
    as a long class name needs to show whole; a path too long for its column
    shows shortened in the middle ("hat/IMG_2023…_final.jpg"), on one line,
    while the cell holds it whole (a double click shows it; the CSV has it)."""
    problems = any(r["error"] for r in rows)
    widths = WITH_PROBLEMS if problems else RESULT_WIDTHS
    page = page_width.main_width(page_width.table_px(widths))
    if page is not None and page < page_width.table_px(widths):
        widths = SMALL_WINDOW["with problems" if problems else "results"]
    if k < 2:
        widths = {name: width for name, width in widths.items() if name != "Also possible"}
    cells = [
        {
            "Picture": r["file"],
            "It looks like": r["top_class"] or "–",
            "Sure": None if r["confidence"] is None else 100 * r["confidence"],
            "Also possible": "; ".join(f"{c} {p:.0%}" for c, p in r["top"][1:]),
            "Problem": _why(r),
        }
        for r in rows
    ]
    table = pd.DataFrame([{name: cell[name] for name in widths} for cell in cells])
    size = widgets.whole_rows({name: list(table[name]) for name in widths if name not in ("Picture", "Sure")}, widths)
    if size:
        size["height"] = min(size["height"], TABLE_MOST_PX)
    fits = max(12, int((widths["Picture"] - 17) / NAME_CHAR_PX))  # 17 px: the cell's padding
    st.dataframe(
        table.style.format(lambda path: words.middle_cut(path, fits), subset=["Picture"]),
        hide_index=True,
        **size,
        column_config={
            "Picture": st.column_config.TextColumn(
                width=widths["Picture"],
                help="Where the picture is in the folder. A long name is shortened in the middle: double-click it to see "
                "it whole (the CSV has it whole too).",
            ),
            "It looks like": st.column_config.TextColumn(width=widths["It looks like"], help="Its answer."),
            "Sure": widgets.percent_bar("How sure it is of its answer.", width=widths["Sure"]),
            "Also possible": st.column_config.TextColumn(
                width=widths.get("Also possible"),
                help=f"The next most likely classes (it lists {k} in all: Classes per picture), and how sure of each.",
            ),
            "Problem": st.column_config.TextColumn(
                width=widths.get("Problem"), help="Why the file could not be read as a picture."
            ),
        },
    )


def _predict_folder(run, folder: str, k: int) -> None:
    if not folder:
        st.warning("Type the folder's path first.", icon=":material/arrow_upward:")
        return
    path = Path(folder).expanduser()
    refusal = state.folder_refusal(path)  # a shared app reads only its data folder
    if refusal:
        st.error(refusal, icon=":material/folder_off:")
        return
    if not path.exists():
        st.error(f"The folder {words.md_text(path)} does not exist. Check the spelling.", icon=":material/error:")
        return
    paths = list_images(path, with_heic=True)
    if not paths:
        st.warning(f"There are no pictures in {words.md_text(path)}.", icon=":material/hide_image:")
        return
    bar = st.progress(0.0, text=f"Naming {len(paths)} pictures…")
    try:
        rows = predict_batch(
            resources.loaded_model(run),
            paths,
            k=k,
            root=path if path.is_dir() else path.parent,
            on_progress=lambda done, total: bar.progress(done / total, text=f"{done} of {total} pictures…"),
        )
    except Exception as exc:  # noqa: BLE001
        widgets.log.exception("batch prediction failed")
        st.error(f"The model could not name the pictures: {friendly(exc)}", icon=":material/error:")
        return
    finally:
        bar.empty()
    st.session_state["_batch"] = {"run": run.name, "folder": str(path), "rows": rows, "k": k}


def main() -> None:
    """Pick a run, then one picture, or a folder of them."""
    all_runs = resources.store().list()
    saved = [r for r in all_runs if r.best_checkpoint.exists()]
    broken = [r for r in saved if r.model_problem]  # a model that cannot name pictures is not offered
    runs = [r for r in saved if r not in broken]
    why = "its saved model cannot be used" if len(broken) == 1 else "their saved models cannot be used"
    wanted = next((r for r in broken if r.name == st.query_params.get("run")), None)
    if wanted is not None:  # a link or bookmark to one: why it is not here, rather than another run silently
        st.error(f"The run {words.md_text(wanted.name)} cannot be tried here: {wanted.model_problem}.")
    if not runs and broken:
        widgets.left_out_caption(broken, why)
        return
    if not runs:
        st.info(
            "There is no trained model yet. Train one on the **Train** page first.", icon=":material/fitness_center:"
        )
        st.page_link(state.PAGE_TRAIN, label="Go to Train", icon=":material/fitness_center:")
        return

    run = widgets.pick_run(
        runs,
        key="play_run",
        help="Every run that has saved a model it can use, newest first.",
        known={r.name for r in all_runs},
    )
    widgets.left_out_caption(broken, why)
    if run.state == "damaged":
        st.error(run.summary()["reason"], icon=":material/broken_image:")
        if run.model_problem:  # its model cannot name pictures: nothing to try
            return
    classes = run.classes or resources.loaded_model(run).classes  # no classes.json: the model's own
    st.caption(
        f"This model knows {len(classes)} classes: "
        + ", ".join(words.md_text(c) for c in classes[:20])
        + (" …" if len(classes) > 20 else "")
    )
    one_picture(run)
    st.divider()
    many_pictures(run)


main()
