"""Results: what a trained model gets right and wrong, where it looked, how it
sorts the pictures, and the model as a download."""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from core.errors import friendly
from core.evaluation import cell_images, mistakes
from ui import (
    adapt_view,
    bookmarks,
    charts,
    fixes,
    fusion_view,
    held_out_view,
    page_width,
    resources,
    state,
    widgets,
    words,
)

bookmarks.open_inside_app(state.PAGE_RESULTS)  # a bookmark opened first on a fresh server
st.title(":material/insights: Results")
widgets.intro(
    "How well did your model learn? See which classes it mixes up, the pictures it found hardest and "
    "<b>where it looked</b> in them, and take the model with you as a download."
)

GRID = 6  # pictures per row on a wide page (a 1280 px window's: 818 px, 123 px a picture)
MAX_CELL = 18  # pictures shown for one square of the matrix


# --- pictures ---------------------------------------------------------------------------


def _in_folder(run, path: str) -> str:
    """A picture's path inside the run's data folder (val/shirt/0.jpg), or its name."""
    root = run.summary()["data"] or ""  # text, whatever a damaged config.json holds
    inside = root and os.path.abspath(path).startswith(os.path.abspath(root) + os.sep)
    return os.path.relpath(path, root) if inside else Path(path).name


LONGEST_NAME = 20  # characters of a file's name under a thumbnail; longer ones keep their start and end


def _short(place: str) -> str:
    """A picture's place with a long file name shortened in its middle: val/shirt/0c6472ac…c35b1.jpg (the
    clothes example's names are 36 characters of hex, four lines under a thumbnail that pushed its Fix down)."""
    cut = max(place.rfind("/"), place.rfind(os.sep)) + 1
    stem, dot, suffix = place[cut:].rpartition(".") if "." in place[cut:] else (place[cut:], "", "")
    if len(stem) > LONGEST_NAME:
        stem = f"{stem[:8]}…{stem[-5:]}"
    return f"{place[:cut]}{stem}{dot}{suffix}"


def gallery(run, rows: list[dict], where_looked: bool, page: int | None, target="answer", key="gallery") -> None:
    """Thumbnails in rows of up to GRID (as many as fit a page `page` px wide, ui.page_width), each with what
    the model said and the fix actions; with where_looked, the Grad-CAM overlay instead of the plain picture.
    (Six in a row of a 1024 px window's page left 80 px a picture, its caption on four lines.)"""
    per_row = page_width.per_row(page, GRID)
    for start in range(0, len(rows), per_row):
        cols = st.columns(per_row)
        for col, row in zip(cols, rows[start : start + per_row]):
            with col:
                picture = None
                if where_looked:
                    explained = resources.explain_file(
                        run, row["path"], target=row["label"] if target == "real" else row["pred"]
                    )
                    picture = explained["overlay"] if explained else None
                elif os.path.isfile(row["path"]):
                    picture = resources.thumbnail(row["path"], os.path.getmtime(row["path"]))
                if picture is None:
                    st.caption(f":material/hide_image: {words.md_text(Path(row['path']).name)} is no longer there.")
                    continue
                said = f"the model said {row['predicted']} ({row['confidence']:.0%} sure)"
                alt = (
                    f"Where the model looked in a picture of {row['true']}; {said}"
                    if where_looked
                    else f"Picture of {row['true']}; {said}"
                )
                st.image(picture, width="stretch", alt=alt)
                # Where to find it: several classes may each hold a 0.jpg.
                st.caption(
                    f"{words.answer_caption(row)}  \n:gray[{words.md_text(_short(_in_folder(run, row['path'])))}]"
                )
                fixes.fix_actions(run.summary()["data"] or "", row["path"], run.classes, key, row["predicted"])


def _explaining_spinner(where_looked: bool, count: int):
    text = f"Working out where the model looked in {count} pictures…" if where_looked else "Loading the pictures…"
    return st.spinner(text)


# --- the confusion matrix ---------------------------------------------------------------


