"""Fixing a picture folder from any gallery: "Move to class…" and "Set aside"
under a picture, the list of changes with an Undo for each, and the notice
on a run trained before its pictures changed.

The same widgets serve the Data page's check, the Results page's confusion
squares and hardest pictures, and the Playground's folder results; the
changes themselves are core.curation's (nothing is deleted, each can be
undone)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import streamlit as st

from core.curation import (
    CurationError,
    changes,
    move_to_class,
    set_aside,
    undo,
)
from ui import page_width, resources, words

_NOTE = "_fix_note"  # what the last change did, shown once by fix_notes()
MAX_CHANGES_SHOWN = 20


def _key(prefix: str, path: str) -> str:
    return f"{prefix}_{hashlib.sha1(path.encode()).hexdigest()[:10]}"


def _changed(text: str, ok: bool = True) -> None:
    """After a change: say so, and let the Data page scan the folder again."""
    st.session_state[_NOTE] = (text, ok)
    st.session_state["_rescan"] = "changed"


def _move(root: str, path: str, chooser: str) -> None:
    _apply(lambda: move_to_class(root, path, st.session_state.get(chooser) or ""), "{}. You can undo it under Changes.")


def _set_aside(root: str, path: str) -> None:
    _apply(lambda: set_aside(root, path), "{}. You can undo it under Changes.")


def _undo(root: str, change_id: str) -> None:
    _apply(lambda: undo(root, change_id), "Undone: {}.", lower_first=True)


def _apply(action, message: str, lower_first: bool = False) -> None:
    """Make one change and say what happened (or why it could not be made)."""
    try:
        change = action()
    except CurationError as exc:
        _changed(str(exc), ok=False)
        return
    said = change.describe()
    _changed(message.format(said[0].lower() + said[1:] if lower_first else said))


def fix_notes() -> None:
    """The outcome of the last Move, Set aside or Undo, once."""
    note = st.session_state.pop(_NOTE, None)
    if note:
        text, ok = note
        if ok:
            st.success(text, icon=":material/done:")
        else:
            st.error(text, icon=":material/error:")


def fix_actions(root: str | Path, path: str, classes: list[str], key: str, suggested: str | None = None) -> None:
    """Under one picture of the folder `root`: move it to another class
    (`suggested` first), or set it aside."""
    root, path = str(root), str(path)
    absolute = path if os.path.isabs(path) else os.path.join(root, path)
    here = Path(absolute).parent.name
    others = [c for c in classes if c != here]
    if suggested in others:
        others.remove(suggested)
        others.insert(0, suggested)
    key = _key(key, absolute)
    with st.popover("Fix", icon=":material/build:", help="Move this picture to another class, or set it aside."):
        if others:
            chooser = f"{key}_to"
            st.selectbox("Move to class…", others, key=chooser)
            st.button(
                "Move",
                key=f"{key}_move",
                icon=":material/drive_file_move:",
                on_click=_move,
                args=(root, absolute, chooser),
                help="Moves the file into that class's folder.",
            )
        st.button(
            "Set aside",
            key=f"{key}_aside",
            icon=":material/visibility_off:",
            on_click=_set_aside,
            args=(root, absolute),
            help="Takes the picture out of the data (into a hidden .set-aside folder inside it); nothing is deleted.",
        )


def picture_card(
    root: str | Path, path: str, caption: str, classes: list[str], key: str, suggested: str | None = None
) -> None:
    """A thumbnail, a caption and its fix actions; a line when it is gone."""
    absolute = path if os.path.isabs(path) else os.path.join(str(root), path)
    picture = resources.thumbnail(absolute, os.path.getmtime(absolute)) if os.path.isfile(absolute) else None
    if picture is None:
        st.caption(f":material/hide_image: {words.md_text(Path(path).name)} is no longer there (moved or set aside).")
        return
    st.image(picture, width="stretch", alt=f"Picture {Path(path).name}")
    shown = os.path.relpath(absolute, str(root)) if os.path.isabs(path) else path  # where to find it in the folder
    st.caption(f"{caption}  \n:gray[{words.md_text(shown)}]")
    fix_actions(root, absolute, classes, key, suggested)


def card_grid(
    root: str | Path, cards: list[tuple[str, str, str | None]], classes: list[str], key: str, columns: int = 5
) -> None:
    """(path, caption, suggested class) cards in rows of `columns`, fewer
    where the page was measured narrower (ui.page_width: in a 1024 px
    window five cards left 100 px each, a path under a picture on five lines)."""
    columns = page_width.per_row(page_width.last_measured(), columns)
    for start in range(0, len(cards), columns):
        for col, (path, caption, suggested) in zip(st.columns(columns), cards[start : start + columns]):
            with col:
                picture_card(root, path, caption, classes, key, suggested)


def changes_list(root: str | Path, key: str = "changes", expanded: bool | None = None) -> None:
    """Every change made to the folder, newest first, each with Undo; open
    when there are some, unless `expanded` says otherwise."""
    made = changes(root)
    with st.expander(
        f"Changes ({len(made)})", icon=":material/history:", expanded=bool(made) if expanded is None else expanded
    ):
        if not made:
            st.caption("No picture of this folder was moved or set aside here yet.")
            return
        for change in made[:MAX_CHANGES_SHOWN]:
            text, button = st.columns([5, 1], vertical_alignment="center")
            when = words.fmt_when(change.time)
            text.markdown(
                f"{'~~' if change.undone else ''}{words.md_text(change.describe())}{'~~' if change.undone else ''} "
                f"· {when}{' · undone' if change.undone else ''}"
            )
            button.button(
                "Undo",
                key=f"{key}_undo_{change.id}",
                icon=":material/undo:",
                disabled=change.undone,
                on_click=_undo,
                args=(str(root), change.id),
                help="Put the picture back where it was.",
            )
        if len(made) > MAX_CHANGES_SHOWN:
            st.caption(f"… and {len(made) - MAX_CHANGES_SHOWN} older changes.")


def disagreements(
    folder: str | Path, rows: list[dict], classes: list[str], key: str = "folder", shown: int = 15
) -> None:
    """For a folder whose pictures sit in class-named subfolders: the ones the
    model names differently from their folder, each with fix actions (the
    model's answer offered first). predict_batch's rows, files relative to folder."""
    known = set(classes)
    labelled = [r for r in rows if not r["error"] and Path(r["file"]).parent.name in known]
    if not labelled:
        return
    differ = sorted(
        (r for r in labelled if r["top_class"] != Path(r["file"]).parent.name), key=lambda r: -(r["confidence"] or 0)
    )
    st.markdown(f"#### Named differently from their folder ({len(differ)} of {len(labelled)})")
    if not differ:
        st.caption("The model agrees with the folder of every picture in a class-named subfolder.")
        return
    st.caption(
        "Pictures in a folder named like a class that the model names otherwise, surest first: the model "
        "may be wrong, or the picture may be in the wrong folder. Fix the folder here; each change can be "
        "undone."
    )
    fix_notes()
    cards = [
        (
            r["file"],
            (
                f"in {words.md_text(Path(r['file']).parent.name)}, model says **{words.md_text(r['top_class'])}** ({r['confidence']:.0%} sure)"
            ),
            r["top_class"],
        )
        for r in differ[:shown]
    ]
    card_grid(folder, cards, classes, key)
    if len(differ) > shown:
        st.caption(f"… and {len(differ) - shown} more (see the table).")
    changes_list(folder, key=f"{key}_changes")


# --- runs trained on older pictures -----------------------------------------------


def trained_on_older_pictures(run) -> bool:
    """Whether pictures of the run's data folder were moved or set aside here
    after the run began (and not put back since)."""
    data_dir = run.summary()["data"]  # text, or None where a damaged config.json holds something else
    if not data_dir or not os.path.isdir(data_dir):
        return False
    began = next((t for t in (run.status.get("started"), run.status.get("created")) if isinstance(t, (int, float))), 0)
    began = began or resources.file_mtime(run.path / "config.json")
    return any(change.time > began and not change.undone for change in changes(data_dir))


def _train_again(run) -> None:
    from core.config import TrainConfig
    from core.errors import friendly

    try:  # e.g. the folder was moved meanwhile, or a training already runs
        job = resources.manager().submit(TrainConfig.from_dict(run.config))
    except Exception as exc:  # noqa: BLE001 - said on the page, the app goes on
        st.session_state[_NOTE] = (f"Could not train again: {friendly(exc)}", False)
        return
    text = f"Training again on the same settings: {Path(job.run_dir or '').name}. Watch it on the Train page."
    st.session_state[_NOTE] = (text, True)


def older_pictures_notice(run, key: str) -> None:
    """A warning and a one-click retrain, for a run whose pictures changed."""
    if not trained_on_older_pictures(run):
        return
    left, right = st.columns([4, 2], vertical_alignment="center")
    left.warning(
        "**Trained on older pictures:** pictures of its folder were moved or set aside after this run "
        "was trained, so its numbers describe the folder as it was.",
        icon=":material/history:",
    )
    right.button(
        "Train again on the same settings",
        key=f"{key}_retrain_{run.name}",
        icon=":material/replay:",
        on_click=_train_again,
        args=(run,),
        help="Starts a new run with this run's settings on the folder as it is now.",
    )
    # The changes themselves, each with Undo: a Fix made on this page says they are "under Changes".
    changes_list(run.config["data_dir"], key=f"{key}_changes", expanded=False)
