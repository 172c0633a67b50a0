"""A folder's path as a person pastes it, made into a path the computer finds.

Copying a folder gives many shapes of the same path: with quotes around it
('…' or "…", from "Copy as path" on Windows or a shell), as a `file:///…`
address (from a browser or a file manager, spaces written %20), starting with
`~`, with a shell's backslash before each space (a folder dropped into a
terminal), or with a stray space or line break at either end. `pasted_path`
turns each into the plain path; the Data page's folder box, the scan and the
command line all go through it, so they agree.

Only the standard library here.
"""

from __future__ import annotations

import os
import re
from urllib.parse import unquote, urlsplit

_QUOTES = {'"': '"', "'": "'", "\u201c": "\u201d", "\u2018": "\u2019", "\u00ab": "\u00bb"}
_WINDOWS_DRIVE = re.compile(r"^/[A-Za-z]:[/\\]")


def _unquote_once(text: str) -> str:
    if len(text) >= 2 and _QUOTES.get(text[0]) == text[-1]:
        return text[1:-1].strip()
    return text


def _from_file_url(text: str) -> str:
    """`file:///home/me/My%20Photos` -> `/home/me/My Photos`; a host other
    than localhost becomes a network path (//host/share)."""
    parts = urlsplit(text)
    path = unquote(parts.path)
    if _WINDOWS_DRIVE.match(path):  # file:///C:/Users/me -> C:/Users/me
        path = path[1:]
    host = parts.netloc
    if host and host.lower() != "localhost":
        path = f"//{host}{path}"
    return path


def pasted_path(text) -> str:
    """The path inside what a person pasted or typed (see the module's note).
    An empty text stays empty; the result is not resolved, so a relative path
    stays relative (to where the program runs)."""
    text = os.fspath(text) if not isinstance(text, str) else text
    text = " ".join(text.splitlines()).strip()
    text = _unquote_once(_unquote_once(text))
    if text[:5].lower() == "file:":
        text = _from_file_url(text)
    if os.sep == "/" and "\\" in text and not os.path.exists(text):
        # A folder dropped into a terminal: "My\ Photos" means "My Photos".
        unescaped = re.sub(r"\\(.)", r"\1", text)
        if os.path.exists(os.path.expanduser(unescaped)):
            text = unescaped
    return os.path.expanduser(text) if text.startswith("~") else text
