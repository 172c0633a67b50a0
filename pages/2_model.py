"""Model: the backbone, which of its blocks learn, the head and the settings."""

from __future__ import annotations

import math

import streamlit as st
import torch

from core.backbones import BackboneInfo
from core.config import AUGMENT_PRESETS, OPTIMIZERS, SCHEDULES
from core.errors import friendly
from core.preset_advice import strategy_in_effect
from ui import bookmarks, fine_tune_view, fusion_view, networks, page_width, resources, state, widgets, words

LEARNING_RATES = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
COLORS = {"learns": "#ffd0a1", "later": "#fff1c9", "frozen": "#d3e6fa", "none": "#eeeeee"}


# --- helpers ---------------------------------------------------------------------------


def _icon(name: str) -> str:
    """A Material Symbols icon inside raw HTML (the font comes with Streamlit)."""
    return (
        f"<span style=\"font-family:'Material Symbols Rounded';font-size:1.05em;vertical-align:-0.15em\">{name}</span>"
    )


def _on_block_switched(block_names: list[str]) -> None:
    """A block's switch was flipped: the plan becomes the user's own."""
    trained = {n: bool(st.session_state.get(f"blk_{n}")) for n in block_names}
    st.session_state.setdefault("custom_trained", {})[state.choice("backbone")] = trained
    st.session_state["preset"] = "custom"


# --- 2. which blocks learn -------------------------------------------------------------------


def preset_controls(trainable_blocks: list[str]) -> str:
    state.init_choice("preset")
    st.radio(
        "Strategy",
        list(words.PRESETS),
        key="preset",
        format_func=words.PRESETS.get,
        captions=list(words.PRESET_TECHNICAL.values()),
        horizontal=True,
        persist_state="session",
        help="Presets for which blocks learn. You can also switch single blocks below (that makes it 'My own choice').",
    )
    preset = state.choice("preset")
    if preset == "last":
        state.init_choice("last_n")
        if st.session_state["last_n"] > len(trainable_blocks):
            st.session_state["last_n"] = len(trainable_blocks)
        st.slider(
            "How many of the last blocks learn",
            1,
            len(trainable_blocks),
            key="last_n",
            persist_state="session",
            help="Counted from the top (the blocks nearest the head).",
        )
    elif preset == "gradual":
        st.slider(**state.setting_widget("unfreeze_every", bounded=True))
    elif preset == "discriminative":
        st.slider(**state.setting_widget("lr_factor", bounded=True), step=0.05)
    return preset


def _block_state(name: str, counts: dict[str, int], plan, epochs: int) -> tuple[str, str, str]:
    """A block's colour, its state in words and a small line under it: what it
    does within `epochs` epochs (head-only epochs and gradual unfreezing alike)."""
    end_state = plan.trained_at(max(epochs - 1, 0))  # blocks only ever start learning: all that ever learn
    joins = dict(plan.joins(epochs))  # the epochs the sentence gives
    extra = ""
    if plan.lr_mult.get(name, 1) < 1 and counts[name] and end_state[name]:  # a frozen block has no rate
        extra = f"<br><small>rate ×{plan.lr_mult.get(name, 1):.2g}</small>"
    if counts[name] == 0:
        return COLORS["none"], "no weights", ""
    if plan.trained_at(0)[name]:
        return COLORS["learns"], f"{_icon('local_fire_department')} learns", extra
    if name in joins:
        return COLORS["later"], f"{_icon('ac_unit')} learns from epoch {joins[name]}", extra
    frozen = f"{_icon('ac_unit')} frozen"
    if plan.trained[name]:  # switched on, but the head-only epochs take the whole run
        return COLORS["frozen"], frozen, f"<br><small>would learn from epoch {plan.head_epochs + 1}</small>"
    return COLORS["frozen"], frozen, ""


TILE_PX = 100  # the narrowest block tile whose words ("learns from epoch 2", "rate ×0.016") stay inside it


def tiles_per_row(tiles: int, width: int | None) -> int:
    """How many block tiles go side by side in a main column `width` px wide
    (None: not measured yet, one row): in a narrow window (a 1024 px one, or
    a 1280 px one zoomed to 125 %) the tiles of one row were so thin that
    their words ran out of them, over the count of numbers that learn."""
    if width is None or width >= tiles * TILE_PX:
        return tiles
    rows = math.ceil(tiles * TILE_PX / max(width, 1))
    return math.ceil(tiles / rows)