def confusion_section(run, evaluation: dict, page: int | None = None) -> None:
    classes = evaluation["classes"]
    st.subheader("Which classes get mixed up")
    st.caption(
        "Each row is the real class, each column what the model said. The diagonal from top left to bottom "
        "right holds the right answers; every other square is a mistake, and an empty one holds no pictures. "
        f"**Click a square** (or choose it {'on the right' if charts.matrix_beside(classes) else 'below'}) to see "
        "its pictures."
    )

    # A new run starts on its most common mistake.
    if st.session_state.get("_cell_run") != run.name or st.session_state.get("cell_true") not in classes:
        t, p = charts.most_confused(evaluation)
        st.session_state["cell_true"], st.session_state["cell_pred"] = classes[t], classes[p]
        st.session_state["_cell_run"] = run.name
        st.session_state.pop("_cell_clicked", None)

    # A click on the heatmap (kept in its widget state since the last rerun) moves the choosers, once.
    chart_key = f"confusion_{run.name}"
    clicked = charts.clicked_cell(st.session_state.get(chart_key), classes)
    if clicked is not None and clicked != st.session_state.get("_cell_clicked"):
        st.session_state["cell_true"], st.session_state["cell_pred"] = classes[clicked[0]], classes[clicked[1]]
    st.session_state["_cell_clicked"] = clicked

    # A few classes: the choosers beside the matrix; many: the matrix the page's width, the choosers below it.
    beside = charts.matrix_beside(classes)
    matrix, right = st.columns([3, 2], gap="large") if beside else (st.container(), st.container())
    with matrix:
        _matrix(evaluation, chart_key)

    with right:
        st.markdown("**The square to look at**")
        first, second = (right, right) if beside else st.columns(2)
        first.selectbox(
            "Real class", classes, key="cell_true", help="The row of the matrix: what the picture really is."
        )
        second.selectbox("Predicted as", classes, key="cell_pred", help="The column: what the model said it is.")
        true, pred = st.session_state["cell_true"], st.session_state["cell_pred"]
        rows = cell_images(evaluation, true, pred)
        n = len(rows)
        st.markdown(words.square_sentence(n, true, pred))
        where_looked = st.toggle(
            "Where did it look?",
            key="cam_cell",
            help="Colour each picture by the parts that made the model give its answer (Grad-CAM).",
            disabled=not rows,
        )

    if rows:
        if where_looked:
            st.caption(words.CAM_CAPTION)
        with _explaining_spinner(where_looked, min(n, MAX_CELL)):
            gallery(run, rows[:MAX_CELL], where_looked, page, key="cell")
        if n > MAX_CELL:
            st.caption(f"… and {n - MAX_CELL} more (the ones the model was least sure about).")
    else:
        st.caption("No validation pictures in this square.")


def _matrix(evaluation: dict, chart_key: str) -> None:
    """The clickable matrix, counts or shares, the chosen square outlined."""
    classes = evaluation["classes"]
    normalize = st.toggle(
        "Show shares instead of counts",
        key="cm_normalize",
        help="Each row as percentages of that class's pictures: easier to read when classes differ in size.",
    )
    fig = charts.clickable_confusion(charts.confusion_figure(evaluation, normalize=normalize), evaluation)
    t, p = classes.index(st.session_state["cell_true"]), classes.index(st.session_state["cell_pred"])
    fig.add_shape(  # the chosen square, outlined
        type="rect", x0=p - 0.5, x1=p + 0.5, y0=t - 0.5, y1=t + 0.5, line=dict(color="#ff7f0e", width=4)
    )
    fig.update_layout(
        height=charts.matrix_height(classes),
        font=dict(size=14),
        dragmode=False,
        xaxis_title="what the model said",
        yaxis_title="real class",
    )
    st.plotly_chart(
        fig,
        key=chart_key,
        on_select="rerun",
        selection_mode=("points",),
        config={"displayModeBar": False},
    )


# --- the hardest pictures ---------------------------------------------------------------


def hardest_section(run, evaluation: dict, page: int | None) -> None:
    st.subheader("The hardest pictures")
    st.caption(
        "The validation pictures that surprised the model most: wrong answers given with confidence first. "
        "They often show what the model has not understood yet, or a picture in the wrong folder."
    )
    # Two toggles side by side, the colouring's choice below them: three columns cut the toggles' names in a
    # 1024 px window ("Only the mist…", "Where di…").
    c1, c2 = st.columns(2, vertical_alignment="center")
    wrong_only = c1.toggle("Only the mistakes", key="hard_wrong_only")
    where_looked = c2.toggle(
        "Where did it look?",
        key="cam_hard",
        help="Colour each picture by the parts that made the model give its answer (Grad-CAM).",
    )
    target = "answer"
    if where_looked:
        target = st.radio(
            "Colour the parts that speak for",
            ["answer", "real"],
            format_func=lambda t: {"answer": "its answer", "real": "the real class"}[t],
            key="cam_target",
            horizontal=True,
            help="For a mistake: where it saw its (wrong) answer, or where it saw the class it should have named.",
        )
    rows = mistakes(evaluation, n=12, wrong_only=wrong_only)
    if not rows:
        st.success("The model got every validation picture right.", icon=":material/celebration:")
        return
    if where_looked:
        st.caption(words.CAM_CAPTION)
    with _explaining_spinner(where_looked, len(rows)):
        gallery(run, rows, where_looked, page, target, key="hard")
    look_closer(run, rows)


