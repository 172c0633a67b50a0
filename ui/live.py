"""What a training is doing now, in one set of words for the Train page's
progress bar and the sidebar, so the two always say the same thing: the
download, the feature pass and the final evaluation (pictures done of all,
and the time left), or the epoch and batch."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.jobs import ACTIVE
from ui import words


def counted(snap: dict) -> dict | None:
    """The counted step (Job.phase) when it is the one going on now."""
    step = snap.get("counted")
    if step and step.get("name") == snap.get("phase") and snap.get("state") == "running":
        return step
    return None


def _in_epochs(snap: dict) -> bool:
    return bool(snap.get("epoch")) and (snap.get("phase") == "Training" or snap.get("state") == "stopping")


def doing_now(snap: dict) -> str:
    """One line: what the training does at this moment."""
    download = snap.get("download")
    if download:
        total = download.get("total") or 0
        if total:
            return (
                f"Downloading the pretrained weights ({download['file']}): "
                f"{download['done'] / 2**20:.1f} of {total / 2**20:.1f} MB"
            )
        return f"Downloading the pretrained weights ({download['file']})…"
    step = counted(snap)
    if step:
        return f"{step['name']}… ({step['done']} of {step['total']} pictures)"
    if _in_epochs(snap):
        epochs, batches = snap.get("epochs") or "?", snap.get("batches") or 0
        line = f"Epoch {snap['epoch']} of {epochs}"
        # The batch being worked on ("batch 0 of 2" read as if none had started); an
        # epoch of one batch has no batch to count ("batch 1 of 1" says nothing).
        working_on = min((snap.get("batch") or 0) + 1, batches)
        return line + (f" · batch {working_on} of {batches}" if batches > 1 else "")
    return f"{snap.get('phase') or 'Starting'}…"


def fraction(snap: dict) -> float:
    """How far the step named by doing_now has gone, 0 to 1."""
    download = snap.get("download")
    if download:
        return min(1.0, download["done"] / download["total"]) if download.get("total") else 0.0
    step = counted(snap)
    if step:
        return min(1.0, step["done"] / step["total"]) if step["total"] else 0.0
    if _in_epochs(snap) and snap.get("batches"):
        epochs, batches = snap.get("epochs") or 1, snap["batches"]
        done = ((snap["epoch"] - 1) * batches + (snap.get("batch") or 0)) / max(1, epochs * batches)
        return min(1.0, max(0.0, done))
    return 0.0


def time_left(snap: dict) -> str | None:
    """The time left in words ("about 12 s left", "… for this step" before
    the epochs), or None when it is not known yet."""
    eta = snap.get("eta_seconds")
    if eta is None or snap.get("state") != "running" or snap.get("download"):
        return None
    step = counted(snap)
    left = words.fmt_time_left(snap)
    return f"{left if snap.get('eta_at_least') else 'about ' + left} left" + (" for this step" if step else "")


def notes(snap: dict) -> None:
    """Under the progress bar, what changes during the run: the blocks that
    learn now and the next to start (gradual unfreezing, a head-only start),
    and the smaller pictures of the first epochs."""
    if snap.get("learning_now") and _in_epochs(snap):
        st.caption(f":material/school: {words.md_text(snap['learning_now'])}")
    if snap.get("resizing_note"):
        st.caption(f":material/photo_size_select_small: {words.md_text(snap['resizing_note'])}")


def sidebar_line(job, shown_here: bool = False) -> None:
    """The sidebar's training line, redrawn with the Train page's rhythm while
    the training is active (a fragment: only this line reruns). `shown_here`:
    the page shows this training live, so the line only points to it."""
    snap = job.snapshot()
    if snap["state"] not in ACTIVE:
        st.markdown(f"**Training:** {words.state_label(snap['state'])}")
        return
    config = job.config
    st.markdown(
        f":material/directions_run: **Training:** {words.backbone_title(config.backbone)} on "
        f"{words.md_text(Path(config.data_dir).name)}"
    )
    if shown_here:
        st.caption("Shown live on this page.")
        return
    left = time_left(snap)
    st.caption(words.md_text(doing_now(snap)) + (f" · {left}" if left else ""))


def show_in_sidebar(job) -> None:
    """Draw `job`'s line where the caller is (the sidebar), refreshed every
    1.5 s while it is active."""
    if job.state in ACTIVE:
        st.fragment(run_every=1.5)(sidebar_line)(job)
    else:
        sidebar_line(job)
