"""Fetching one file from the internet: at once an error in words when there
is no internet, a progress callback while it comes, a cap on its size, and
its checksum checked before anyone uses it.

The file goes to a temporary name beside its destination and is renamed only
when it is whole and its checksum matches (or, where no checksum is known,
when it is whole), so a failed or refused download leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from .errors import UserError

# How long to wait for the server to answer the first time: without internet
# a connection fails at once or never, and a teacher should not wait minutes.
CONNECT_TIMEOUT = 4.0
# Once connected, how long a stalled download may wait for its next bytes.
READ_TIMEOUT = 60.0
_CHUNK = 1 << 20

Progress = Callable[[int, int | None], None]  # (bytes so far, total bytes or None)


class OfflineError(UserError):
    """The server could not be reached: no internet, or it is blocked."""


class ChecksumError(UserError):
    """A file is whole but not the one expected (damaged or changed)."""


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_digest(path: Path, expected: str | None, algorithm: str = "sha256", what: str = "The file") -> None:
    """Raise ChecksumError when `path`'s checksum is not `expected` (None: not known, not checked)."""
    if not expected:
        return
    found = file_digest(path, algorithm)
    if found.lower() != expected.lower():
        raise ChecksumError(
            f"{what} ({Path(path).name}) is not the expected file: its {algorithm} checksum is {found[:12]}…, "
            f"not {expected[:12]}…. It may be damaged or a different version; download it again."
        )


def reachable(url: str, timeout: float = CONNECT_TIMEOUT) -> bool:
    """Whether a connection to `url`'s server opens within `timeout` seconds,
    the name lookup included (a dead DNS server can stall it for long)."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    answer: list[bool] = []

    def connect() -> None:
        try:
            with socket.create_connection((parts.hostname or "", port), timeout=timeout):
                answer.append(True)
        except OSError:
            answer.append(False)

    thread = threading.Thread(target=connect, daemon=True, name="reachable")
    thread.start()
    thread.join(timeout + 0.5)
    return bool(answer and answer[0])


def download(
    url: str,
    dest: Path,
    *,
    checksum: str | None = None,
    algorithm: str = "sha256",
    max_bytes: int,
    progress: Progress | None = None,
    connect_timeout: float = CONNECT_TIMEOUT,
    offline_hint: str = "",
) -> Path:
    """Download `url` to `dest` (a file path). Raises OfflineError at once
    when the server cannot be reached, UserError when the download breaks off
    or is larger than `max_bytes`, ChecksumError when it is not the file expected."""
    host = urllib.parse.urlsplit(url).hostname or url
    if not reachable(url, connect_timeout):
        raise OfflineError(f"There is no internet connection (or {host} cannot be reached). {offline_hint}".strip())
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".download-", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            _copy_from(url, out, max_bytes, progress, connect_timeout)
        check_digest(tmp, checksum, algorithm, what="The downloaded file")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _copy_from(url: str, out, max_bytes: int, progress: Progress | None, connect_timeout: float) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "transfer-studio"})
    try:
        response = urllib.request.urlopen(request, timeout=max(connect_timeout, READ_TIMEOUT))
    except urllib.error.HTTPError as exc:
        raise UserError(f"The server refused the download ({exc.code} {exc.reason}): {url}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise OfflineError(f"The download could not start ({getattr(exc, 'reason', exc)}): {url}") from exc
    with response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        if total is not None and total > max_bytes:
            raise UserError(f"The file at {url} is {total / 2**20:,.0f} MB, larger than expected; nothing was saved.")
        done = 0
        if progress:
            progress(0, total)
        while True:
            try:
                chunk = response.read(_CHUNK)
            except OSError as exc:
                raise UserError(f"The download broke off ({exc}). Try again.") from exc
            if not chunk:
                break
            done += len(chunk)
            if done > max_bytes:
                raise UserError(f"The file at {url} is larger than expected; nothing was saved.")
            out.write(chunk)
            if progress:
                progress(done, total)
    if total is not None and done != total:
        raise UserError(f"The download broke off after {done / 2**20:,.1f} of {total / 2**20:,.1f} MB. Try again.")