def look_closer(run, rows: list[dict]) -> None:
    """One picture large: what the model saw, the heat map, and both together."""
    from core.explain import cam_layers

    with st.expander("Look closer at one picture", icon=":material/zoom_in:"):
        names = {r["path"]: f"{Path(r['path']).name} (really {r['true']}, said {r['predicted']})" for r in rows}
        c1, c2 = st.columns([2, 1])
        path = c1.selectbox("Picture", list(names), format_func=names.get, key="closer_path")
        loaded = resources.loaded_model(run)
        layers = cam_layers(loaded)
        layer = c2.selectbox(
            "Layer to look at",
            layers,
            index=len(layers) - 1,
            format_func=loaded.model.info.block_title,  # "Final layer", not final_conv
            key=f"closer_layer_{run.name}",
            help="The last layer (the default) shows whole objects; earlier layers show finer, more local detail.",
        )
        row = next(r for r in rows if r["path"] == path)
        explained = resources.explain_file(run, path, target=row["pred"], layer=layer)
        if explained is None:
            st.caption("This picture is no longer there.")
            return
        a, b, c = st.columns(3)
        a.image(
            explained["view"],
            caption="What the model saw (the centre of the picture)",
            width="stretch",
            alt="Close-up: the picture as the model saw it",
        )
        b.image(
            explained["heatmap"], caption="Where it looked (red: most)", width="stretch", alt="Close-up: the heat map"
        )
        c.image(
            explained["overlay"], caption="Both together", width="stretch", alt="Close-up: the heat map on the picture"
        )
        top = ", ".join(f"{words.md_text(cls)} {p:.0%}" for cls, p in row["top"])
        st.caption(f"Really **{words.md_text(row['true'])}**. The model said: {top}.")


# --- the embedding view ---------------------------------------------------------------


def embedding_section(run, evaluation: dict) -> None:
    st.subheader("How the network sorts the pictures")
    st.caption(
        "Each dot is one validation picture, placed so that pictures the network finds alike sit close together: "
        "if the colours form separate groups, the network can tell the classes apart. On the left the network "
        "as it was downloaded, on the right after learning your classes."
    )
    method = st.radio(
        "Layout",
        ["pca", "tsne"],
        format_func=lambda m: {"pca": "PCA (quick)", "tsne": "t-SNE (slower, shows groups more clearly)"}[m],
        key="emb_method",
        horizontal=True,
        help="Two ways to squeeze the network's long list of numbers per picture onto a flat map.",
    )
    drawn = st.session_state.setdefault("_emb_drawn", set())
    if run.name not in drawn:  # once asked for, a run's map is drawn with either layout
        count = min(300, evaluation.get("count") or 0)
        st.button(
            "Draw the map",
            icon=":material/scatter_plot:",
            key="emb_draw",
            on_click=drawn.add,
            args=(run.name,),
            help=f"Runs {count} validation pictures through both networks; takes a little while on a CPU.",
        )
        return
    with st.spinner("Running the validation pictures through both networks…"):
        view = resources.embedding(run, method)
    classes = evaluation["classes"]
    left, right = st.columns(2)
    sep = view["separation"]
    for col, side, title in (
        (left, "pretrained", "Before: the downloaded network"),
        (
            right,
            "fine-tuned",
            "After: your trained model" if view.get("after") != "scores" else "After: the trained head's scores",
        ),
    ):
        with col:
            rows = [r for r in view["rows"] if r["model"] == side]
            st.plotly_chart(charts.embedding_figure(rows, classes, title), key=f"emb_{side}")
            st.caption(
                f"**{sep.get(side, 0):.0%}** of the dots lie nearest the centre of their own class's group.",
                help="100% means every class forms its own group on this map. With two classes, 50% is no "
                "better than chance.",
            )
    if view.get("note"):
        st.info(view["note"], icon=":material/info:")


# --- export -------------------------------------------------------------------------------


def _zip_path(run) -> Path:
    return run.path / "export" / f"{run.name}.zip"


def _zip_ready(run) -> bool:
    path = _zip_path(run)
    return path.exists() and resources.file_mtime(path) >= resources.file_mtime(run.best_checkpoint)


