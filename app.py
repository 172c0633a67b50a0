"""Transfer Studio: `streamlit run app.py`.

The entry point: page config, the sidebar (where the user stands in the guided
flow, and where runs and uploads are kept) and the navigation. Each page script
in pages/ is thin: widgets and layout over `core`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:  # so `ui` and `core` import from any working directory
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

st.set_page_config(page_title="Transfer Studio", page_icon=str(ROOT / "assets" / "icon.svg"), layout="wide")
st.set_option("client.toolbarMode", "viewer")  # no developer menu or "Deploy" button for non-programmers
st.logo(str(ROOT / "assets" / "logo.svg"), size="large", icon_image=str(ROOT / "assets" / "icon.svg"))

# The guided flow, in sections. Each url_path is the name Streamlit derives
# from the file (6_results.py -> results), so a bookmark means the same page
# whether or not app.py has run yet (see ui/bookmarks.py).
DATA = st.Page(
    "pages/1_data.py",
    title="Data",
    icon=":material/photo_library:",
    url_path="start",
    default=True,
    help="Choose your pictures (a folder, an upload, the camera or an example set) and check them.",
)


def _data_address() -> None:
    """/data: the Data page is the default, served at the root address, so
    /data (its name before app.py runs, and in a bookmark or a handout) would
    be "Page not found"; this hidden page sends it on."""
    st.switch_page(DATA, query_params=st.query_params.to_dict() or None)


PAGES = {
    "Your data": [
        DATA,
        st.Page(_data_address, title="Data", url_path="data", visibility="hidden"),
    ],
    "Your model": [
        st.Page(
            "pages/2_model.py",
            title="Model",
            icon=":material/layers:",
            url_path="model",
            help="Pick a pretrained network and which of its blocks learn from your pictures.",
        ),
        st.Page(
            "pages/3_train.py",
            title="Train",
            icon=":material/fitness_center:",
            url_path="train",
            help="Start the training and watch it learn, live.",
        ),
    ],
    "Your results": [
        st.Page(
            "pages/6_results.py",
            title="Results",
            icon=":material/insights:",
            url_path="results",
            help="How well a trained model does: its mistakes, where it looked, and its download.",
        ),
        st.Page(
            "pages/4_playground.py",
            title="Playground",
            icon=":material/science:",
            url_path="playground",
            help="Try a trained model on new pictures or the camera.",
        ),
        st.Page(
            "pages/5_runs.py",
            title="Runs",
            icon=":material/history:",
            url_path="runs",
            help="Every training so far: open, resume or delete one.",
        ),
        st.Page(
            "pages/7_compare.py",
            title="Compare",
            icon=":material/leaderboard:",
            url_path="compare",
            help="Trained models side by side, and several trainings started at once.",
        ),
    ],
}
page = st.navigation(PAGES)

if "ui.resources" not in sys.modules:
    # The first start imports PyTorch, which takes a few seconds: say so.
    with st.spinner("Starting Transfer Studio (loading PyTorch)…"):
        from ui import resources  # noqa: E402
from core.errors import friendly  # noqa: E402
from core.scan import DataFolderError  # noqa: E402
from ui import bookmarks, choices, live, resources, state, words  # noqa: E402

bookmarks.resume()  # a page that Streamlit ran alone handed itself over: go on to it
choices.restore()  # a new session (a reload, a new tab, a restart) starts from the choices that stay


def settings() -> None:
    """Where the app keeps its files: shown, not offered. They are fixed when
    the server starts (see the README), so no visitor can point them elsewhere."""
    where = state.places()
    with st.sidebar.expander("Settings", icon=":material/settings:"):
        st.text_input(
            "Runs folder",
            value=str(where.runs),
            disabled=True,
            help="Where each training run is saved (one folder per run).",
        )
        st.text_input(
            "Folder for uploaded pictures",
            value=str(where.data),
            disabled=True,
            help="Pictures you upload on the Data page are saved in a new folder inside this one.",
        )
        st.caption(
            "Set when Transfer Studio is started: `streamlit run app.py -- --runs FOLDER --data FOLDER` "
            f"(or {state.RUNS_ENV} and {state.DATA_ENV})."
        )
        if where.shared:
            st.caption(":material/lan: Shared on the network: pictures can only come from uploads and the data folder.")


def where_you_are() -> None:
    """One line per step of the flow, drawn after the page so it shows its latest choices."""
    st.caption("YOUR CHOICES")
    report, unusable = state.scan_of_choice(), False
    if report is None:  # e.g. a folder handed over by a run's settings: its counts, if no picture needs decoding
        try:
            state.current_scan(quick_only=True)
        except DataFolderError:  # not there, or not a folder: the Data page says why
            unusable = True
        report = state.scan_of_choice()
    if unusable:
        chosen = Path(state.choice("data_dir")).expanduser()
        why = "cannot be used" if chosen.exists() else "not found"
        st.markdown(f":material/folder_off: **Data:** {words.md_text(chosen.name)} ({why})")
    elif report and not report["errors"]:
        st.markdown(
            f":material/check_circle: **Data:** {words.md_text(Path(report['root']).name)} "
            f"({len(report['classes'])} classes, {report['num_images']} pictures)"
        )
    elif report and state.waiting_for_next_class(report["root"], len(report["classes"])):
        st.markdown(
            f":material/add_photo_alternate: **Data:** {words.md_text(Path(report['root']).name)} (1 class so far)"
        )
    elif report:
        st.markdown(f":material/warning: **Data:** {words.md_text(Path(report['root']).name)} needs fixing")
    elif state.choice("data_dir"):  # chosen in an earlier session, not checked in this one yet
        st.markdown(f":material/folder: **Data:** {words.md_text(Path(state.choice('data_dir')).name)}")
    else:
        st.markdown(":material/radio_button_unchecked: **Data:** not chosen yet")
    random_start = " (random start, not pretrained)" if state.choice("init") == "random" else ""
    st.markdown(
        f":material/layers: **Model:** {words.backbone_title(state.choice('backbone'))}{random_start}, "
        f"{state.choice('epochs')} epochs  \n{words.strategy_lines(state.strategy_name())}"
    )
    try:
        active = resources.manager().active_jobs()
    except Exception:  # noqa: BLE001 - a bad runs folder is reported on the pages
        active = []
    if active and page.url_path == "train" and resources.current_job() is active[0]:
        # The page itself shows this training, live: a second live line beside it, refreshed on
        # its own clock, disagreed with it for a moment at each step's start and end.
        live.sidebar_line(active[0], shown_here=True)
    elif active:
        live.show_in_sidebar(active[0])  # the job's own network and folder, and what it does now


with st.sidebar:
    status_box = st.container()
settings()
try:
    with bookmarks.inside_app():
        page.run()
except Exception as exc:  # noqa: BLE001 - a user never sees a traceback
    logging.getLogger("transfer_studio").exception("page failed")
    st.error(f"Something went wrong on this page: {friendly(exc)}", icon=":material/error:")
finally:  # also after a page's st.stop()
    with status_box:
        try:
            where_you_are()
        except Exception as exc:  # noqa: BLE001 - the page above still stands, without a traceback
            logging.getLogger("transfer_studio").exception("sidebar failed")
            st.caption(f"Your choices could not be shown: {friendly(exc)}")
    choices.save_changes()
