"""Make classes with the camera: the Data page's way in without a folder.

Name a class, hold the button while showing it to the camera (a burst of
pictures in a few seconds), add another class, and go on: the pictures land
in an ordinary folder (one subfolder per class) inside the data folder
(core.class_folders), which then becomes the chosen folder. Uploads can add
pictures to a class, and where the browser gives no camera the page says why
in plain words and offers uploads instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import streamlit as st

from core.class_folders import MadeFolder, class_name, made_folders
from core.errors import UserError
from core.images import IMAGE_EXTENSIONS
from ui import resources, state, uploads, widgets, words
from ui.camera_component import camera_burst

_FOLDER = "camera_folder"  # the made folder this session works on
_TARGET = "camera_target"  # the class the camera records into
_SAVED = "_camera_saved"  # ids of the bursts already saved (a trigger may come twice)
_NOTE = "_camera_note"
_NEXT_TARGET = "_camera_target_next"  # a class to record into from the next run on

# What to say when the browser gives no camera (its error name -> words).
_CAMERA_PROBLEMS = {
    "insecure": "This browser lets a page use the camera only when Transfer Studio is opened on the computer "
    "that runs it (an address starting with http://localhost) or over https.",
    "NotAllowedError": "The browser was not allowed to use the camera. Allow the camera for this page "
    "(the camera sign in the address bar), then press **Try the camera again**.",
    "SecurityError": "The browser does not allow the camera on this page. Open Transfer Studio at "
    "http://localhost on the computer that runs it, or over https.",
    "NotFoundError": "No camera was found. Plug one in and press **Try the camera again**.",
    "OverconstrainedError": "No camera was found that can take pictures here.",
    "NotReadableError": "The camera is busy in another program (a video call?). Close that program and press "
    "**Try the camera again**.",
    "AbortError": "The camera is busy in another program (a video call?). Close that program and press "
    "**Try the camera again**.",
    "ended": "The camera stopped (was it unplugged?). Press **Try the camera again**.",
}
_UPLOAD_INSTEAD = " You can add pictures from this computer instead: **Change** beside a class."


def camera_problem(camera: dict | None) -> str | None:
    """Plain words for the camera's state, or None while it works (or starts)."""
    if not isinstance(camera, dict) or camera.get("status") != "error":
        return None
    name = str(camera.get("error") or "")
    why = _CAMERA_PROBLEMS.get(name, f"The camera could not be started ({name or 'no reason given'}).")
    return why + _UPLOAD_INSTEAD


def _current() -> MadeFolder | None:
    path = st.session_state.get(_FOLDER)
    if not path:
        return None
    try:
        return MadeFolder(state.data_root(), Path(path))
    except UserError:
        st.session_state.pop(_FOLDER, None)
        return None


def _note(text: str) -> None:
    st.session_state[_NOTE] = text


def _add_class(made: MadeFolder | None, folder_name: str, class_text: str) -> None:
    with widgets.guard("Could not add the class"):
        class_name(class_text)  # a name that cannot be a class makes no folder either
        if made is None:
            made = MadeFolder.create(state.data_root(), folder_name)
            st.session_state[_FOLDER] = str(made.path)
        st.session_state[_NEXT_TARGET] = made.add_class(class_text)
        st.session_state["camera_class_nonce"] = st.session_state.get("camera_class_nonce", 0) + 1
        st.rerun()


def choose_folder() -> None:
    """Before a folder: name it (and the first class), or go on with one made before."""
    col_folder, col_class = st.columns(2)
    folder_name = col_folder.text_input(
        "Name of the new folder",
        value="my-classes",
        key="camera_folder_name",
        help="The pictures are saved in a new folder with this name inside the data folder.",
    )
    class_text = col_class.text_input("Name of the first class", key="camera_first_class", placeholder="e.g. thumbs up")
    st.caption(
        "The camera turns on when you start. Browsers allow it only on the computer that runs Transfer Studio "
        "(localhost) or over https; without a camera, pictures can be added from this computer instead."
    )
    if st.button("Start with this class", icon=":material/add:", type="primary"):
        _add_class(None, folder_name, class_text)
    earlier = made_folders(state.data_root())
    if earlier:
        picked = st.selectbox(
            "…or go on with a folder you made here before",
            earlier,
            index=None,
            format_func=lambda m: f"{m.name} ({', '.join(m.classes()) or 'no classes yet'})",
            placeholder="Folders made with the camera",
        )
        if picked is not None:
            st.session_state[_FOLDER] = str(picked.path)
            st.rerun()


