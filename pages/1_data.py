"""Data: choose (or upload) a folder of pictures and see what is in it."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import streamlit as st

from core.counts import how_many
from core.images import HEIC_EXTENSIONS, HEIC_HINT, IMAGE_EXTENSIONS
from core.paths import pasted_path
from core.scan import DataFolderError
from core.scan_advice import ONE_CLASS
from ui import (
    bookmarks,
    camera_classes,
    charts,
    checkup,
    page_width,
    resources,
    starters,
    state,
    uploads,
    widgets,
    words,
)

bookmarks.open_inside_app(state.PAGE_DATA)  # a bookmark opened first on a fresh server
st.title(":material/photo_library: Your pictures")
widgets.intro(
    "<b>Step 1 of 4.</b> Choose a folder of pictures with <b>one subfolder per class</b> "
    "(for example <code>ants/</code> and <code>bees/</code>). Transfer Studio checks every picture "
    "and shows what it found; then go on to <b>Model</b>."
)


def _use_folder(path: str, every_picture: bool = False) -> None:
    """Scan `path` on this run: pictures checked before and unchanged since are
    not decoded again, unless every_picture (the "Check this folder" button)."""
    path = pasted_path(path)  # quotes, file:// and ~ as pasted
    st.session_state["data_dir"] = path
    st.session_state["_pending_input"] = path  # shown in the path box on the next run
    st.session_state["_rescan"] = "all" if every_picture else "changed"


def _on_path_typed() -> None:
    _use_folder(st.session_state.get("data_dir_input") or "")


def _on_recent_picked() -> None:
    picked = st.session_state.get("recent_pick")
    if picked:
        _use_folder(picked)
    st.session_state["recent_pick"] = None


def folder_on_this_computer() -> None:
    """Type a folder's path, or pick a recent one (the app serves this machine only)."""
    if "_pending_input" in st.session_state:
        st.session_state["data_dir_input"] = st.session_state.pop("_pending_input")
    if "data_dir_input" not in st.session_state:
        st.session_state["data_dir_input"] = state.choice("data_dir")
    col_path, col_recent = st.columns([3, 2], vertical_alignment="bottom")
    with col_path:
        st.text_input(
            "Folder with your pictures",
            key="data_dir_input",
            on_change=_on_path_typed,
            placeholder="e.g. /home/me/Pictures/flowers",
            help="Type or paste the folder's path and press Enter. It should hold one subfolder per class, "
            "or train/ and val/ folders that each hold the class subfolders.",
        )
    with col_recent:
        recent = state.recent_folders()
        st.selectbox(
            "…or pick a recent folder",
            recent,
            index=None,
            key="recent_pick",
            on_change=_on_recent_picked,
            placeholder="Recent folders" if recent else "No recent folders yet",
            disabled=not recent,
            help="Folders you used before, newest first.",
        )
    st.button(
        "Check this folder",
        icon=":material/search:",
        on_click=lambda: _use_folder(st.session_state.get("data_dir_input") or "", every_picture=True),
        help="Look at every picture again (after you added or removed pictures).",
    )


def folder_in_the_data_folder() -> None:
    """On a shared server: only the folders inside the data folder, by name
    (a visitor must not read the server's other folders)."""
    folders = state.data_folders()
    st.caption(
        f"This app is shared on a network: it uses the folders inside {words.md_text(state.data_root())} "
        "(upload new pictures in the other tab)."
    )
    chosen = state.choice("data_dir")
    st.selectbox(
        "Folder with your pictures",
        folders,
        index=folders.index(chosen) if chosen in folders else None,
        key="shared_pick",
        format_func=lambda p: Path(p).name,
        on_change=lambda: _use_folder(st.session_state.get("shared_pick") or ""),
        placeholder="Choose a folder" if folders else "No folders yet: upload pictures first",
        disabled=not folders,
    )
    st.button(
        "Check this folder",
        icon=":material/search:",
        on_click=lambda: _use_folder(state.choice("data_dir"), every_picture=True),
        help="Look at every picture again (after you added or removed pictures).",
    )


def _report_saved(saved, what: str, asked: str) -> None:
    """Remember the folder for this session (the next class under the name
    `asked` joins it) and say what was written."""
    st.session_state["upload_nonce"] = st.session_state.get("upload_nonce", 0) + 1
    st.session_state["_upload_made"] = {"asked": asked, "path": str(saved.folder)}
    note = f"{what} {saved.pictures} picture{'s' if saved.pictures != 1 else ''} in {words.md_text(saved.folder)}."
    if saved.renamed:
        note += (
            f" A folder named {words.md_text(saved.asked)} was already there, so this is a new folder, "
            f"{words.md_text(saved.folder.name)}."
        )
    if saved.refused:
        shown = ", ".join(words.md_text(n) for n in saved.refused[:5]) + (" …" if len(saved.refused) > 5 else "")
        files = (
            "1 file that is not a picture"
            if len(saved.refused) == 1
            else f"{len(saved.refused)} files that are not pictures"
        )
        note += f" Left out {files}: {shown}."
        if any(Path(n).suffix.lower() in HEIC_EXTENSIONS for n in saved.refused):
            note += f" (.heic files: {HEIC_HINT}.)"
    st.session_state["_upload_note"] = note
    _use_folder(str(saved.folder))
    st.rerun()


