"""Start the real app server for a test, look at how it listens, and the
browser that drives it.

One place for what the browser tests and the safety tests both need: a free
port, `streamlit run app.py` started from the repository root (so it reads the
project's `.streamlit/config.toml`, as the README's command does), a wait for
its health check, and a clean stop that fails the test if the server printed
a traceback.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Debian's Chromium, driven by Playwright, with the flags for a headless run here.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def needs_browser():
    """Skip a test that drives Debian's Chromium with Playwright where either
    is missing (in CI, .ci/run fails a run with skips); returns
    playwright.sync_api."""
    import pytest

    if not CHROMIUM.exists():
        pytest.skip(f"needs Debian's Chromium at {CHROMIUM} (apt-get install -y chromium)")
    return pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install -e '.[test]')")


def choose(page, box_label: str, option: str, *, tries: int = 4) -> None:
    """Pick `option` in the select box labelled `box_label`, as a person does.

    A click that lands while the page is rerunning (the choice just before it
    reruns the script) can open a list that the rerun closes again; a person
    simply clicks again, and so does this, a few times, before failing.
    """
    from playwright.sync_api import Error as PlaywrightError

    box = page.get_by_test_id("stSelectbox").filter(has_text=box_label)
    wanted = page.get_by_role("option", name=option, exact=True)
    for attempt in range(tries):
        box.click()
        try:
            wanted.click(timeout=5_000)
            break
        except PlaywrightError:
            if attempt == tries - 1:
                raise
            page.keyboard.press("Escape")
    wanted.wait_for(state="hidden", timeout=30_000)  # the list closed on the choice


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"streamlit did not answer in {timeout:.0f}s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def streamlit_server(workdir: Path, *, env: dict | None = None, args: tuple[str, ...] = (), drop: tuple[str, ...] = ()):
    """`streamlit run app.py --server.port P [args]` from the repository root;
    yields (url, port, log path). Only the port is given on the command line:
    everything else comes from the project's config, as for a user. `env` is
    added to this process's environment and the names in `drop` are left out
    of it (a server that has never heard of TORCH_HOME, as on a new laptop)."""
    port = free_port()
    log = workdir / f"streamlit-{port}.log"
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    for name in drop:
        full_env.pop(name, None)
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        "app.py",
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--server.fileWatcherType",
        "none",
        *args,
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, cwd=REPO, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, log)
        yield url, port, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        server_log = log.read_text(errors="replace")
        assert "Traceback" not in server_log, server_log[-4000:]


def _hex_address(hex_ip: str) -> str:
    """/proc/net/tcp's little-endian hex address -> dotted or colon text."""
    raw = bytes.fromhex(hex_ip)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def listening_addresses(port: int) -> set[str]:
    """The local addresses on which some process listens on TCP `port`, read
    from the kernel's own table (Linux)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if int(port_hex, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                found.add(_hex_address(address))
    return found
