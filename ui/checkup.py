"""The Data page's "Check my pictures": core.inspection in a background
thread, its findings as galleries with fix actions, and the list of changes.

The thread only writes to its FolderCheck; the page reads it (a fragment
polls while it runs), so no st.* call ever happens off the script thread.
The checks live in this server process, one per folder (the latest), not in
a browser session: a reload or a second tab finds a check still running, or
its findings, instead of starting over."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import streamlit as st

from core.counts import how_many
from core.errors import friendly
from ui import fixes, words

SHOWN = 15  # pictures per finding kind; the rest are counted
_KEPT = 8  # folders whose latest check is kept; the oldest goes first
_checks: dict[str, FolderCheck] = {}  # folder -> its latest check, for every session of this server
_checks_lock = threading.Lock()


@dataclass
class FolderCheck:
    """One run of inspect_folder, as the page sees it."""

    root: str
    phase: str = "Starting"
    done: int = 0
    total: int = 0
    report: object = None  # the InspectReport, when finished
    error: str | None = None
    started: float = field(default_factory=time.time)
    thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive() and self.report is None and self.error is None

    def work(self) -> None:
        from core.inspection import inspect_folder

        def on_progress(phase: str, done: int, total: int) -> None:
            self.phase, self.done, self.total = phase, done, total

        try:
            self.report = inspect_folder(self.root, progress=on_progress)
        except Exception as exc:  # noqa: BLE001 - shown on the page in words
            self.error = friendly(exc)


def _start(root: str) -> None:
    with _checks_lock:
        check = _checks.get(root)
        if check is None or not check.running:  # a second tab's click joins the check already running
            check = FolderCheck(root)
            check.thread = threading.Thread(target=check.work, name="folder-check", daemon=True)
            _checks.pop(root, None)
            _checks[root] = check  # the newest last
            while len(_checks) > _KEPT:
                _checks.pop(next(iter(_checks)))
            check.thread.start()


def _current(root: str) -> FolderCheck | None:
    """This folder's latest check, from this session or another (a reload, a second tab)."""
    with _checks_lock:
        return _checks.get(root)


@st.fragment(run_every=1.0)
def _progress(root: str) -> None:
    """Polls the folder's running check; the whole page redraws when it ends."""
    check = _current(root)
    if check is None or not check.running:
        st.rerun(scope="app")
    share = check.done / check.total if check.total else 0.0
    st.progress(
        min(1.0, share), text=f"{check.phase}… ({check.done} of {check.total})" if check.total else f"{check.phase}…"
    )


def check_section(report) -> None:
    """The whole section, for the folder the Data page scanned."""
    root = report.root
    st.divider()
    st.subheader(":material/fact_check: Check my pictures")
    st.caption(
        "Finds copies of the same picture, pictures that are both in training and in checking (which makes "
        "the accuracy look better than it is), pictures that look like another class, and pictures that "
        "are too dark, too bright, blurry or tiny. It runs the network over every picture once; the next "
        "check of the same pictures takes seconds."
    )
    fixes.fix_notes()
    check = _current(root)
    running = check is not None and check.running
    st.button(
        "Check my pictures" if check is None or running else "Check again",
        icon=":material/fact_check:",
        key="check_pictures",
        disabled=running,
        on_click=_start,
        args=(root,),
    )
    if running:
        _progress(root)
    elif check is not None and check.error:
        st.error(f"The check did not work: {check.error}", icon=":material/error:")
    elif check is not None and check.report is not None:
        findings(check.report, report.classes)
    fixes.changes_list(root, key="data_changes")


def findings(inspected, classes: list[str]) -> None:
    """What the check found, kind by kind, each picture with its fix actions."""
    root = inspected.root
    found = len(inspected.duplicates) + len(inspected.suspect_labels) + len(inspected.quality)
    if not found:
        st.success(f"Nothing to fix in {how_many(inspected.pictures, 'picture')}.", icon=":material/verified:")
    for note in inspected.notes:
        st.info(note, icon=":material/info:")
    _groups(
        "The same picture in two classes",
        inspected.conflicts,
        root,
        classes,
        "conflict",
        "A picture (or a near-copy of it) is in two class folders, so the model is told two different things "
        "about it. Keep the one in the right class; set the other aside.",
    )
    _groups(
        "Leaks between training and checking",
        inspected.leaks,
        root,
        classes,
        "leak",
        "The same picture (or a near-copy) is in two splits: the model is checked on pictures it learned "
        "from. Set one of each group aside.",
    )
    _groups(
        "Copies",
        [g for g in inspected.duplicates if g not in inspected.leaks and g not in inspected.conflicts],
        root,
        classes,
        "dup",
        "Exact copies and near-copies (resized, re-encoded, lightly cropped) count twice. Keep one of each.",
    )
    if inspected.suspect_labels:
        st.markdown(f"#### Pictures that may be in the wrong class ({len(inspected.suspect_labels)})")
        st.caption(
            "A model trained without each picture names another class for it. Most suspicious first; "
            "'sure' is how sure that model is of the class it suggests."
        )
        cards = [
            (
                s["path"],
                f"{words.md_text(s['given'])} → **{words.md_text(s['suggested'])}** ({s['confidence']:.0%} sure)",
                s["suggested"],
            )
            for s in inspected.suspect_labels[:SHOWN]
        ]
        fixes.card_grid(root, cards, classes, "suspect")
        _more(len(inspected.suspect_labels))
    if inspected.quality:
        st.markdown(f"#### Pictures of poor quality ({len({q['path'] for q in inspected.quality})})")
        problems: dict[str, list[str]] = {}
        for q in inspected.quality:  # a picture can have several problems: one card
            problems.setdefault(q["path"], []).append(q["problem"])
        cards = [(path, ", ".join(said), None) for path, said in list(problems.items())[:SHOWN]]
        fixes.card_grid(root, cards, classes, "quality")
        _more(len(problems))


def _groups(title: str, groups: list[list[str]], root: str, classes: list[str], key: str, caption: str) -> None:
    if not groups:
        return
    st.markdown(f"#### {title} ({len(groups)} group{'s' if len(groups) != 1 else ''})")
    st.caption(caption)
    for group in groups[:SHOWN]:
        fixes.card_grid(root, [(path, words.md_text(path), None) for path in group], classes, key)
    _more(len(groups))


def _more(count: int) -> None:
    if count > SHOWN:
        st.caption(f"… and {count - SHOWN} more. Fix these, then check again.")
