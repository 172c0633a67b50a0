"""The Data page's ways in without a folder of your own: example pictures
(downloaded, or unpacked from a zip you have) and the standard datasets the
tutorials train on, each made into a new folder inside the data folder,
which then becomes the chosen folder.

TRANSFER_STUDIO_MIRROR (an address that holds the archives under their own
file names, e.g. a school's copy) replaces the internet addresses.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import streamlit as st

from core import examples, standard_datasets
from core.downloads import OfflineError
from core.errors import friendly
from ui import state, words

MIRROR_ENV = "TRANSFER_STUDIO_MIRROR"


def _mirror() -> str | None:
    return (os.environ.get(MIRROR_ENV) or "").strip().rstrip("/") or None


def _done(folder: Path, what: str, use_folder: Callable[[str], None], per_class: int | None = None) -> None:
    """Choose the new folder and say what was made (shown after the rerun)."""
    pictures = sum(1 for p in folder.rglob("*") if p.is_file())
    note = f"{what}: {pictures} pictures in {words.md_text(folder)}. It is now the chosen folder."
    classes = [p for p in (folder / "train").iterdir() if p.is_dir()] if (folder / "train").is_dir() else []
    if per_class and pictures < per_class * len(classes):
        note += f" The dataset has fewer than {per_class} pictures of some classes, so all of theirs were taken."
    st.session_state["_upload_note"] = note
    use_folder(str(folder))
    st.rerun()


def _failed(exc: Exception, what: str) -> None:
    if isinstance(exc, OfflineError):
        st.session_state["_starters_offline"] = True  # opens "Unpack from a zip you have"
        st.error(words.md_text(friendly(exc)), icon=":material/wifi_off:")
    else:
        st.error(f"{what}: {words.md_text(friendly(exc))}", icon=":material/error:")


def example_pictures(use_folder: Callable[[str], None]) -> None:
    """Pick an example set; see what it holds and its licence; fetch it."""
    st.markdown("##### :material/photo_library: Example pictures")
    names = list(examples.EXAMPLES)
    name = st.radio(
        "Example set",
        names,
        format_func=lambda n: examples.EXAMPLES[n].title,
        horizontal=True,
        key="example_pick",
        help="Small sets of photos that others share openly, ready to train on.",
    )
    ex = examples.EXAMPLES[name]
    if not ex.needs_internet:
        _bundled_pictures(ex, use_folder)
        return
    st.markdown(f"{ex.words}  \n{ex.inside} About {ex.about_mb} MB to download.")
    st.caption(f"Licence: {ex.licence} [Details]({ex.licence_url})")
    if st.button("Download and use these pictures", icon=":material/download:", key="example_fetch"):
        bar = st.progress(0.0, text="Connecting…")

        def progress(done: int, total: int | None) -> None:
            size = total or ex.about_mb * 2**20
            bar.progress(
                min(done / size, 1.0), text=f"Downloading: {done / 2**20:,.1f} of about {size / 2**20:,.0f} MB"
            )

        try:
            mirror = _mirror()
            url = f"{mirror}/{ex.archive}" if mirror else None
            folder = examples.fetch(name, state.data_root(), progress, url=url)
        except Exception as exc:  # noqa: BLE001 - shown in words, never a traceback
            bar.empty()
            _failed(exc, "Could not fetch the example pictures")
        else:
            _done(folder, f"Fetched {ex.title}", use_folder)
    if not state.places().shared:
        _from_local_zip(ex, use_folder)


def _bundled_pictures(ex: examples.ExampleSet, use_folder: Callable[[str], None]) -> None:
    """A set that ships with the app: copied into a new folder, no download."""
    st.markdown(f"{ex.words}  \n{ex.inside}")
    st.caption(f"Licence: {ex.licence} [Details]({ex.licence_url})")
    if st.button("Use these pictures", icon=":material/photo_library:", key="example_fetch"):
        try:
            folder = examples.fetch(ex.name, state.data_root())
        except Exception as exc:  # noqa: BLE001 - shown in words, never a traceback
            _failed(exc, "Could not copy the example pictures")
        else:
            _done(folder, f"Copied {ex.title}", use_folder)


def _from_local_zip(ex: examples.ExampleSet, use_folder: Callable[[str], None]) -> None:
    """Unpack a copy of the archive already on this computer (brought on a USB stick)."""
    with st.expander(
        "No internet? Unpack from a zip you have", expanded=bool(st.session_state.get("_starters_offline"))
    ):
        usual = Path(state.data_root()) / ex.archive
        if usual.is_file() and not st.session_state.get("example_zip_path"):
            st.session_state["example_zip_path"] = str(usual)  # found where the offline message says to put it
        path = st.text_input(
            "Path of the zip file on this computer",
            key="example_zip_path",
            placeholder=f"e.g. {usual}",
            help=f"The archive downloaded on another computer from {ex.url}",
        )
        if st.button("Unpack and use these pictures", icon=":material/unarchive:", disabled=not (path or "").strip()):
            try:
                with st.spinner("Unpacking and checking every picture…"):
                    folder = examples.unpack_archive(Path(_clean(path)).expanduser(), state.data_root(), ex.name)
            except Exception as exc:  # noqa: BLE001
                _failed(exc, "Could not unpack the zip file")
            else:
                _done(folder, f"Unpacked {ex.title}", use_folder)


def _clean(text: str) -> str:
    """A path as pasted: without quotes around it or file:// before it."""
    text = text.strip().strip("'\"")
    return text[len("file://") :] if text.startswith("file://") else text


def standard_dataset(use_folder: Callable[[str], None]) -> None:
    """A standard dataset, with a few pictures per class, as a class-per-folder tree."""
    st.markdown("##### :material/dataset: Standard datasets")
    sources = standard_datasets.standards()
    col_name, col_count = st.columns([2, 1])
    name = col_name.selectbox(
        "Dataset",
        list(sources),
        format_func=lambda n: sources[n].title,
        key="standard_pick",
        help="The datasets the PyTorch tutorials train on, made into one folder per class.",
    )
    per_class = col_count.number_input(
        "Pictures per class",
        min_value=2,
        max_value=standard_datasets.MAX_PER_CLASS,
        value=standard_datasets.DEFAULT_PER_CLASS,
        step=50,
        key="standard_per_class",
        help="A quick demo needs about 100. A fifth of them are kept aside to check the model with.",
    )
    std = sources[name]
    n_train, n_val = standard_datasets.split_counts(int(per_class))
    st.markdown(f"{std.words}  \nEach class gets {n_train} pictures to learn from and {n_val} to check with.")
    st.caption(f"Licence: {std.licence}")
    if st.button("Make this folder", icon=":material/create_new_folder:", key="standard_make"):
        bar = st.progress(0.0, text="Looking for the files…")
        try:
            folder = standard_datasets.import_dataset(
                name,
                state.data_root(),
                int(per_class),
                report=lambda what, fraction: bar.progress(min(max(fraction, 0.0), 1.0), text=what),
                mirror=_mirror(),
            )
        except Exception as exc:  # noqa: BLE001 - shown in words, never a traceback
            bar.empty()
            _failed(exc, f"Could not make the {std.title} folder")
        else:
            _done(folder, f"Made from {std.title}", use_folder, int(per_class))


def section(use_folder: Callable[[str], None]) -> None:
    """The whole tab: example pictures, then the standard datasets."""
    st.markdown(
        f"No pictures of your own yet? Start with these. They go into a new folder inside "
        f"{words.md_text(state.data_root())}, which then becomes your folder."
    )
    example_pictures(use_folder)
    st.divider()
    standard_dataset(use_folder)