def block_picture(info: BackboneInfo, counts: dict[str, int], plan, epochs: int, width: int | None = None) -> None:
    """The blocks from stem to head, coloured by what they do, each with its switch
    (in two rows or more where the page is too narrow for one, `width`)."""
    names = list(counts)
    trainable_blocks = [n for n in names if n != "head" and counts[n] > 0]
    per_row = tiles_per_row(len(names), width)

    st.markdown("From the picture (left) to your classes (right). Switch a block on to let it learn:")
    for start in range(0, len(names), per_row):
        for col, name in zip(st.columns(per_row), names[start : start + per_row]):
            _block_tile(col, info, name, counts, plan, epochs, last=name == names[-1], names=names)
            if counts[name] == 0:
                continue
            st.session_state[f"blk_{name}"] = bool(plan.trained[name])  # the switch shows the plan
            # No help icon: beside it the word "learns" was cut to "le…" in a column this narrow.
            col.toggle(
                "learns",
                key=f"blk_{name}",
                disabled=name == "head",
                on_change=_on_block_switched,
                args=(trainable_blocks,),
            )


def _block_tile(col, info: BackboneInfo, name: str, counts: dict[str, int], plan, epochs: int, last: bool, names):
    """One block's coloured tile: its name, size, what it sees and what it does."""
    color, block_state, extra = _block_state(name, counts, plan, epochs)
    arrow = ""
    if not last:
        arrow = (
            "<span style='position:absolute;right:-15px;top:40%;font-size:1.1rem;color:#666'>"
            f"{_icon('arrow_forward')}</span>"
        )
    col.markdown(
        f"<div style='position:relative;background:{color};border-radius:10px;padding:8px 6px;"
        "text-align:center;height:205px;border:1px solid #0001;display:flex;flex-direction:column;"
        "justify-content:space-between'>"
        f"<div><b>{info.block_title(name)}</b><br><small>{words.fmt_short(counts[name])} numbers</small></div>"
        f"<div style='line-height:1.2'><small style='opacity:.75'>"
        f"{info.block_words(name, names)}</small></div>"
        # Smaller than the title: "learns from epoch 7" and its rate fit a tile of a 1300 px window.
        f"<div style='line-height:1.15;font-size:.9em'><b>{block_state}</b>{extra}</div>{arrow}</div>",
        unsafe_allow_html=True,
    )


def trainable_count(counts: dict[str, int], plan, epochs: int, width: int | None = None) -> None:
    """How many numbers learn: with gradual unfreezing, at first and then as
    blocks join; otherwise once the chosen blocks learn, the head-only epochs
    before them said beside it (the count of a preset is what it trains)."""
    total = sum(counts.values())
    steps = plan.learning_steps(counts, epochs)
    gradual = plan.strategy == "gradual"
    shown = steps[0][1] if gradual else steps[-1][1]
    # In a narrow page a quarter of it cut "2,227,715" to "2,227,…".
    c1, c2 = st.columns([1, 3] if width is None or width >= 4 * TILE_PX * 2 else [2, 3], vertical_alignment="center")
    c1.metric(
        "Numbers that learn",
        f"{shown:,}",
        help="Trainable parameters: the numbers training may change"
        + (" in the first epoch; the line beside it says when more join in." if gradual and len(steps) > 1 else "."),
    )
    with c2:
        st.progress(min(1.0, shown / total), text=_share_words(shown, total, first_of_more=gradual and len(steps) > 1))
        if len(steps) > 1:
            st.caption(_steps_words(steps, total, gradual))


def _share_words(trainable: int, total: int, first_of_more: bool) -> str:
    if trainable == total:
        return f"All {words.fmt_params(total)} numbers in the network learn."
    share = f"{trainable / total:.1%} of the {words.fmt_params(total)} numbers in the network"
    if first_of_more:
        return f"At first {share} learn; more join in later (below)."
    return f"{share[0].upper()}{share[1:]} learn; the rest stay as ImageNet taught them."


def _steps_words(steps: list[tuple[int, int]], total: int, gradual: bool) -> str:
    """When the count changes: gradual unfreezing's steps, or the head-only
    epochs before the chosen blocks join in."""
    if gradual:
        said = ", ".join(f"{n:,} ({n / total:.1%}) from epoch {epoch}" for epoch, n in steps[1:])
        return f"With gradual unfreezing more learn as blocks join: {said}."
    head_only, joined = steps[0][1], steps[-1][0]
    first = "epoch" if joined == 2 else f"{joined - 1} epochs"
    return (
        f"In the first {first} only the new head learns ({head_only:,} numbers); the pretrained blocks join in "
        f"from epoch {joined}."
    )