def _made_before(asked: str) -> Path | None:
    """The folder to add the next class to: the one this session's last
    upload made under the name `asked`, or (on this machine only, e.g. after
    a reload) the newest such folder; else None (a new folder is made)."""
    made = st.session_state.get("_upload_made") or {}
    path = Path(made["path"]) if made.get("path") else None
    if path is not None and made.get("asked") == asked and path.is_dir():
        return path
    if state.places().shared:  # visitors of a shared app never add to each other's folders
        return None
    return uploads.earlier_folder(state.data_root(), asked)


def upload_zip(nonce: int, asked: str) -> None:
    zip_file = st.file_uploader(
        "Zip file",
        type=["zip"],
        key=f"zip_{nonce}",
        help="A .zip whose folders are the classes (e.g. cats/ and dogs/).",
    )
    if st.button(
        "Unpack and use this folder",
        icon=":material/unarchive:",
        disabled=zip_file is None,
        help="Unpacks the pictures in the zip into a new folder and checks them.",
    ):
        with widgets.guard("Could not unpack the zip file"):
            with st.spinner("Unpacking and checking every picture…"):
                saved = uploads.unpack_zip(zip_file, state.data_root(), asked)
            _report_saved(saved, "Unpacked", asked)


def upload_one_class(nonce: int, asked: str) -> None:
    into = _made_before(asked)
    class_name = st.text_input(
        "Class name (what is in these pictures?)",
        key="upload_class",
        placeholder="e.g. daisy",
        help="Each class gets its own subfolder. Add the pictures of each class in turn.",
    )
    images = st.file_uploader(
        "Pictures",
        type=sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS | HEIC_EXTENSIONS),  # HEIC: to say what to do
        accept_multiple_files=True,
        key=f"images_{nonce}",
        help="Choose many pictures at once; they all go into the class above.",
    )
    if into is not None:
        st.caption(
            f"These pictures are added to {words.md_text(into)}, the folder you started before "
            "(for a new folder, change its name above)."
        )
    if st.button(
        "Add these pictures",
        icon=":material/add_photo_alternate:",
        disabled=not images or not (class_name or "").strip(),
        help="Saves the pictures into the class's subfolder of the new folder.",
    ):
        with widgets.guard("Could not save the pictures"):
            saved = uploads.save_pictures(images, state.data_root(), asked, class_name, into=into)
            _report_saved(saved, f"Saved to '{uploads.safe_name(class_name, 'class')}':", asked)


def upload_pictures() -> None:
    """Pictures from the browser, saved into a new folder inside the data folder."""
    st.markdown(
        f"Your pictures are saved in a new folder inside {words.md_text(state.data_root())} "
        "(chosen when Transfer Studio was started). Only pictures are kept; nothing is ever overwritten."
    )
    state.init_choice_setting("upload_folder", "my-pictures")
    st.text_input(
        "Name of the new folder",
        key="upload_folder",
        persist_state="session",
        help="A short name for this set of pictures, e.g. 'flowers'. If it is taken, a number is added.",
    )
    kind = st.radio(
        "What do you have?",
        ["A zip file with one folder per class", "Pictures of one class"],
        horizontal=True,
        key="upload_kind",
        help="A zip file can hold every class at once; loose pictures are added one class at a time.",
    )
    nonce = st.session_state.setdefault("upload_nonce", 0)
    asked = uploads.safe_name(st.session_state.get("upload_folder"))
    if kind.startswith("A zip"):
        upload_zip(nonce, asked)
    else:
        upload_one_class(nonce, asked)
    made = _made_before(asked)
    if made is not None:
        classes = sorted(p.name for p in made.iterdir() if p.is_dir() and not p.name.startswith("."))
        if classes:
            counts = ", ".join(
                f"{words.md_text(c)} ({sum(1 for f in (made / c).iterdir() if f.is_file())})" for c in classes
            )
            st.caption(f"{words.md_text(made.name)} holds: {counts}")


# The page's width (ui.page_width), for what needs room: the tabs' full names, four counts side by side, the
# check's pictures. Wider than WIDE_PX, or not known yet: everything as in a wide window.
WIDE_PX = 790
page = page_width.main_width(WIDE_PX)
narrow = page is not None and page < WIDE_PX


