"""The warm path: a linear probe whose features are already stored.

`measure_warm` times, on one folder and backbone:

- import_torch_s: `python -c "import torch"`, the part no command can avoid;
- torch_optimizer_s: importing torch and building one torch.optim optimizer,
  torch's own floor for any command that trains: on torch 2.x the first
  optimizer imports torch._dynamo (its methods are wrapped by
  torch._disable_dynamo, which imports it on their first call), over a
  second on a 2-core CPU, whether or not anything is compiled;
- help_s: `python -m core --help` (imports no torch);
- cli_cold_s: the first `python -m core train` with an empty cache (it stores
  the features and the scan's verdicts);
- cli_warm_s: the same command again, features stored;
- cli_beyond_torch_s: cli_warm_s - import_torch_s (target: under 1 s);
- cli_beyond_optimizer_s: cli_warm_s - torch_optimizer_s, what the command
  itself adds to what torch spends before any training step;
- app_warm_s: the app's way, in this process: a Job submitted to a
  JobManager, from submit to the finished summary, after one warm-up job
  (target: under 1 s).

Subprocess timings alternate (import torch, the optimizer, warm train) and are medians of
REPEAT, so a machine whose load changes weighs on both alike. The load
average is logged before and after.

`python -m bench.warm` prints them (a standalone check).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
REPEAT = 3
# torch's floor for a command that trains: the import and one optimizer
TORCH_OPTIMIZER = "import torch; torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)"


def _load() -> str:
    try:
        return "load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())
    except OSError:
        return "load average unknown"


def _timed(args: list[str], env: dict) -> float:
    """Wall seconds of one command (Python's start included), which must succeed."""
    started = time.perf_counter()
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return seconds


def _app_seconds(manager, config) -> float:
    """Submit a training the way the Train page does and wait for its end.
    The app is idle at the click, as when a person clicks: the previous
    job's clean-up after its end (a garbage collection) is over."""
    manager.wait_idle()
    started = time.perf_counter()
    job = manager.submit(config)
    job.wait()
    seconds = time.perf_counter() - started
    snap = job.snapshot()
    if snap["state"] != "finished":
        raise RuntimeError(f"the app's run {snap['state']}: {snap['reason']}")
    return seconds


def measure_warm(data: str, backbone: str, epochs: int, work: Path, log=print) -> dict:
    """The warm path's timings (seconds; see the module's docstring). Cache
    and runs folders are made under `work`."""
    work = Path(work)
    cache, runs = work / "cache", work / "runs"
    cache.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TRANSFER_STUDIO_CACHE": str(cache), "PYTHONPATH": str(REPO)}
    python = sys.executable
    train = [python, "-m", "core", "train", str(data), "--backbone", backbone, "--epochs", str(epochs)]
    train += ["--runs-dir", str(runs)]
    log(f"warm path: {backbone}, {epochs} epochs on {data}; {_load()}")

    help_s = statistics.median(_timed([python, "-m", "core", "--help"], env) for _ in range(REPEAT))
    cli_cold_s = _timed(train, env)  # stores the features and the scan's verdicts
    log(f"  cold CLI run {cli_cold_s:.2f} s (features stored)")
    torch_times, optimizer_times, warm_times = [], [], []
    for _ in range(REPEAT):
        torch_times.append(_timed([python, "-c", "import torch"], env))
        optimizer_times.append(_timed([python, "-c", TORCH_OPTIMIZER], env))
        warm_times.append(_timed(train, env))
    import_torch_s, cli_warm_s = statistics.median(torch_times), statistics.median(warm_times)
    torch_optimizer_s = statistics.median(optimizer_times)

    from core.config import TrainConfig
    from core.jobs import JobManager

    config = TrainConfig(data_dir=str(Path(data).resolve()), backbone=backbone, epochs=epochs, cache_dir=str(cache))
    manager = JobManager(runs)  # one per runs folder, as the app keeps it
    _app_seconds(manager, config)  # warms this process up: its imports and first calls
    app_warm_s = statistics.median(_app_seconds(manager, config) for _ in range(REPEAT))
    log(f"  done; {_load()}")
    return {
        "import_torch_s": round(import_torch_s, 3),
        "help_s": round(help_s, 3),
        "cli_cold_s": round(cli_cold_s, 3),
        "cli_warm_s": round(cli_warm_s, 3),
        "cli_beyond_torch_s": round(cli_warm_s - import_torch_s, 3),
        "torch_optimizer_s": round(torch_optimizer_s, 3),
        "cli_beyond_optimizer_s": round(cli_warm_s - torch_optimizer_s, 3),
        "app_warm_s": round(app_warm_s, 3),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.warm", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(SHARED / "datasets" / "hymenoptera"))
    p.add_argument("--backbone", default="mobilenet_v2")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--work", default=None, help="folder for the cache and runs (default: a new temporary one)")
    args = p.parse_args(argv)
    if "TORCH_HOME" not in os.environ and (SHARED / "torch-home").is_dir():
        os.environ["TORCH_HOME"] = str(SHARED / "torch-home")  # the offline weights beside the checkout
    with tempfile.TemporaryDirectory(prefix="bench-warm-") as tmp:
        result = measure_warm(args.data, args.backbone, args.epochs, Path(args.work or tmp))
    for key, value in result.items():
        print(f"{key:<24} {value:7.3f} s")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