def _save_burst(made: MadeFolder, burst: dict) -> None:
    """Save a burst from the camera into its class (once), and say so."""
    seen = st.session_state.setdefault(_SAVED, [])
    if not burst["id"] or burst["id"] in seen:
        return
    seen.append(burst["id"])
    del seen[:-20]
    target = burst["target"] if burst["target"] in made.classes() else st.session_state.get(_TARGET)
    with widgets.guard("Could not save the pictures"):
        result = made.save_captured(target, burst["frames"])
        note = f"Saved {result.saved} picture{'s' if result.saved != 1 else ''} into {words.md_text(target)}."
        if result.refused:
            note += f" {result.refused} could not be read as pictures and were left out."
        _note(note)
        st.rerun()


def camera(made: MadeFolder, counts: dict[str, int]) -> None:
    """The live camera and the class it records into."""
    classes = list(counts)
    if st.session_state.get(_NEXT_TARGET) in classes:
        st.session_state[_TARGET] = st.session_state.pop(_NEXT_TARGET)
    # Given again on every run: the browser keeps a radio's choice only while its options stay the same.
    st.session_state[_TARGET] = (
        st.session_state.get(_TARGET) if st.session_state.get(_TARGET) in classes else classes[0]
    )
    st.radio(
        "Pictures go into",
        classes,
        key=_TARGET,
        horizontal=True,
        format_func=words.md_text,
        help="Choose the class, then show it to the camera and hold the red button.",
    )
    target = st.session_state[_TARGET]
    seen = st.session_state.get(_SAVED) or []
    burst, camera_state = camera_burst(
        key="camera_burst", target=target, count=counts.get(target, 0), saved=seen[-1] if seen else None
    )
    problem = camera_problem(camera_state)
    if problem:
        st.warning(problem, icon=":material/no_photography:")
    st.caption(
        "Hold **Hold to record** while you move the thing around (5 pictures a second), or press **Take 20 "
        "pictures**. Aim for 20 to 50 pictures per class, from different sides, distances and backgrounds. "
        "Browsers allow the camera only on the computer that runs Transfer Studio (localhost) or over https."
    )
    if burst is not None:
        _save_burst(made, burst)


def _thumbs(paths: list[Path], n: int = 6) -> list:
    out = []
    for p in paths[:n]:
        try:
            thumb = resources.thumbnail(str(p), os.path.getmtime(p), 96)
        except OSError:
            continue
        if thumb is not None:
            out.append(thumb)
    return out


def _upload_into(made: MadeFolder, name: str) -> None:
    files = st.file_uploader(
        f"Add pictures to {words.md_text(name)}",
        type=sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS),
        accept_multiple_files=True,
        key=f"camera_upload_{name}_{st.session_state.get('camera_upload_nonce', 0)}",
        help="Pictures from this computer; only files that really are pictures are kept.",
    )
    if st.button("Add these pictures", key=f"camera_upload_go_{name}", disabled=not files):
        with widgets.guard("Could not save the pictures"):
            saved = uploads.save_pictures(files, state.data_root(), made.name, name, into=made.path)
            note = f"Added {saved.pictures} picture{'s' if saved.pictures != 1 else ''} to {words.md_text(name)}."
            if saved.refused:
                note += f" Left out {len(saved.refused)} file(s) that are not pictures."
            _note(note)
            st.session_state["camera_upload_nonce"] = st.session_state.get("camera_upload_nonce", 0) + 1
            st.rerun()


