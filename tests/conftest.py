"""Shared fixtures: the real datasets and offline weights in ../shared.

../shared sits beside the checkout on development machines and in CI, never on a
user's machine. Outside CI, tests that need it skip with a reason; in CI
(TRANSFER_STUDIO_REQUIRE_SHARED=1, set by .ci/run) they fail instead, so a
missing ../shared can never turn into a green run that tested nothing.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

try:
    from tests.trained_run import small_copy
except ImportError:  # pytest run from inside tests/
    from trained_run import small_copy

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("TRANSFER_STUDIO_SHARED", REPO_ROOT.parent / "shared")).resolve()
SHARED_TORCH_HOME = SHARED / "torch-home"
HYMENOPTERA = SHARED / "datasets" / "hymenoptera"
CLOTHING10 = SHARED / "datasets" / "clothing10"


def _need(path: Path) -> Path:
    if path.exists():
        return path
    message = f"needs {path} (the shared test data beside the checkout; see ../shared/README.md)"
    if os.environ.get("TRANSFER_STUDIO_REQUIRE_SHARED") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def hymenoptera() -> Path:
    return _need(HYMENOPTERA)


@pytest.fixture(scope="session")
def clothing10() -> Path:
    return _need(CLOTHING10)


@pytest.fixture(scope="session")
def shared_torch_home() -> Path:
    """A TORCH_HOME holding real ImageNet mobilenet_v2 weights (read-only)."""
    return _need(SHARED_TORCH_HOME)


@pytest.fixture()
def offline_weights(shared_torch_home, monkeypatch) -> Path:
    """Point torch's cache at the shared offline weights for this test."""
    monkeypatch.setenv("TORCH_HOME", str(shared_torch_home))
    return shared_torch_home


@pytest.fixture()
def empty_torch_home(tmp_path, monkeypatch) -> Path:
    """A torch cache with nothing in it: downloads would be needed."""
    home = tmp_path / "torch-home"
    home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


# --- the app's folders and one trained run, for the page tests -------------------


@pytest.fixture(scope="session")
def small_data(tmp_path_factory, hymenoptera) -> Path:
    """10 + 10 real photos of each class (ants, bees), in train/ and val/."""
    return small_copy(hymenoptera, tmp_path_factory.mktemp("data") / "ants-and-bees", train=10, val=10)


@pytest.fixture(scope="session")
def linear_probe_run(tmp_path_factory, small_data, shared_torch_home) -> Path:
    """One finished linear-probe MobileNetV2 run on small_data, trained once
    through the engine for the whole session; tests use copies (with_run)."""
    from core.config import TrainConfig
    from core.jobs import train_blocking

    root = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(shared_torch_home))
        config = TrainConfig(data_dir=str(small_data), backbone="mobilenet_v2", strategy="linear", epochs=2,
                             cache_dir=str(root / "cache"))
        job, run = train_blocking(config, runs_dir=root / "runs")
    assert job.state == "finished", job.snapshot()["reason"]
    return run.path


@pytest.fixture()
def env(tmp_path, monkeypatch, offline_weights) -> Path:
    """The app's folders for this test (through the environment variables the
    app reads), and the offline weights: nothing leaks between tests."""
    monkeypatch.setenv("TRANSFER_STUDIO_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("TRANSFER_STUDIO_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("TRANSFER_STUDIO_CACHE", str(tmp_path / "cache"))
    return tmp_path


@pytest.fixture()
def with_run(env, linear_probe_run) -> Path:
    """A copy of the finished run in this test's runs folder."""
    dst = env / "runs" / linear_probe_run.name
    shutil.copytree(linear_probe_run, dst)
    return dst


# --- in CI, a skipped test is a failed run --------------------------------------
_skipped: list[str] = []


def pytest_runtest_logreport(report):
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("TRANSFER_STUDIO_REQUIRE_SHARED") == "1" and _skipped:
        print(f"\nCI forbids skipped tests; these skipped: {', '.join(_skipped)}")
        session.exitstatus = 1