def block_counts(backbone: str, num_classes: int) -> dict[str, int]:
    """Parameters per block of `backbone`, with the head the settings ask for
    (kept by resources; raises when the network cannot be built)."""
    return resources.block_param_counts(
        backbone,
        num_classes,
        int(state.choice("head_hidden")),
        float(state.choice("head_dropout")),
        str(state.choice("fusion")),
        int(state.choice("fusion_stages")),
    )


def tiles_px(num_classes: int) -> int:
    """The px one row of the chosen network's block tiles needs (at least 8
    tiles'; 8 when it cannot be built: its section says why)."""
    try:
        return max(len(block_counts(str(state.choice("backbone")), num_classes)), 8) * TILE_PX
    except Exception:  # noqa: BLE001 - e.g. a missing optional package
        return 8 * TILE_PX


def blocks_section(info: BackboneInfo, num_classes: int, width: int | None) -> tuple[str | None, object]:
    """Returns the chosen preset and the plan it makes, or (None, None) when
    the network cannot be built."""
    st.subheader("2. Which blocks learn")
    try:
        counts = block_counts(info.name, num_classes)
    except Exception as exc:  # noqa: BLE001 - e.g. a missing optional package
        st.error(f"Could not build {info.title}: {friendly(exc)} Pick another network.", icon=":material/error:")
        return None, None
    trainable_blocks = [n for n in counts if n != "head" and counts[n] > 0]
    preset = preset_controls(trainable_blocks)
    plan = state.current_plan(counts)
    epochs = int(state.choice("epochs"))
    st.caption(words.PRESET_HELP[preset] if preset == "linear" else plan.describe(epochs))
    fine_tune_view.preset_hint(report, strategy_in_effect(plan, epochs))  # no probe tip where it is one in effect
    block_picture(info, counts, plan, epochs, width)
    trainable_count(counts, plan, epochs, width)
    return preset, plan


# --- 3. the head -----------------------------------------------------------------------------


def head_section() -> None:
    st.subheader("3. The new head")
    h1, h2 = st.columns(2)
    h1.selectbox(
        **state.setting_widget("head_hidden"),
        options=[0, 128, 256, 512, 1024],
        format_func=lambda n: words.setting_value("head_hidden", n),
    )
    h2.slider(**state.setting_widget("head_dropout", bounded=True), step=0.05)


# --- 4. training settings ---------------------------------------------------------------------


# Advanced settings in three columns need this many px: in a 1024 px window's page (562 px) each was so thin that
# its switches' names were cut ("Weigh rare clas…", "Reuse frozen bl…", "Earlier blocks l…"); there, two columns.
# At most the 818 px of a 1280 px window's page, whose three columns show every name whole: a page that wide is
# drawn once, without waiting for its width (ui.page_width).
ADVANCED_PX = 800


def settings_section(info: BackboneInfo, preset: str | None, plan, page: int | None) -> None:
    st.subheader("4. Training settings")
    s1, s2, s3 = st.columns(3)
    s1.number_input(**state.setting_widget("epochs", bounded=True), step=1)
    s2.select_slider(
        **state.setting_widget("batch_size"),
        options=fine_tune_view.options_with([0, 4, 8, 16, 32, 64, 128, 256], state.choice("batch_size")),
        format_func=lambda v: "auto" if v == 0 else str(v),
    )
    s3.select_slider(
        **state.setting_widget("lr"),
        options=fine_tune_view.options_with(LEARNING_RATES, state.choice("lr")),
        format_func=lambda v: f"{v:g}",
    )
    fine_tune_view.lr_hint(preset)
    fine_tune_view.lr_finder(plan)
    # A key, and its open state kept: without them the expander is told apart by its place on the page, and
    # a change inside it that shows or hides a line above it (the sweep's chart, a hint) rebuilt it closed.
    with st.expander("Advanced settings", key="advanced_settings", on_change="rerun"):
        narrow = page is not None and page < ADVANCED_PX
        if narrow:  # the optimiser's and the regularisation's settings in one column, the machine's beside them
            left, right = st.columns(2)
            a1, a2, a3 = left, left, right
        else:
            a1, a2, a3 = st.columns(3)
        with a1:
            optimiser_settings()
        with a2:
            regularisation_settings()
        with a3:
            machine_settings(info)
        fine_tune_view.fine_tune_settings(narrow)
        if note := state.unused_note("head_epochs"):
            st.caption(f":material/info: {note}")
        fine_tune_view.speed_settings()


