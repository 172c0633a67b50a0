"""Feature fusion in the pages: the head's fusion options on the Model page
(which stages feed the head, in words) and, on the Results page, the weight
a weighted or attention fusion learned for each stage (fusion.json)."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from core.backbones import BackboneInfo
from core.config import FUSIONS
from core.fusion import fused_blocks
from core.runs import read_json
from ui import resources, state

# How each fusion combines the stages it is fed, said once with their names
# (core.config's FUSIONS says it without them, for the setting's help).
_FED = {
    "concat": "The head sees the pooled features of {stages} side by side.",
    "weighted": "The head sums the features of {stages}, with one learned weight per stage.",
    "attention": "The head weighs the features of {stages} anew for each picture (attention).",
}


def _stage_words(info: BackboneInfo, block_names: list[str], stages: list[str]) -> str:
    said = [f"**{info.block_title(n)}** ({info.block_words(n, block_names)})" for n in stages]
    return said[0] if len(said) == 1 else f"{', '.join(said[:-1])} and {said[-1]}"


def fed_words(fusion: str, stages: str) -> str:
    """One sentence: how the head combines `stages` (already in words) for `fusion`."""
    if fusion in _FED:
        return _FED[fusion].format(stages=stages)
    return f"{FUSIONS[fusion]} The stages: {stages}."


def fusion_options(info: BackboneInfo) -> None:
    """The head's fusion choice and how many stages feed it (Model page, under the head)."""
    block_names = list(resources.block_param_counts(info.name, 2, 0, 0.0))
    most = len([n for n in block_names[: block_names.index("pool")] if n not in ("stem", "patch_embed")])
    f1, f2 = st.columns(2)
    fusion = f1.selectbox(
        **state.setting_widget("fusion", more_help=" ".join(f"{k}: {v}" for k, v in FUSIONS.items())),
        options=list(FUSIONS),
        format_func=lambda name: {"none": "none (last stage only)", "weighted": "weighted sum"}.get(name, name),
    )
    stage_widget = state.setting_widget("fusion_stages", bounded=True)
    stage_widget["max_value"] = most  # this network's stages, fewer than the field's limit
    if st.session_state["fusion_stages"] > most:
        st.session_state["fusion_stages"] = most
    stages = f2.slider(**stage_widget)  # greyed out without fusion (state.setting_widget)
    if fusion == "none":
        st.caption(
            f"The head sees only {_stage_words(info, block_names, [block_names[block_names.index('pool') - 1]])}."
        )
        return
    fed = fused_blocks(block_names, stages)
    st.caption(
        f"{fed_words(fusion, _stage_words(info, block_names, fed))} It helps most when your pictures look little "
        "like everyday photos (drawings, X-rays, microscope slides). With a frozen network these are stored once, "
        "so training stays fast."
    )


def stage_weights_figure(record: dict, titles: list[str]) -> go.Figure:
    fig = go.Figure(
        go.Bar(x=titles, y=record["weights"], marker_color="#1f77b4", text=[f"{w:.0%}" for w in record["weights"]])
    )
    fig.update_layout(
        title="How much each stage counts in the fused features",
        height=280,
        margin=dict(l=10, r=10, t=50, b=10),
        yaxis_title="weight",
        yaxis_tickformat=".0%",
    )
    return fig


def stage_weights_section(run) -> None:
    """Results page: the learned weight of each fused stage (nothing for other runs)."""
    record = read_json(run.path / "fusion.json", None, dict)
    if not record or not record.get("weights"):
        return
    from core.backbones import get_backbone

    info = get_backbone(run.config.get("backbone"))
    st.subheader("Which stages the head listens to")
    titles = [info.block_title(name) for name in record["stages"]]
    st.plotly_chart(stage_weights_figure(record, titles), key="fusion_weights")
    how = (
        "learned one weight per stage"
        if record["fusion"] == "weighted"
        else "weighs the stages anew for each picture; these are its mean weights over the validation pictures"
    )
    st.caption(
        f"The head {how}. Later stages see whole objects, earlier ones textures and "
        "shapes: a large weight on an early stage means your pictures need more than the usual ImageNet features."
    )
