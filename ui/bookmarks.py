"""A bookmarked page opened first on a fresh server still runs inside app.py.

Why this exists: Streamlit decides once per process, when the first session
starts, whether the app is an old-style "pages folder" app: it is when a
folder named `pages/` sits beside the main script and `st.navigation` has not
been called yet. This project keeps its page scripts in `pages/` (a fixed
choice), so when the very first request to a new server is a page's address
(a bookmark of /results, say), Streamlit runs that page script alone, with a
sidebar of file names and without app.py. Streamlit offers no setting to turn
that mode off (`client.showSidebarNavigation` only hides the list); the only
public thing that turns it off is a call of `st.navigation`, which app.py
makes. So a page that finds itself running alone switches to app.py with the
public `st.switch_page`, remembering where the user wanted to go; app.py's
`st.navigation` then ends the old mode for the whole process, and app.py
switches on to the remembered page (with its query parameters, e.g. ?run=).
Two quick reruns, once per server. See docs/DESIGN.md, "Bookmarks".
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

import streamlit as st

APP = "app.py"
PENDING = "_bookmarked_page"

# True while app.py runs the current page (set per script thread, so two
# sessions never see each other's value).
_inside_app: ContextVar[bool] = ContextVar("inside_app", default=False)


@contextmanager
def inside_app():
    """app.py runs its page inside this."""
    token = _inside_app.set(True)
    try:
        yield
    finally:
        _inside_app.reset(token)


def open_inside_app(page: str) -> None:
    """Called first by each page script with its own path: when Streamlit ran
    the page alone, hand it over to app.py (this stops the page's run)."""
    if _inside_app.get():
        return
    st.session_state[PENDING] = {"page": page, "query": st.query_params.to_dict()}
    st.switch_page(APP)


def resume() -> None:
    """Called by app.py right after st.navigation: go on to the page the user
    asked for, if a page handed itself over."""
    pending = st.session_state.pop(PENDING, None)
    if pending:
        st.switch_page(pending["page"], query_params=pending["query"] or None)
