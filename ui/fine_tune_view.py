"""The Model page's help with fine-tuning: recipes of the classic tutorials,
the learning-rate finder, the fine-tuning settings and which preset to try
first. Streamlit glue only: the recipes, the finder and the advice are core's."""

from __future__ import annotations

import re

import streamlit as st

from core.availability import needs_download, readiness_words
from core.backbones import get_backbone
from core.config import BATCHNORM
from core.counts import rate_text
from core.errors import friendly
from core.preset_advice import preset_advice
from core.recipes import KEPT_WORDS, RECIPES, applied_settings, get_recipe
from ui import charts, state

_LAST_N = re.compile(r"last-(\d+)")
_LR_FIND = "_lr_find"  # session key: the last sweep's result and the settings it was for


def options_with(values: list, current) -> list:
    """A widget's options, with the current value added where a recipe or the
    finder chose one that the list lacks (a widget cannot show a value it
    does not offer)."""
    return values if current in values else sorted([*values, current])


# --- recipes -----------------------------------------------------------------------


def _apply_recipe() -> None:
    """Set the whole recipe: what it names, and every other choice back to its
    default (core.recipes.applied_settings), so nothing of an earlier recipe
    or choice stays mixed in."""
    name = st.session_state.get("recipe_choice")
    if not name:
        return
    current = {key: state.choice(key) for key in state.DEFAULTS}
    for key, value in applied_settings(name, current, base=state.DEFAULTS).items():
        if key == "strategy":
            match = _LAST_N.fullmatch(value)
            st.session_state["preset"] = "last" if match else value
            if match:
                st.session_state["last_n"] = int(match.group(1))
        elif key == "backbone" or key in state.DEFAULTS:
            st.session_state[key] = 0 if value is None else value
    st.session_state["recipe_applied"] = name
    # What it set, to tell when a choice has changed since.
    st.session_state["recipe_values"] = {key: st.session_state.get(key) for key in ("backbone", *state.DEFAULTS)}


def _recipe_left() -> str | None:
    """The recipe applied earlier whose settings have been changed since: it is
    no longer in force, so it is no longer shown as chosen (its "needs
    internet" line spoke of a network no longer chosen)."""
    applied, values = st.session_state.get("recipe_applied"), st.session_state.get("recipe_values") or {}
    if not applied or all(st.session_state.get(key) == value for key, value in values.items()):
        return None
    st.session_state["recipe_applied"] = st.session_state["recipe_choice"] = None
    return applied


def recipe_picker() -> None:
    """Pick a recipe and fill the settings with it; every one can still be changed."""
    with st.expander("Start from a recipe of a classic tutorial", icon=":material/menu_book:"):
        left = _recipe_left()
        st.selectbox(
            "Recipe",
            [None, *RECIPES],
            key="recipe_choice",
            format_func=lambda n: "choose one…" if n is None else RECIPES[n].title,
            help="Sets the settings below the way a well-known tutorial trains: every setting; the ones it does "
            f"not name go back to their defaults ({KEPT_WORDS}). You can change any of them after.",
        )
        name = st.session_state.get("recipe_choice")
        if name:
            st.caption(get_recipe(name).source)
            network = get_backbone(get_recipe(name).settings["backbone"])
            if needs_download(network.name):  # said before it is applied, not when training fails offline
                needs = readiness_words(network, ready=False)
                st.caption(f":material/wifi: {network.title}: {needs[0].lower()}{needs[1:]}.")
        st.button(
            "Use this recipe",
            on_click=_apply_recipe,
            disabled=not name,
            icon=":material/done_all:",
            help=f"Sets every setting; the ones the recipe does not name go back to their defaults ({KEPT_WORDS}).",
        )
        applied = st.session_state.get("recipe_applied")
        if applied:
            st.caption(
                f":material/check: Every setting set from “{RECIPES[applied].title}”: the ones it does not name "
                f"are back to their defaults ({KEPT_WORDS}). Change any of them below."
            )
        elif left:
            st.caption(f"Started from “{RECIPES[left].title}”; its settings have been changed since.")
        else:
            st.caption("Using a recipe sets every setting; the ones it does not name go back to their defaults.")


# --- which preset first ------------------------------------------------------------


def preset_hint(report, strategy: str) -> None:
    """Which preset to try first, only where the chosen `strategy` is not it."""
    pictures = len(report.train) if report is not None else None
    advice = preset_advice(pictures, strategy)
    if advice:
        st.caption(":material/tips_and_updates: " + advice)


