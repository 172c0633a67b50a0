"""Shared fixtures: the photos in the repository, the shared datasets and
offline weights in ../shared, and runs trained once per session.

Tests on `small_data` (assets/examples/clothes) with EfficientNet-Lite0, whose weights ship
in a Python package, run anywhere. ../shared sits beside the checkout on
development machines and in CI, never on a user's machine. Outside CI, tests
that need it skip with a reason; in CI (TRANSFER_STUDIO_REQUIRE_SHARED=1, set by
.ci/run) they fail instead, so a missing ../shared can never turn into a green
run that tested nothing.

A test that needs a trained run asks for the `trained_run` factory with the
run's settings (or for `linear_probe_run` / `fine_tuned_run`, two runs many
tests share); each distinct run is trained once per session and only read.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.folders import CLOTHING10, HYMENOPTERA, PACKAGED_BACKBONE, PHOTOS, SHARED_TORCH_HOME, small_copy


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
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def small_data(tmp_path_factory) -> Path:
    """The repository's 56 real photos (hat, pants, shoes, t-shirt; 10 + 4 of each
    in train/ and val/), copied so that no test writes into the checkout."""
    return small_copy(PHOTOS, tmp_path_factory.mktemp("data") / "clothes", train=10, val=4)


# --- runs trained once per session ------------------------------------------------


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A function: trained_run(data_dir, torch_home=None, **settings) -> the
    folder of a finished run of TrainConfig(data_dir=..., **settings).

    Each distinct (data, weights, settings) is trained once per session, through
    the engine, and the same folder is returned to every later caller: tests only
    read it (or copy it, as `with_run` does). With no torch_home, torch's cache is
    an empty folder, so only packaged weights (EfficientNet-Lite0) are found.
    """
    from core.config import TrainConfig
    from core.jobs import train_blocking

    made: dict[str, Path] = {}

    def train(data_dir: Path | str, torch_home: Path | None = None, **settings) -> Path:
        key = json.dumps({"data_dir": str(data_dir), "torch_home": str(torch_home), **settings}, sort_keys=True)
        if key not in made:
            root = tmp_path_factory.mktemp("trained")
            if torch_home is None:
                torch_home = root / "torch-home"
                torch_home.mkdir()
            config = TrainConfig(data_dir=str(data_dir), cache_dir=str(root / "cache"), **settings)
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("TORCH_HOME", str(torch_home))
                job, run = train_blocking(config, runs_dir=root / "runs")
            assert job.state == "finished", job.snapshot()["reason"]
            made[key] = run.path
        return made[key]

    return train


@pytest.fixture(scope="session")
def linear_probe_run(trained_run, small_data) -> Path:
    """A finished two-epoch linear probe of EfficientNet-Lite0 on small_data (runs anywhere)."""
    return trained_run(small_data, backbone=PACKAGED_BACKBONE, strategy="linear", epochs=2, device="cpu", seed=0)


@pytest.fixture(scope="session")
def fine_tuned_run(trained_run, tmp_path_factory, hymenoptera, shared_torch_home) -> Path:
    """A fine-tune of MobileNetV2's last block (`last-1`, no augmentation, so the
    frozen prefix is computed once through the feature cache) on 30 + 20 real
    hymenoptera photos of each class, for the explain, export and compare tests."""
    data = small_copy(hymenoptera, tmp_path_factory.mktemp("data") / "ants-and-bees", train=30, val=20)
    return trained_run(
        data,
        torch_home=shared_torch_home,
        backbone="mobilenet_v2",
        strategy="last-1",
        augment="none",
        epochs=2,
        lr=1e-3,
        device="cpu",
        seed=0,
    )


# --- the app's folders, for the page tests ----------------------------------------


@pytest.fixture()
def env(tmp_path, monkeypatch) -> Path:
    """The app's folders for this test (through the environment variables the
    app reads), and an empty torch cache, so only packaged weights are found:
    nothing leaks between tests, and nothing depends on this machine's cache.
    A test that wants the shared MobileNetV2 weights asks for `offline_weights`
    after `env`."""
    monkeypatch.setenv("TRANSFER_STUDIO_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("TRANSFER_STUDIO_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("TRANSFER_STUDIO_CACHE", str(tmp_path / "cache"))
    (tmp_path / "torch-home").mkdir()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return tmp_path


@pytest.fixture()
def with_run(env, linear_probe_run) -> Path:
    """A copy of the finished linear probe in this test's runs folder."""
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
