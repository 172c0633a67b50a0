"""How wide the page's main column is, as the browser measures it, so that a
table can leave out the columns it has no room for.

Streamlit tells Python nothing of the window. This is a tiny component
(Streamlit's public `st.components.v2` API, like the camera's) with no
picture of its own: it measures the column it sits in and reports its width
in pixels as its state value "width": when the page opens too narrow for
the layout the page draws without a width (`main_width(wide)`), and then
whenever the window or the sidebar changes it by 20 px or more (a scroll bar
coming and going does not, so no page ever reruns back and forth). In a
usual window it says nothing, and the page is drawn once. Until the browser
has said (the first draw of a session, a wide window, or the tests'
AppTest), the width is unknown: None, and tables draw every column.

`fitting` chooses, in the order a person needs them, the columns that fit.
"""

from __future__ import annotations

import streamlit as st

_JS = """
export default function (component) {
  const { data, parentElement, setStateValue } = component;
  const known = (data && data.width) || null;
  const wide = (data && data.wide) || 0;  // the page's layout without a measured width needs this many px
  let probe = parentElement.querySelector("div.ts-width");  // parentElement may be a shadow root
  if (!probe) {
    probe = document.createElement("div");
    probe.className = "ts-width";
    parentElement.appendChild(probe);
  }
  const measure = () => {
    const width = Math.floor(probe.getBoundingClientRect().width);
    // Never measured: only a page too narrow for its unmeasured layout is told (a rerun re-lays it out, and a
    // click landing during it could hit what moved); measured before: any change of 20 px or more.
    const changed = known === null ? width < wide : Math.abs(width - known) >= 20;
    if (width > 0 && changed) setStateValue("width", width);
  };
  let timer = null;
  const later = () => { clearTimeout(timer); timer = setTimeout(measure, 250); };
  const observer = new ResizeObserver(later);
  observer.observe(probe);
  measure();
  return () => { clearTimeout(timer); observer.disconnect(); };
}
"""

_COMPONENT = st.components.v2.component("transfer_studio.page_width", js=_JS)
_KNOWN = "_page_width"  # the last width the browser reported, kept across pages
_BORDERS = 4  # a table's frame: its columns get the column's width less this
# The least a picture's column in a gallery gets on a page whose width is known: its caption on a few lines and its
# fix buttons whole (3 in a row in a 1024 px window's page; 6 in a row there left 80 px, captions on four lines).
PICTURE_PX = 150


def _reported() -> None:
    """Callback: the width is in the component's state (read where it is drawn)."""


def main_width(wide: int) -> int | None:
    """The page's main column in px, as last measured by the browser; None
    until it has been. Draws the (invisible) measuring component. `wide`:
    the px the page's layout for an unknown width needs; a browser whose
    page is at least that wide reports nothing until its width changes, so
    in a usual window the page is drawn once, not twice."""
    known = st.session_state.get(_KNOWN)
    result = _COMPONENT(key="page_width", data={"width": known, "wide": wide}, on_width_change=_reported)
    width = result.get("width")
    if isinstance(width, (int, float)) and width > 0:
        st.session_state[_KNOWN] = known = int(width)
    return known


def fitting(needed_first: list[str], widths: dict[str, int], room: int) -> list[str]:
    """Of the columns `needed_first` (most needed first), those that fit
    `room` px at `widths`, taken in that order (one too wide for what is
    left is passed over for a narrower one after it)."""
    chosen, used = [], 0
    for name in needed_first:
        if used + widths[name] <= room:
            chosen.append(name)
            used += widths[name]
    return chosen


def table_px(widths: dict[str, int]) -> int:
    """The px a table with these column widths needs, its frame included (main_width's `wide`)."""
    return sum(widths.values()) + _BORDERS


def columns_for(width: int | None, wide: dict[str, int], narrow: dict[str, int], needed_first: list[str]):
    """A table's columns and their widths for a main column `width` px wide:
    every one at its `wide` width where they all fit (or the width is not
    known yet), else the most needed ones (`needed_first`) that fit at their
    `narrow` widths, in the table's order. Returns (columns, widths, left out)."""
    room = None if width is None else width - _BORDERS
    if room is None or sum(wide.values()) <= room:
        return list(wide), wide, []
    keep = set(fitting(needed_first, narrow, room))
    return [c for c in wide if c in keep], narrow, [c for c in wide if c not in keep]


def left_out_note(left_out: list[str]) -> str:
    """A caption's words for the columns a narrow window left out ("" for none)."""
    if not left_out:
        return ""
    names = " and ".join([", ".join(left_out[:-1]), left_out[-1]] if len(left_out) > 1 else left_out)
    one = len(left_out) == 1
    return (
        f":material/width: The window is narrow, so the table leaves out {names}. Widen the window, or close the "
        f"sidebar (« at its top), to see {'it' if one else 'them'}."
    )


COLUMN_GAP_PX = 16  # between st.columns


def last_measured() -> int | None:
    """The page's main column in px as the browser last reported it on any
    page of this session (every page has the same), without drawing the
    measuring component; None while no page has been told its width (the
    window is wide, or no page measured yet)."""
    return st.session_state.get(_KNOWN)


def per_row(width: int | None, most: int, least_px: int = PICTURE_PX) -> int:
    """How many pictures (or other columns) a row of a main column `width` px wide holds, each at least
    `least_px` wide: at most `most` (also while the width is not known), at least 1."""
    if width is None:
        return most
    return max(1, min(most, (width + COLUMN_GAP_PX) // (least_px + COLUMN_GAP_PX)))
