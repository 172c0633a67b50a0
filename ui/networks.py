"""Which pretrained network to start from: the picker on the Model page, the
words for which networks are ready now (their weights are on this computer,
so they work offline) and which need internet the first time, and the
one-click switch to a ready network when a download failed (Model, Train and
Compare pages). The facts come from core.availability."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.availability import download_failure, readiness_words, ready_instead, ready_names
from core.backbones import BackboneInfo, default_backbone, get_backbone, list_backbones, weights_cached
from core.config import help_text, setting_label
from core.runs import open_run
from ui import page_width, resources, state, words

# --- the one-click switch -----------------------------------------------------------------


def _on_backbone_changed() -> None:
    # Block switches belong to one network: another one starts from the linear probe.
    if st.session_state.get("preset") == "custom" and not state.custom_trained(st.session_state["backbone"]):
        st.session_state["preset"] = "linear"


def _switch_to(name: str) -> None:
    """Button callback: make `name` the chosen network (before the picker is drawn)."""
    st.session_state["backbone"] = name
    _on_backbone_changed()


def failed_download(run_dir: str | None) -> str | None:
    """The network whose weights the run in `run_dir` could not download (read
    from its folder, so it survives a reload), or None."""
    if not run_dir:
        return None
    try:
        return download_failure(open_run(run_dir).summary())
    except (FileNotFoundError, OSError):
        return None


def switch_offer(failed: str, key: str) -> None:
    """After `failed`'s weights could not be downloaded, while it is still the
    chosen network: say so, and offer a button that picks a ready one."""
    if failed != state.choice("backbone"):
        return  # already switched
    instead = ready_instead(failed)
    title = get_backbone(failed).title
    if instead is None:
        st.warning(f"{title} could not download its weights, and no network works offline here.")
        return
    other = get_backbone(instead).title
    st.warning(
        f"**{title} could not download its weights** (it needs internet the first time). "
        f"{other} works offline: its weights are already on this computer.",
        icon=":material/cloud_off:",
    )
    st.button(
        f"Use {other} instead (works offline)",
        key=key,
        type="primary",
        icon=":material/swap_horiz:",
        on_click=_switch_to,
        args=(instead,),
        help="Chooses this network on the Model page; your other settings stay.",
    )


def _latest_run_dir() -> str | None:
    """The run the Train page shows (this tab's or the newest job), else the newest run folder."""
    job = resources.current_job()
    if job is not None and job.run_dir:
        return str(job.run_dir)
    runs = resources.store().list()
    return str(runs[0].path) if runs else None


# --- the picker on the Model page -----------------------------------------------------------


# Column widths in pixels: together the table fits the Model page of a 1280 px
# window beside the sidebar (no sideways scroll), each header whole.
_WIDTHS = {"Chosen": 64, "Network": 140, "Works offline?": 180, "Size": 72, "ImageNet": 88, "Speed": 64, "About": 180}
TABLE_PX = page_width.table_px(_WIDTHS)
# In a narrower page (a 1024 px window with the sidebar open: 562 px) the table scrolled sideways, Speed cut to
# "Sp" and About out of sight: there the columns a choice needs most, as many as fit (ui.page_width).
_NEEDED_FIRST = ["Chosen", "Network", "Works offline?", "Speed", "ImageNet", "Size", "About"]


def _offline_cell(b: BackboneInfo, ready: bool) -> str:
    """readiness_words, short enough for the table's column: "Needs internet once (45 MB)"."""
    if ready or b.weights_url is None:  # (the package's own words name what to install)
        return readiness_words(b, ready)
    return f"Needs internet once ({b.file_mb or 0:.0f} MB)"


def _table(backbones: list[BackboneInfo], ready: dict[str, bool], chosen: str, page: int | None) -> None:
    """The networks side by side, in a page `page` px wide (None: a wide one)."""
    shown, _, left_out = page_width.columns_for(page, _WIDTHS, _WIDTHS, _NEEDED_FIRST)
    table = pd.DataFrame(
        [
            {
                "Chosen": b.name == chosen,
                "Network": b.title,
                "Works offline?": _offline_cell(b, ready[b.name]),
                "Size": b.params_m,
                "ImageNet": b.top1,
                "Speed": b.speed,
                "About": b.description,
            }
            for b in backbones
        ]
    )[shown]
    st.dataframe(
        table,
        hide_index=True,
        column_config={
            "Chosen": st.column_config.CheckboxColumn(width=_WIDTHS["Chosen"], help="The network chosen below."),
            "Network": st.column_config.TextColumn(width=_WIDTHS["Network"]),
            "Works offline?": st.column_config.TextColumn(
                "Offline?",
                width=_WIDTHS["Works offline?"],
                help="Works offline: its pretrained weights are on this computer, so it trains without internet. "
                "The others download their weights once (that many MB), the first time they train.",
            ),
            "Size": st.column_config.NumberColumn(
                "Size (M)",
                width=_WIDTHS["Size"],
                format="%.1f",
                help="Millions of numbers (parameters) in the network. Bigger networks are slower.",
            ),
            "ImageNet": st.column_config.NumberColumn(
                "ImageNet %",
                width=_WIDTHS["ImageNet"],
                format="%.1f",
                help="ImageNet accuracy: how often, in %, it was right on ImageNet's 1,000 classes (top-1).",
            ),
            "Speed": st.column_config.TextColumn(
                width=_WIDTHS["Speed"], help="How fast it trains and predicts: fast, medium or slow."
            ),
            "About": st.column_config.TextColumn(
                width=_WIDTHS["About"], help="What the network is like. Double-click a cell to read all of it."
            ),
        },
    )
    if left_out:
        st.caption(page_width.left_out_note(left_out))


def picker(page: int | None = None) -> BackboneInfo:
    """Section 1 of the Model page: every network, which are ready now, the
    choice, and the switch to a ready one after a failed download (the
    table for a page `page` px wide, ui.page_width; None: a wide one)."""
    st.subheader("1. The pretrained network")
    backbones = list_backbones()
    by_name = {b.name: b for b in backbones}
    ready = {b.name: weights_cached(b.name) for b in backbones}
    state.init_choice("backbone")
    if st.session_state["backbone"] not in by_name:
        st.session_state["backbone"] = default_backbone()
    failed = failed_download(_latest_run_dir())
    if failed:
        switch_offer(failed, key="switch_backbone_model")

    offline = [by_name[n].title for n in ready_names()]
    st.markdown(
        f":material/check_circle: **Ready now, no internet needed:** {', '.join(offline) or 'none'}. "
        "The others download their weights the first time they train."
    )
    _table(backbones, ready, st.session_state["backbone"], page)

    def label(name: str) -> str:
        return f"{by_name[name].title} · {by_name[name].speed} · {readiness_words(by_name[name], ready[name])}"

    st.selectbox(
        setting_label("backbone"),
        list(by_name),
        key="backbone",
        format_func=label,
        persist_state="session",
        on_change=_on_backbone_changed,
        help=help_text("backbone"),
    )
    info = by_name[state.choice("backbone")]
    if ready[info.name]:
        st.caption(f":material/check_circle: {info.title}: {info.description} **Ready — works offline.**")
    else:
        st.info(
            f"{info.title}: {info.description} Needs internet the first time: its weights "
            f"({info.file_mb:.0f} MB) are not on this computer yet and download when training starts.",
            icon=":material/cloud_download:",
        )
    return info


def offer_after_failure(run_dir: str | None, key: str) -> None:
    """Under a failed run: the switch to a ready network, when a download was why."""
    failed = failed_download(run_dir)
    if failed:
        switch_offer(failed, key=key)


# --- the Compare page -------------------------------------------------------------------------


def sweep_label(name: str) -> str:
    """A network in "Compare networks" (a short chip): its title and whether it is ready."""
    info = get_backbone(name)
    if weights_cached(name):
        return f"{info.title} · works offline"
    return f"{info.title} · needs internet ({info.file_mb or 0:.0f} MB)"


def default_sweep() -> list[str]:
    """The networks "Compare networks" starts with: ready ones only."""
    return ready_names()[:3]


def _use_ready_in_sweep() -> None:
    """Button callback: every chosen network that needs internet gives way to a ready one."""
    chosen = list(st.session_state.get("sweep_backbones") or [])
    ready = ready_names()
    keep = [n for n in chosen if n in ready]
    spare = [n for n in ready if n not in keep]
    wanted = set(keep + spare[: max(1, len(chosen)) - len(keep)])
    st.session_state["sweep_backbones"] = [n for n in ready if n in wanted]


def sweep_needs_internet(chosen: list[str]) -> None:
    """Under the sweep's networks: which need internet, and one click to use ready ones instead."""
    need = [get_backbone(n) for n in chosen if not weights_cached(n)]
    if not need:
        return
    mb = sum(b.file_mb or 0 for b in need)
    st.info(
        f"{', '.join(b.title for b in need)} need{'s' if len(need) == 1 else ''} internet the first time "
        f"({mb:.0f} MB download). Without internet {'it' if len(need) == 1 else 'they'} cannot train.",
        icon=":material/cloud_download:",
    )
    st.button(
        "Use only networks that work offline",
        key="sweep_use_ready",
        icon=":material/swap_horiz:",
        on_click=_use_ready_in_sweep,
        help="Swaps each network that needs internet for one whose weights are on this computer.",
    )


def failed_run_notes(rows: list[dict]) -> None:
    """Why each failed run among the compared ones did not train, read from
    its run folder (the leaderboard rows carry state and reason), and what
    is damaged in each damaged one (its row says only "damaged")."""
    for r in rows:
        if r["state"] == "damaged":
            st.error(f"**{words.md_text(r['run'])}:** {words.md_text(r['reason'])}", icon=":material/broken_image:")
        if r["state"] != "failed":
            continue
        hint = ""
        if download_failure(r):
            hint = " Choose networks that work offline below, then train again."
        st.error(
            f"**{r['backbone_title']}, {words.strategy_label(r['strategy'])} did not train.** "
            f"{r['reason'] or 'No reason was saved.'}{hint}",
            icon=":material/error:",
        )