def _change_class(made: MadeFolder, name: str) -> None:
    """Upload into, rename, remove a class, or delete some of its pictures."""
    _upload_into(made, name)
    new = st.text_input("New name", value=name, key=f"camera_rename_{name}")
    if st.button("Rename", key=f"camera_rename_go_{name}", disabled=new.strip() in ("", name)):
        with widgets.guard("Could not rename the class"):
            renamed = made.rename_class(name, new)
            if st.session_state.get(_TARGET) == name:
                st.session_state[_NEXT_TARGET] = renamed
            st.rerun()
    pictures = made.pictures(name)
    if pictures:
        st.markdown("Delete a picture (newest first):")
        cols = st.columns(6)
        for i, path in enumerate(pictures[:12]):
            with cols[i % 6]:
                thumb = _thumbs([path], 1)
                if thumb:
                    st.image(thumb[0], width=72)
                if st.button("Delete", key=f"camera_del_{name}_{path.name}", icon=":material/delete:"):
                    with widgets.guard("Could not delete the picture"):
                        made.delete_picture(path)
                        st.rerun()
    sure = st.checkbox(
        f"Yes, remove {words.md_text(name)} and its {len(pictures)} pictures", key=f"camera_rm_sure_{name}"
    )
    if st.button("Remove this class", key=f"camera_rm_{name}", icon=":material/delete_forever:", disabled=not sure):
        with widgets.guard("Could not remove the class"):
            made.remove_class(name)
            _note(f"Removed the class {words.md_text(name)}.")
            st.rerun()


def class_rows(made: MadeFolder, counts: dict[str, int]) -> None:
    """Each class: its name, how many pictures, the newest few, and its changes."""
    for name, count in counts.items():
        c_name, c_pics, c_change = st.columns([2, 6, 2], vertical_alignment="center")
        c_name.markdown(f"**{words.md_text(name)}**  \n{count} picture{'s' if count != 1 else ''}")
        thumbs = _thumbs(made.pictures(name)) if count else []
        if thumbs:
            c_pics.image(thumbs, width=72)
        else:
            c_pics.caption("No pictures yet: choose this class above and record.")
        with c_change.popover("Change", icon=":material/edit:"):
            _change_class(made, name)


def add_another_class(made: MadeFolder) -> None:
    col_text, col_button = st.columns([3, 1], vertical_alignment="bottom")
    text = col_text.text_input(
        "Name of another class",
        key=f"camera_new_class_{st.session_state.get('camera_class_nonce', 0)}",
        placeholder="e.g. thumbs down",
    )
    if col_button.button("Add class", icon=":material/add:"):
        _add_class(made, made.name, text)


def go_on(made: MadeFolder, counts: dict[str, int], use_folder: Callable[[str], None]) -> None:
    filled = [c for c, n in counts.items() if n]
    ready = len(filled) >= 2
    if st.button(
        "Use these pictures",
        icon=":material/check:",
        type="primary",
        disabled=not ready,
        help="Check every picture of this folder and choose it for training.",
    ):
        use_folder(str(made.path))
    if not ready:
        st.caption("At least two classes with pictures are needed to train.")
    if st.button("Start another folder", icon=":material/create_new_folder:", type="tertiary"):
        st.session_state.pop(_FOLDER, None)
        st.rerun()


def show(use_folder: Callable[[str], None]) -> None:
    """The camera tab of the Data page. `use_folder(path)` chooses a folder."""
    st.markdown(
        f"No folder yet? Make the classes here: name a class, show it to the camera, add another class. "
        f"The pictures are saved in a new folder inside {words.md_text(state.data_root())}, one subfolder "
        "per class."
    )
    made = _current()
    if made is None:
        choose_folder()
        return
    counts = made.counts()
    st.markdown(f"**Folder:** {words.md_text(made.path)}")
    note = st.session_state.pop(_NOTE, None)
    if note:
        st.success(note, icon=":material/photo_camera:")
    if counts:
        camera(made, counts)
        class_rows(made, counts)
    add_another_class(made)
    go_on(made, counts, use_folder)