def lr_hint(preset: str | None) -> None:
    """A smaller rate when every block learns at one rate; not against the
    rate a recipe chose itself (its tutorial trains with it)."""
    applied = st.session_state.get("recipe_applied")
    if applied and state.choice("lr") == get_recipe(applied).settings.get("lr"):
        return
    if preset in ("full", "last") and not state.choice("discriminative_lr") and state.choice("lr") >= 1e-3:
        st.caption(
            ":material/lightbulb: When every block learns, a smaller learning rate (0.0001 or 0.0003) "
            "usually works better."
        )


# --- the learning-rate finder ------------------------------------------------------


def _use_suggestion(lr: float) -> None:
    st.session_state["lr"] = float(f"{lr:.2g}")


def lr_finder(plan=None) -> None:
    """A button that sweeps the rate for the current settings, draws the curve
    and applies the suggestion with one more click. `plan`: the run's freeze
    plan (state.current_plan), which tells what the sweep trains; None when
    the network cannot be built."""
    from core.lr_find import swept_plan

    config = state.build_config()
    key = {k: v for k, v in config.to_dict().items() if k not in ("lr", "epochs")}
    # The epochs matter only through the blocks that learn by the run's end (what the sweep trains).
    key["swept"] = config.epochs if plan is None else swept_plan(plan, config.epochs).trained
    blocks = plan is not None and any(on for name, on in key["swept"].items() if name != "head")
    if st.button(
        "Find a learning rate",
        icon=":material/query_stats:",
        help="A short run whose rate grows step by step, from tiny to far too big: the loss against the rate "
        "shows where learning is fastest. It trains what your run will train, each part at its share of the rate: "
        "the new head alone on stored features takes seconds; pretrained blocks that learn need the pictures "
        "themselves, a minute or more without a GPU.",
    ):
        from core.lr_find import lr_find

        try:
            waiting = "Sweeping the learning rate"
            if blocks:
                waiting += " with the blocks that learn, on the pictures: a minute or more without a GPU"
            with st.spinner(waiting + "…"):
                result = lr_find(config)
        except Exception as exc:  # noqa: BLE001 - any failure is one line for the user
            st.error(f"The learning-rate finder could not run: {friendly(exc)}", icon=":material/error:")
            return
        st.session_state[_LR_FIND] = {"key": key, "result": result.to_dict(), "words": result.words}
    found = st.session_state.get(_LR_FIND)
    if not found:
        return
    if found["key"] != key:
        st.caption("The settings changed since the last sweep: find the rate again for these.")
        return
    result = found["result"]
    st.plotly_chart(charts.lr_find_figure(result), key="lr_find_chart")
    st.caption(found["words"])
    suggested = float(f"{result['suggestion']:.2g}")
    st.button(
        f"Use {rate_text(suggested)} as the learning rate",  # written as the words above write it (9.8e-5)
        on_click=_use_suggestion,
        args=(result["suggestion"],),
        disabled=state.choice("lr") == suggested,
        icon=":material/check:",
        help=result["used_for"],
    )


# --- the fine-tuning settings ------------------------------------------------------


def fine_tune_settings(narrow: bool = False) -> None:
    """Head-first epochs, warm-up, gentler rates for earlier blocks, BatchNorm, and the step schedule's step
    (greyed out where the chosen preset does not use them: state.setting_widget); in two columns in a
    `narrow` page (in three, "Earlier blocks learn more gently" was cut to "Earlier blocks l…")."""
    if narrow:
        f1, f2 = st.columns(2)
        f3 = f2  # the switch under the warm-up
    else:
        f1, f2, f3 = st.columns(3)
    f1.number_input(**state.setting_widget("head_epochs", bounded=True))
    f2.number_input(**state.setting_widget("warmup_epochs", bounded=True), step=0.5)
    f3.toggle(**state.setting_widget("discriminative_lr"))
    f1.selectbox(
        **state.setting_widget("batchnorm", more_help=BATCHNORM[state.choice("batchnorm")]), options=list(BATCHNORM)
    )
    if state.choice("schedule") == "step":
        f2.number_input(**state.setting_widget("step_epochs", bounded=True))


def speed_settings() -> None:
    """The two shortcuts that trade a little variety for speed, each with its measured default."""
    s1, s2 = st.columns(2)
    s1.number_input(**state.setting_widget("augment_views", bounded=True))
    s2.slider(**state.setting_widget("progressive_resizing", bounded=True), step=0.1)