def _export(run, box) -> None:
    from core.export import export_run

    steps = ["Loading the model", "Writing TorchScript", "Writing ONNX", "Checking", "Writing the model card"]
    bar = box.progress(0.0, text="Starting the export…")
    done = []

    def on_step(text: str) -> None:
        done.append(text)
        bar.progress(min(1.0, len(done) / (len(steps) + 1)), text=f"{text}…")

    export_run(run.path, on_step=on_step)
    bar.progress(1.0, text="Ready.")


def export_section(run) -> None:
    st.subheader("Take the model with you")
    st.markdown(
        "One zip file with the model in two standard formats (**ONNX**, which most tools and languages can "
        "run, and **TorchScript** for PyTorch), the class names, how a picture must be prepared, a **model card** "
        "that says what the model can and cannot do, and a small example program."
    )
    if not run.best_checkpoint.exists():
        st.caption("This run has no saved model to export.")
        return
    box = st.container()
    if st.button(
        "Export" if not _zip_ready(run) else "Export again",
        icon=":material/package_2:",
        key="export",
        type="secondary" if _zip_ready(run) else "primary",
        help="Writes the zip into the run's folder (about half a minute on a CPU); then download it.",
    ):
        try:
            _export(run, box)
        except Exception as exc:  # noqa: BLE001 - reported in words
            widgets.log.exception("export failed")
            st.error(f"The export did not work: {friendly(exc)}", icon=":material/error:")
        else:
            st.toast("The zip is ready to download.", icon=":material/package_2:")
            st.rerun()  # redraw the section: "Export again", and the download
    if _zip_ready(run):
        path = _zip_path(run)
        st.download_button(
            f"Download {path.name} ({path.stat().st_size / 2**20:.0f} MB)",
            data=path.read_bytes(),
            file_name=path.name,
            mime="application/zip",
            icon=":material/download:",
            type="primary",
            on_click="ignore",
            key="download_zip",
        )
        st.caption(f"Also saved at `{path}`. From a terminal, `python -m core export RUN_FOLDER` does the same.")


# --- the page ---------------------------------------------------------------------------------


def summary(run, evaluation: dict, page: int | None = None) -> None:
    count = evaluation.get("count") or 0
    right = round(evaluation["accuracy"] * count)
    config = run.summary()  # its network, folder and strategy as text, whatever a damaged config.json holds
    st.markdown(
        f"### It named **{right} of the {count}** validation pictures correctly ({words.fmt_pct(evaluation['accuracy'])})"
    )
    st.markdown(
        f"These are pictures the model never learned from. The model: {words.backbone_title(config.get('backbone'))}, "
        f"trained on {words.md_text(Path(config.get('data') or '?').name)} to tell "
        f"{len(evaluation['classes'])} classes apart. How it learned: {words.strategy_md(config.get('strategy'))}."
    )
    held_out_view.validation_interval(evaluation)
    # A kept adapted model says where it came from; its source's note on how its training went is not its own.
    if not adapt_view.origin_note(run):
        widgets.feature_cache_caption(run.status.get("feature_cache"))
    worst = min(evaluation["per_class"], key=lambda c: (c["recall"], c["class"]))
    if worst["recall"] < 1:
        st.markdown(
            f"The hardest class for it: **{words.md_text(worst['class'])}**, of which it recognised "
            f"{words.fmt_pct(worst['recall'], 0)}."
        )
    st.markdown("#### How well each class is recognised")
    widgets.per_class_table(evaluation, page=page)
    st.caption(words.f1_caption(evaluation["macro_f1"]))


ENDED_SHORT = ("stopped", "interrupted", "failed")  # ended before the end of training: no results made


def _newest_without_results(all_runs: list, runs: list) -> str | None:
    """Why the newest training, ended before its last epoch, is not in the list: a stopped run
    has a model (the Playground offers it) but no results, which are made when a training ends."""
    newest = all_runs[0]
    if newest.name in {r.name for r in runs} or newest.state not in ENDED_SHORT or not newest.best_checkpoint.exists():
        return None
    s = newest.summary()
    return (
        f"Your newest training ({words.fmt_when(s['created'])}, {words.backbone_title(s['backbone'])} on "
        f"{words.md_text(Path(str(s['data'])).name)}) {words.state_word(s['state'])} after "
        f"epoch {s['epochs_done']} of {s['epochs']}, so it has no results here: they are made when a training "
        "ends. Resume it on the **Runs** page to finish it (the **Playground** can already try the model it "
        "saved). Below, an earlier training's results."
    )