def way_in_tabs(narrow: bool) -> list[str]:
    """The four ways in as tab names; in a narrow page (a 1024 px window with the sidebar open) the long ones
    ran out of the row, "A folder on this computer" scrolled out of sight behind an arrow, so shorter names.
    The open tab stays open when the names change (its key holds its name)."""
    folder = "A folder in the data folder" if state.places().shared else "A folder on this computer"
    full = [
        f":material/folder_open: {folder}",
        ":material/upload: Upload pictures",
        ":material/photo_camera: Make classes with the camera",
        ":material/school: Example pictures and standard datasets",
    ]
    short = [
        ":material/folder_open: A folder",
        ":material/upload: Upload pictures",
        ":material/photo_camera: Camera",
        ":material/school: Examples",
    ]
    names, other = (short, full) if narrow else (full, short)
    if st.session_state.get("data_way_in") in other:
        st.session_state["data_way_in"] = names[other.index(st.session_state["data_way_in"])]
    return names


tab_folder, tab_upload, tab_camera, tab_starters = st.tabs(
    way_in_tabs(narrow),
    key="data_way_in",
    on_change="rerun",  # the camera turns on only while its tab is open
)
with tab_folder:
    if state.places().shared:
        folder_in_the_data_folder()
    else:
        folder_on_this_computer()
with tab_upload:
    upload_pictures()
with tab_camera:
    if tab_camera.open:
        camera_classes.show(_use_folder)
with tab_starters:
    starters.section(_use_folder)

note = st.session_state.pop("_upload_note", None)
if note:
    st.success(note, icon=":material/download_done:")


# --- the report -------------------------------------------------------------------


def how_a_folder_looks() -> None:
    """Before a folder is chosen: what it should look like."""
    # Under every tab (each tab's own words say how it works), so it names them all.
    folder = "a folder in the data folder" if state.places().shared else "a folder on this computer"
    st.info(
        f"Choose where your pictures come from above: {folder}, pictures you upload, classes you make with the "
        "camera, or example pictures. A folder should look like this (any names, at least two classes):",
        icon=":material/arrow_upward:",
    )
    st.code(
        "flowers/\n    daisy/      ← pictures of daisies\n    tulip/      ← pictures of tulips\n"
        "    sunflower/  ← pictures of sunflowers",
        language=None,
    )
    st.caption(
        "If it already has train/ and val/ folders (each with the class folders inside), or each class folder "
        "has its own train/ and val/, that split is used; otherwise a share of each class is set aside to check "
        "the model with."
    )


def split_line(report) -> None:
    """How the pictures were split: the folder's own train/ and val/ (and test/), or at random."""
    if report.split_source == "folders":
        test_folder = report.split_folders.get("test")
        st.markdown(
            f"**Split:** from your folders{' inside each class folder' if report.split_in_each_class else ''}: "
            f"{words.md_text(report.split_folders.get('train'))}/ to learn from, "
            f"{words.md_text(report.split_folders.get('val'))}/ to check with"
            + (
                f", and {words.md_text(test_folder)}/ kept apart: scored once, at the end of each training, "
                "on pictures that played no part in it (see Results)."
                if test_folder
                else "."
            )
        )
    else:
        st.markdown(
            f"**Split:** {report.val_fraction:.0%} of each class's pictures were set aside at random "
            "to check the model with (change this under Advanced on the Model page)."
        )


def report_summary(report) -> None:
    """Ready or not, the counts and how the pictures were split."""
    st.divider()
    st.subheader(f":material/folder: {words.md_text(Path(report.root).name)}")
    st.caption(words.md_text(report.root))
    n_train, n_val, n_test = len(report.train), len(report.val), len(report.test)
    final_test = f", {n_test} kept apart for one final test" if n_test else ""
    if report.can_train:
        state.remember_folder(report.root)
        st.success(
            f"**Ready to train:** {len(report.classes)} classes, {report.num_images} pictures "
            f"({n_train} to learn from, {n_val} to check the model with{final_test}).",
            icon=":material/check_circle:",
        )
    else:
        errors = report.errors
        if state.waiting_for_next_class(report.root, len(report.classes)):  # not a mistake: a class to come
            st.info(
                f"**{words.md_text(Path(report.root).name)} has one class so far, "
                f"{words.md_text(report.classes[0])}.** Add the next class above: type its name, choose its "
                "pictures and press **Add these pictures**. Training needs at least two classes.",
                icon=":material/add_photo_alternate:",
            )
            errors = [e for e in errors if not e.startswith(ONE_CLASS)]
        for error in errors:  # they name the user's folders
            st.error(words.md_text(error), icon=":material/error:")
        if errors:
            st.markdown("Fix the folder, then press **Check this folder** again.")

    # Four in a row in a narrow page cut their names to "Pictures to lear…": two rows of two there.
    m1, m2, m3, m4 = st.columns(4) if not narrow else [*st.columns(2), *st.columns(2)]
    m1.metric("Classes", len(report.classes), help="Each subfolder with pictures is one class.")
    m2.metric("Pictures to learn from", n_train, help="The training pictures: the model learns from these.")
    m3.metric(
        "Pictures to check with",
        n_val,
        help="The validation pictures: the model never learns from these; they measure how well it does.",
    )
    m4.metric("Files left out", len(report.skipped), help="Files that are not usable pictures; see the list below.")

    if report.can_train:  # no split to speak of until the folder is fixed
        split_line(report)
    if len(report.warnings) == 1:
        st.warning(words.md_text(report.warnings[0]), icon=":material/warning:")
    elif report.warnings:  # one box, not a stack of yellow ones
        listed = "\n".join(f"- {words.md_text(w)}" for w in report.warnings)
        st.warning(f"**Good to know before training:**\n{listed}", icon=":material/warning:")


