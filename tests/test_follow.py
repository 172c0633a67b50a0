"""A run started elsewhere (here: the command line, in another process) is
followed live in the app from its run folder, and the app's Stop ends it.
Also the pieces on their own: the stop request a Job honours, the command a
torchrun launch types, and sweeps spread over GPUs."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core import follow
from core.cli import _config_from_args, build_parser
from core.compare import spread_over_gpus
from core.config import TrainConfig
from core.jobs import Job
from core.launch import torchrun_command, train_arguments
from core.runs import RunStore
from tests.folders import PACKAGED_BACKBONE, PHOTOS, small_copy
from tests.serving import CHROMIUM, CHROMIUM_ARGS, needs_browser, streamlit_server

REPO = Path(__file__).resolve().parent.parent


def epochs_done(caption) -> int:
    """The N of the Train page's "N of M epochs done." caption."""
    return int(caption.inner_text().split()[0])


def test_a_stop_request_in_the_run_folder_stops_the_job_and_a_snapshot_reads_the_folder(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    job = Job(TrainConfig(data_dir="x"), run_dir=str(run_dir))
    job.update(state="running", phase="Training", epoch=2, epochs=5, batch=3, batches=7)
    assert not job.stop_requested
    follow.request_stop(run_dir)
    time.sleep(follow.STOP_CHECK_EVERY_S + 0.1)
    assert job.stop_requested and job.state == "stopping"
    live = follow.read_json(run_dir / follow.LIVE_FILE, {}, dict)
    assert (live["epoch"], live["batch"], live["batches"]) == (2, 3, 7)
    follow.clear_stop(run_dir)
    assert not (run_dir / follow.STOP_FILE).exists()


def test_the_torchrun_command_gives_back_the_same_settings(tmp_path):
    config = TrainConfig(
        data_dir=str(tmp_path), backbone=PACKAGED_BACKBONE, epochs=7, lr=0.003, feature_cache=False, image_size=96
    )
    command = torchrun_command(config, tmp_path / "runs", 4)
    assert command[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "4"]
    args = build_parser().parse_args(["train", *train_arguments(config)])
    assert _config_from_args(args) == config


def test_a_sweep_puts_one_run_on_each_gpu():
    configs = [TrainConfig(data_dir="x", backbone=b) for b in ("a", "b", "c")]
    assert [c.device for c in spread_over_gpus(configs, gpus=2)] == ["cuda:0", "cuda:1", "cuda:0"]
    assert spread_over_gpus(configs, gpus=1) == configs
    pinned = [dataclasses.replace(configs[0], device="cpu")]
    assert spread_over_gpus(pinned, gpus=4) == pinned


@pytest.mark.browser
def test_a_run_from_the_command_line_shows_live_in_the_app_and_its_stop_ends_it(tmp_path):
    sync_api = needs_browser()
    photos = small_copy(PHOTOS, tmp_path / "photos", train=6, val=2)
    runs = tmp_path / "runs"
    env = {
        "TRANSFER_STUDIO_RUNS": str(runs),
        "TRANSFER_STUDIO_CACHE": str(tmp_path / "cache"),
        "TRANSFER_STUDIO_DATA": str(tmp_path / "data"),
    }
    command = [sys.executable, "-m", "core", "train", str(photos), "--backbone", PACKAGED_BACKBONE]
    command += [
        "--epochs",
        "500",
        "--no-feature-cache",
        "--image-size",
        "64",
        "--device",
        "cpu",
        "--runs-dir",
        str(runs),
    ]
    cli = subprocess.Popen(
        command, cwd=REPO, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        with streamlit_server(tmp_path, env=env) as (url, _port, _log), sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(60_000)
            page.goto(f"{url}/train")
            expect = sync_api.expect
            expect(page.get_by_text("Training elsewhere")).to_be_visible(timeout=120_000)
            done = page.get_by_text("epochs done", exact=False)
            expect(done).to_be_visible(timeout=120_000)
            first = epochs_done(done)
            # Live: the count grows without a reload. Tiny epochs can outrun the page's
            # refresh, so wait for any larger count, not for exactly the next one.
            deadline = time.monotonic() + 60
            while epochs_done(done) <= first:
                assert time.monotonic() < deadline, f"the page stayed at {first} epochs done"
                page.wait_for_timeout(500)
            page.get_by_role("button", name="Stop training").click()
            cli.wait(timeout=90)
            expect(page.get_by_text("Stopped by you", exact=False).first).to_be_visible(timeout=30_000)
            browser.close()
    finally:
        if cli.poll() is None:
            cli.kill()
        out, err = cli.communicate()
    assert cli.returncode == 1 and '"state": "stopped"' in out, err[-3000:]
    run = RunStore(runs).list()[0]
    assert run.state == "stopped" and "Stopped by you" in run.status["reason"]
    assert not (run.path / follow.STOP_FILE).exists()  # done with