def _no_results_note(run) -> None:
    """Why a run a link or bookmark asks for has no results here, and what to do about it."""
    name, run_state = words.md_text(run.name), run.state
    if run.can_check_again:
        lost = f"damaged: {'; '.join(run.problems)}" if run_state == "damaged" else "missing"  # not missing if cut off
        text = (
            f"The run {name} finished, but its results (eval.json) are {lost}. Its trained model is whole: "
            "**Check it again** on the Runs page makes them anew, with no training."
        )
    elif run_state in ("queued", "running", "stopping"):
        text = f"The run {name} has no results yet: they are made when its training ends. Watch it on the Train page."
    elif run_state == "damaged":
        text = f"The run {name} has no results: {run.summary()['reason']}"
    elif run_state == "finished":  # and its results cannot be made again (Run.can_check_again)
        text = f"The run {name} finished, but its results (eval.json) are missing. Train it again to see them."
    else:
        text = (
            f"The run {name} {words.state_word(run_state)} before its last epoch, so it has no results: they are "
            "made when a training ends. Resume it on the Runs page to finish it."
        )
    st.info(text, icon=":material/hourglass_top:" if run_state != "damaged" else ":material/broken_image:")
    st.page_link(
        state.PAGE_RUNS, label="Open it on the Runs page", icon=":material/history:", query_params={"run": run.name}
    )


def main() -> None:
    all_runs = resources.store().list()
    with_results = [r for r in all_runs if (r.path / "eval.json").exists()]
    # A damaged eval.json shows nothing here but its damage: such runs are left out, and the caption says so.
    broken = [r for r in with_results if r.state == "damaged" and r.evaluation is None]
    runs = [r for r in with_results if r not in broken]
    why = (
        "its results file (eval.json) is damaged" if len(broken) == 1 else "their results files (eval.json) are damaged"
    )
    wanted = st.query_params.get("run")
    asked = next((r for r in all_runs if r.name == wanted), None) if wanted not in {r.name for r in runs} else None
    if asked is not None:
        _no_results_note(asked)
    if not runs:
        if asked is not None:
            return
        if broken:
            widgets.left_out_caption(broken, why)
            return
        if all_runs:
            st.info(
                "No run has finished yet: results appear here when a training ends. Watch it on the **Train** page.",
                icon=":material/hourglass_top:",
            )
        else:
            st.info(
                "There is no trained model yet. Train one on the **Train** page first.",
                icon=":material/fitness_center:",
            )
        st.page_link(state.PAGE_TRAIN, label="Go to Train", icon=":material/fitness_center:")
        return
    if asked is None and (note := _newest_without_results(all_runs, runs)):
        st.info(note, icon=":material/stop_circle:")
    latest_finished = next((r.name for r in runs if r.state == "finished"), None)
    run = widgets.pick_run(
        runs,
        key="results_run",
        label="Trained model",
        help="Every run that has results, newest first.",
        prefer=latest_finished,
        known={r.name for r in all_runs},
    )
    widgets.left_out_caption(broken, why)
    fixes.fix_notes()
    fixes.older_pictures_notice(run, key="results")
    evaluation = resources.evaluation(run)
    if run.state == "damaged":  # what is damaged; its results when eval.json itself is whole
        st.error(run.summary()["reason"], icon=":material/broken_image:")
        if evaluation is None:
            st.page_link(
                state.PAGE_RUNS,
                label="Open it on the Runs page",
                icon=":material/history:",
                query_params={"run": run.name},
            )
            return
    if not evaluation or not evaluation.get("count"):
        st.warning("This run's results are empty: it had no validation pictures to check.", icon=":material/warning:")
        return

    # The page's width where it is narrower than a wide page's (None: wide): the tables and galleries fit it.
    page = page_width.main_width(widgets.WIDE_PAGE_PX)
    summary(run, evaluation, page)
    if run.model_problem:  # its saved results stand; what needs its model (where it looked, export, …) cannot
        st.divider()
        confusion_section(run, evaluation, page)
        st.info(
            "Its model cannot be used, so where it looked, new pictures and the download are not available. "
            "Resume it from the Runs page, or train it again.",
            icon=":material/broken_image:",
        )
        return
    fusion_view.stage_weights_section(run)
    st.divider()
    held_out_view.test_split_section(run, page)
    held_out_view.new_pictures_section(run, page)
    st.divider()
    confusion_section(run, evaluation, page)
    st.divider()
    hardest_section(run, evaluation, page)
    st.divider()
    embedding_section(run, evaluation)
    st.divider()
    export_section(run)
    st.divider()
    adapt_view.adapt_section(run)
    st.divider()
    st.page_link(
        state.PAGE_PLAYGROUND,
        label="Try it on new pictures in the Playground",
        icon=":material/science:",
        query_params={"run": run.name},
    )


main()