def optimiser_settings() -> None:
    st.selectbox(
        **state.setting_widget("optimizer", more_help=OPTIMIZERS[state.choice("optimizer")]),
        options=list(OPTIMIZERS),
        format_func=lambda k: words.setting_value("optimizer", k),
    )
    st.selectbox(
        **state.setting_widget("schedule", more_help=SCHEDULES[state.choice("schedule")]), options=list(SCHEDULES)
    )
    st.select_slider(
        **state.setting_widget("weight_decay"),
        options=[0.0, 1e-5, 1e-4, 1e-3, 1e-2, 5e-2, 1e-1],
        format_func=lambda v: f"{v:g}",
    )
    st.slider(
        **state.setting_widget("momentum", bounded=True),
        step=0.01,
    )


def regularisation_settings() -> None:
    # Short enough for the box in a 1280 px window ("auto (none when only the last layer learns, else light)" was
    # cut); the help says which.
    words = {"auto": "auto (none or light)", **{k: k for k in AUGMENT_PRESETS}}
    chosen = AUGMENT_PRESETS.get(
        state.choice("augment"),
        "Auto: none when only the new last layer learns, which keeps it fast (its features are computed once); "
        "light when pretrained blocks learn too.",
    )
    st.selectbox(**state.setting_widget("augment", more_help=chosen), options=list(words), format_func=words.get)
    st.slider(**state.setting_widget("label_smoothing", bounded=True), step=0.05)
    st.toggle(**state.setting_widget("class_weighted"))
    st.number_input(**state.setting_widget("early_stopping", bounded=True))


def machine_settings(info: BackboneInfo) -> None:
    st.selectbox(
        **state.setting_widget("image_size", disabled=info.fixed_image_size),
        options=fine_tune_view.options_with([0, 128, 160, 192, 224, 256, 288, 320, 384], state.choice("image_size")),
        format_func=lambda v: f"the network's own ({info.image_size}×{info.image_size})" if v == 0 else f"{v}×{v}",
    )
    # The folder's own val/ folder (or each class's) decides the split: the share would change nothing.
    own_split = report is not None and report.split_source == "folders"
    unused = "Your pictures come with their own val/ folder, which is used instead." if own_split else ""
    st.slider(**state.setting_widget("val_fraction", bounded=True, more_help=unused, disabled=own_split), step=0.05)
    st.number_input(**state.setting_widget("seed", bounded=True))
    on_gpu = torch.cuda.is_available()
    on_mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    devices = ["auto", "cpu"] + (["cuda"] if on_gpu else []) + (["mps"] if on_mps else [])
    state.init_choice("device")  # before the check of the remembered device
    if st.session_state["device"] not in devices:
        st.session_state["device"] = "auto"
    names = {
        "auto": "auto (the GPU if there is one)",
        "cpu": "CPU",
        "cuda": f"GPU ({torch.cuda.get_device_name(0)})" if on_gpu else "GPU",
        "mps": "Apple GPU",
    }
    st.selectbox(**state.setting_widget("device"), options=devices, format_func=lambda d: names.get(d, d))
    st.toggle(**state.setting_widget("mixed_precision"))
    st.toggle(**state.setting_widget("feature_cache"))
    st.radio(
        **state.setting_widget("init"),
        options=["pretrained", "random"],
        horizontal=True,
        format_func=lambda v: words.setting_value("init", v),
    )


# --- the page --------------------------------------------------------------------------------

bookmarks.open_inside_app(state.PAGE_MODEL)  # a bookmark opened first on a fresh server
st.title(":material/layers: Choose the model")
widgets.intro(
    "<b>Step 2 of 4.</b> Pick a <b>pretrained network</b> (it already knows the 1,000 everyday things of "
    "ImageNet), then choose which of its blocks stay <b>frozen</b> (keep what they know) and which "
    "<b>learn</b> from your pictures. The defaults are a good first try; then go on to <b>Train</b>."
)
report, _ = state.scan_or_none()
fine_tune_view.recipe_picker()
class_count = len(report.classes) if report is not None and report.classes else 2
# The page's width, for the networks' table, one row of the chosen network's block tiles, the count's columns and
# Advanced settings' three columns: wider than all of them, or not known yet, everything as in a wide window.
page = page_width.main_width(max(networks.TABLE_PX, tiles_px(class_count), ADVANCED_PX))
chosen_info = networks.picker(page)
chosen_preset, chosen_plan = blocks_section(chosen_info, class_count, page)
head_section()
fusion_view.fusion_options(chosen_info)
settings_section(chosen_info, chosen_preset, chosen_plan, page)
widgets.next_step(state.PAGE_TRAIN, "Next: train the model")