def sizes_and_counts(report) -> None:
    """Pictures per class (a chart) and how big the pictures are (a third of a narrow page: in a quarter,
    "smallest: 112×114" wrapped)."""
    col_chart, col_sizes = st.columns([2, 1] if narrow else [3, 1])
    with col_chart:
        st.plotly_chart(charts.class_counts_figure(report), key="class_counts")
    with col_sizes:
        sizes = report.image_sizes or {}
        if sizes.get("count"):
            st.markdown("**Picture sizes** (pixels)")
            st.markdown(
                f"- smallest: {sizes['min'][0]}×{sizes['min'][1]}\n"
                f"- typical: {sizes['median'][0]}×{sizes['median'][1]}\n"
                f"- largest: {sizes['max'][0]}×{sizes['max'][1]}"
            )
            st.caption("Every picture is resized for the model, so different sizes are fine.")


THUMBS_PER_CLASS = 6


def class_thumbnails(report) -> None:
    """A few pictures of each class, spread over the class."""
    st.markdown("#### A few pictures from each class")
    by_class: dict[int, list[str]] = {}
    for p, label in report.train + report.val:
        by_class.setdefault(label, []).append(p)
    for label, name in enumerate(report.classes):
        paths = by_class.get(label, [])
        step = max(1, len(paths) // THUMBS_PER_CLASS)
        picks = paths[::step][:THUMBS_PER_CLASS]
        thumbs = []
        for p in picks:
            try:
                thumbs.append(resources.thumbnail(p, os.path.getmtime(p)))
            except OSError:
                continue
        thumbs = [t for t in thumbs if t is not None]
        # One column per picture, not one image list: a list wraps wherever the window cuts it
        # (five, then one alone). Capped at 1000 px so the 160-px thumbnails are not blown up.
        c_name, *c_imgs = st.columns(
            [1.2] + [1] * THUMBS_PER_CLASS, gap="xsmall", vertical_alignment="center", width=1000
        )
        c_name.markdown(f"**{words.md_text(name)}**  \n{how_many(len(paths), 'picture')}")
        for column, thumb in zip(c_imgs, thumbs):
            column.image(thumb, width="stretch", alt=f"A picture of {name}")


def left_out(report) -> None:
    """The files the scan did not use, and why; the system files it ignored, in a quiet line."""
    if report.skipped or report.empty_classes:
        with st.expander(f"Left out: {how_many(len(report.skipped), 'file')}, and why"):
            if report.empty_classes:
                st.markdown(
                    "Folders with no usable picture (not used as classes): "
                    + ", ".join(words.md_text(c) for c in report.empty_classes)
                )
            if report.skipped:
                rows = []
                for s in report.skipped:
                    try:
                        shown = os.path.relpath(s.path, report.root)
                    except ValueError:
                        shown = s.path
                    rows.append({"file": shown, "why it was left out": s.reason})
                st.dataframe(pd.DataFrame(rows), hide_index=True)
    if report.ignored:
        st.caption(":material/visibility_off: " + words.md_text(report.ignored_note()))


def show_report() -> None:
    """The scan of the chosen folder, in plain words."""
    if not state.choice("data_dir"):
        how_a_folder_looks()
        return
    rescan = st.session_state.pop("_rescan", None)
    try:
        with st.spinner("Looking at every picture…"):
            report = state.current_scan(rescan=rescan)
    except DataFolderError as exc:
        st.error(
            f"{words.md_text(exc)} Check the spelling, or copy the folder's path from your file manager's address bar.",
            icon=":material/folder_off:",
        )
        return
    report_summary(report)
    if report.classes:
        sizes_and_counts(report)
        class_thumbnails(report)
    left_out(report)
    if report.can_train:  # a folder that cannot train is fixed first (the error above says how)
        checkup.check_section(report)
    if report.can_train:
        widgets.next_step(state.PAGE_MODEL, "Next: choose the model and what it learns")


show_report()
