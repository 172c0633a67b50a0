"""The app serves this machine only, unless the person starting it chooses
otherwise: the README's `streamlit run app.py`, started the way a user starts
it, must not be reachable from the network."""

from __future__ import annotations

import ipaddress
import sys

import pytest

from tests.serving import listening_addresses, streamlit_server

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux's /proc/net/tcp")


def test_default_start_listens_on_loopback_only(tmp_path):
    env = {"TRANSFER_STUDIO_RUNS": str(tmp_path / "runs"), "TRANSFER_STUDIO_DATA": str(tmp_path / "data")}
    with streamlit_server(tmp_path, env=env) as (_url, port, _log):
        addresses = listening_addresses(port)
    assert addresses, "the server listened on nothing we could see"
    assert all(ipaddress.ip_address(a).is_loopback for a in addresses), addresses


def test_sharing_is_an_explicit_choice_at_start(tmp_path):
    """The documented way to share with a class does open the server to the
    network: so the default above is a real choice, not an accident."""
    env = {"TRANSFER_STUDIO_RUNS": str(tmp_path / "runs"), "TRANSFER_STUDIO_DATA": str(tmp_path / "data")}
    with streamlit_server(tmp_path, env=env, args=("--server.address", "0.0.0.0")) as (_url, port, _log):
        addresses = listening_addresses(port)
    assert "0.0.0.0" in addresses, addresses
