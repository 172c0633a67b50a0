"""The Results page's honest numbers: validation accuracy with its 95%
interval in words, the test split's score (test_eval.json) apart from
validation, and "Check on new labelled pictures" (core.held_out)."""

from __future__ import annotations

import streamlit as st

from core.counts import how_many
from core.errors import friendly
from core.evaluation import cell_images
from core.held_out import interval_in_words, wilson_interval
from core.runs import read_json
from ui import charts, fixes, widgets, words

SHOWN = 12  # pictures of one confusion square


def interval_words(accuracy: float, count: int) -> str:
    """The 95% sentence for an accuracy over `count` pictures."""
    right = round(accuracy * count)
    low, high = wilson_interval(right, count)
    return interval_in_words(accuracy, count, low, high)


def validation_interval(evaluation: dict) -> None:
    count = evaluation.get("count") or 0
    if count:
        st.markdown(
            f":material/straighten: {interval_words(evaluation['accuracy'], count)}",
            help="Wilson's 95% interval: with few pictures, a few lucky or unlucky ones move the "
            "accuracy a lot. More pictures to check with make the interval narrower.",
        )


def test_split_section(run, page: int | None = None) -> None:
    """The test/ pictures, scored once at the end of the run, apart from validation (its table fitting a page
    `page` px wide, ui.page_width)."""
    test_eval = read_json(run.path / "test_eval.json")
    if not test_eval:
        return
    st.subheader(":material/lock: On the test pictures")
    st.caption(
        "Pictures of the folder's test/ split: the model never learned from them and they played no part "
        "in choosing the best epoch. They were scored once, at the end of training."
    )
    right = sum(r["correct"] for r in test_eval.get("predictions", []))
    st.markdown(
        f"It named **{right} of the {test_eval['n']}** test pictures correctly "
        f"({words.fmt_pct(test_eval['accuracy'])}). {test_eval['words']}"
    )
    st.caption(words.f1_caption(test_eval["macro_f1"]))
    widgets.per_class_table(test_eval, pictures="Test pictures of this class (the test/ folder).", page=page)
    if test_eval.get("unreadable"):
        st.caption(f"{len(test_eval['unreadable'])} test pictures could not be read and were not counted.")


def _evaluate(run, folder: str) -> None:
    from core.held_out import evaluate_folder

    try:
        with st.spinner("Running the model over every picture of the folder…"):
            result = evaluate_folder(run.path, folder)
    except Exception as exc:  # noqa: BLE001 - reported in words
        st.session_state["_held_out"] = {"run": run.name, "folder": folder, "error": friendly(exc)}
    else:
        st.session_state["_held_out"] = {"run": run.name, "folder": folder, "result": result}
    for key in ("held_true", "held_pred", "_held_out_clicked"):  # a new result picks its own square
        st.session_state.pop(key, None)


def new_pictures_section(run, page: int | None = None) -> None:
    """Score the model on a labelled folder it never saw (its table fitting a page `page` px wide)."""
    st.subheader(":material/fact_check: Check on new labelled pictures")
    st.caption(
        "Choose a folder with one subfolder per class, named like this model's classes "
        f"({', '.join(words.md_text(c) for c in run.classes or [])}). The model is scored on every picture in it."
    )
    left, right = st.columns([4, 1], vertical_alignment="bottom")
    folder = left.text_input(
        "Folder with labelled pictures",
        key="held_out_folder",
        placeholder="e.g. /home/me/Pictures/more-flowers",
        help="Type or paste the folder's path. Subfolders named like classes the model "
        "does not know are reported, not counted.",
    )
    if right.button("Check", icon=":material/play_arrow:", key="held_out_check", disabled=not (folder or "").strip()):
        _evaluate(run, folder.strip())
    done = st.session_state.get("_held_out")
    if not done or done["run"] != run.name:
        return
    if "error" in done:
        st.error(done["error"], icon=":material/error:")
        return
    held_out_result(done["folder"], done["result"], page)


def held_out_result(folder: str, result: dict, page: int | None = None) -> None:
    right = sum(r["correct"] for r in result["predictions"])
    st.markdown(
        f"#### It named **{right} of the {result['n']}** pictures correctly ({words.fmt_pct(result['accuracy'])})"
    )
    st.markdown(result["words"])
    if result.get("unknown_classes"):
        listed = ", ".join(f"{words.md_text(name)} ({n})" for name, n in result["unknown_classes"].items())
        st.warning(f"Folders the model has no class for, not counted: {listed}.", icon=":material/help:")
    if result.get("unreadable"):
        unreadable = len(result["unreadable"])
        st.caption(
            f"{how_many(unreadable, 'picture')} could not be read and {'was' if unreadable == 1 else 'were'} not counted."
        )
    st.caption(words.f1_caption(result["macro_f1"]))
    widgets.per_class_table(result, pictures="Pictures of this class in the folder checked.", page=page)
    _confusion(folder, result)


def _confusion(folder: str, result: dict) -> None:
    """The matrix (click a square) and the pictures of the chosen square, with fix actions."""
    classes = result["classes"]
    if st.session_state.get("held_true") not in classes:  # a new result opens on its most common mistake
        t, p = charts.most_confused(result)
        st.session_state["held_true"], st.session_state["held_pred"] = classes[t], classes[p]
    clicked = charts.clicked_cell(st.session_state.get("held_out_confusion"), classes)
    if clicked is not None and clicked != st.session_state.get("_held_out_clicked"):
        st.session_state["held_true"], st.session_state["held_pred"] = classes[clicked[0]], classes[clicked[1]]
    st.session_state["_held_out_clicked"] = clicked
    # A few classes: the choosers beside the matrix; many: the matrix the page's width, the choosers below it.
    beside = charts.matrix_beside(classes)
    left, right = st.columns([3, 2], gap="large") if beside else (st.container(), st.container())
    with left:
        fig = charts.clickable_confusion(charts.confusion_figure(result), result)
        fig.update_layout(
            height=charts.matrix_height(classes, most=600),
            dragmode=False,
            xaxis_title="what the model said",
            yaxis_title="real class",
        )
        st.plotly_chart(
            fig,
            key="held_out_confusion",
            on_select="rerun",
            selection_mode=("points",),
            config={"displayModeBar": False},
        )
    with right:
        first, second = (right, right) if beside else st.columns(2)
        true = first.selectbox("Real class", classes, key="held_true")
        pred = second.selectbox("Predicted as", classes, key="held_pred")
    rows = cell_images(result, true, pred)
    st.markdown(words.square_sentence(len(rows), true, pred))
    # Captioned as the Results page's own galleries (the picture's place in the folder goes below it).
    # A picture the model names wrongly may be in the wrong folder: its answer is offered first.
    cards = [(r["path"], words.answer_caption(r), r["predicted"]) for r in rows[:SHOWN]]
    fixes.card_grid(folder, cards, classes, "held_out")
    if len(rows) > SHOWN:
        st.caption(f"… and {len(rows) - SHOWN} more.")
