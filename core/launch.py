"""Starting a training as a torchrun subprocess (the app's "use all N GPUs").

The command is the one a person would type: `python -m torch.distributed.run
--standalone --nproc_per_node N -m core train DATA_DIR <options> --runs-dir
RUNS`, the options written from the TrainConfig's fields the way the command
line reads them (core.cli). A launch id in the environment comes back in the
run's status.json (core.cli_ddp), so the starter finds the run folder rank 0
made, and then follows it like any other run (core.follow).
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from .cli import _train_fields
from .cli_ddp import LAUNCH_ENV
from .runs import RunStore


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def train_arguments(config) -> list[str]:
    """The `train` command's arguments that give back `config`."""
    args = [str(config.data_dir)]
    for f, flag, kind in _train_fields():
        value = getattr(config, f.name)
        if kind is bool:
            if value != (flag.startswith("--no-")):  # the flag turns the default around
                args.append(flag)
        elif value is not None:
            args += [flag, str(value)]
    return args


def torchrun_command(config, runs_dir: str | Path, processes: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(processes),
        "-m",
        "core",
        "train",
        *train_arguments(config),
        "--runs-dir",
        str(runs_dir),
    ]


@dataclass
class Launch:
    id: str
    process: subprocess.Popen
    log: Path
    started: float

    @property
    def ended(self) -> bool:
        return self.process.poll() is not None


def start(config, runs_dir: str | Path, processes: int, env: dict | None = None) -> Launch:
    """Start the torchrun training; its output goes to a hidden log file in
    the runs folder. Returns at once."""
    import os

    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    launch_id = uuid.uuid4().hex
    log = runs_dir / f".torchrun-{launch_id[:12]}.log"
    full_env = {**os.environ, **(env or {}), LAUNCH_ENV: launch_id}
    cwd = Path(__file__).resolve().parent.parent  # where `-m core` is found
    with open(log, "wb") as out:
        process = subprocess.Popen(
            torchrun_command(config, runs_dir, processes),
            cwd=cwd,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # not ended by a Ctrl+C meant for the app
        )
    return Launch(launch_id, process, log, time.time())


def find_run(runs_dir: str | Path, launch_id: str):
    """The run a launch made, once rank 0 has written it; else None."""
    for run in RunStore(runs_dir).list():
        if run.status.get("launch_id") == launch_id:
            return run
    return None


def log_tail(launch: Launch, chars: int = 2000) -> str:
    try:
        return launch.log.read_text(errors="replace")[-chars:]
    except OSError:
        return ""
