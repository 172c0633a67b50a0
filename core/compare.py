"""Comparing runs: a leaderboard, overlaid training curves, and backbone sweeps.

* `leaderboard(run_dirs)` gives one row per run: backbone, strategy, trainable
  parameters, best validation accuracy, macro F1, training time and how many
  milliseconds one image takes on this machine (measured once per run and
  device, then kept in the run's speed.json).
* `curves(run_dirs)` gives the per-epoch losses and accuracies in long format
  (run, epoch, metric, value), ready for a line chart (`ui.charts.curves_figure` draws it).
* `sweep_configs` / `queue_sweep` turn one training setup into one run per
  chosen backbone (and strategy) on the same data, queued on the JobManager:
  one trains at a time per device, and the leaderboard fills as they finish.

No Streamlit here.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from .backbones import get_backbone
from .evaluation import load_run_model
from .files import atomic_write_json
from .freeze import freeze_plan_for
from .runs import ACTIVE_STATES, RunStore, checkpoint_problem, open_run, read_json

SPEED_FILE = "speed.json"
SWEEP_FILE = "sweep.json"
METRICS = ("train_loss", "val_loss", "train_accuracy", "val_accuracy")


# --------------------------------------------------------------------------------------
# Inference speed
# --------------------------------------------------------------------------------------


def _device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    if device.type == "cpu":
        return f"cpu:{torch.get_num_threads()} threads"
    return device.type


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


@torch.inference_mode()
def time_model(
    model: torch.nn.Module,
    image_size: int,
    device: str | torch.device = "cpu",
    warmup: int = 3,
    repeats: int = 10,
    max_seconds: float = 10.0,
) -> float:
    """Median milliseconds for one image (batch of 1) through `model` on
    `device`, after `warmup` untimed runs. Stops early after max_seconds
    (at least 3 timed runs), so a slow backbone on a CPU stays bearable."""
    device = torch.device(device)
    model = model.to(device).eval()
    x = torch.rand(1, 3, image_size, image_size, device=device)
    for _ in range(max(1, warmup)):
        model(x)
    _sync(device)
    times, started = [], time.perf_counter()
    for i in range(max(3, repeats)):
        t0 = time.perf_counter()
        model(x)
        _sync(device)
        times.append((time.perf_counter() - t0) * 1000.0)
        if i >= 2 and time.perf_counter() - started > max_seconds:
            break
    return float(statistics.median(times))


def inference_ms(run_dir: str | Path, device: str | torch.device = "cpu", refresh: bool = False) -> float | None:
    """Milliseconds per image (batch 1) for the run's model on `device`.

    Measured once per run and device and kept in the run's speed.json; later
    calls read it (refresh=True measures again). None when the run has no
    model yet. The time does not depend on the trained weights, only on the
    backbone, head and image size, but it does depend on what else the machine
    is doing: measure when no training runs on the same device."""
    run = open_run(run_dir)
    if not run.best_checkpoint.exists():
        return None
    device = torch.device(device)
    loaded = load_run_model(run.path, device=device)
    image_size = loaded.model.info.sizes(loaded.config.get("image_size"))[0]
    key = f"{_device_label(device)}@{image_size}"
    cache = read_json(run.path / SPEED_FILE, {}, dict)
    if not refresh and isinstance(cache.get(key), dict) and cache[key].get("ms_per_image"):
        return float(cache[key]["ms_per_image"])
    ms = time_model(loaded.model, image_size, device)
    cache[key] = {
        "ms_per_image": ms,
        "measured": time.time(),
        "device": str(device),
        "image_size": image_size,
        "torch": torch.__version__,
    }
    atomic_write_json(run.path / SPEED_FILE, cache)
    return ms


# --------------------------------------------------------------------------------------
# Leaderboard and curves
# --------------------------------------------------------------------------------------


def leaderboard(
    run_dirs: Iterable[str | Path], device: str | torch.device = "cpu", measure_speed: bool = True
) -> list[dict]:
    """One row per run, best validation accuracy first (unfinished runs last).

    Row keys: run, path, backbone, backbone_title, strategy, state, reason,
    epochs_done, epochs, trainable_params, total_params, best_val_accuracy,
    macro_f1, training_seconds, ms_per_image, device (where it trained).
    ms_per_image is measured (or read from speed.json) for runs that have
    ended with a whole saved model; None for the others or with
    measure_speed=False. Each run is read on its own: a damaged one is a row
    with state "damaged" and the reason, and never hides the others.
    """
    rows = []
    for run_dir in run_dirs:
        try:
            run = open_run(run_dir)
        except FileNotFoundError:  # deleted since it was listed
            continue
        rows.append(_leaderboard_row(run, device, measure_speed))
    rows.sort(key=lambda r: (r["best_val_accuracy"] is None, -(r["best_val_accuracy"] or 0.0), r["run"]))
    return rows


def _leaderboard_row(run, device, measure_speed: bool) -> dict:
    summary, status = run.summary(), run.status
    evaluation = run.evaluation or {}
    state = summary["state"]
    ms = None
    if state not in ACTIVE_STATES + ("damaged",) and checkpoint_problem(run.best_checkpoint) is None:
        ms = _cached_speed(run.path, device)
        if ms is None and measure_speed:
            try:
                ms = inference_ms(run.path, device)
            except Exception:  # noqa: BLE001 - a model that cannot be timed leaves its cell empty
                ms = None
    macro_f1 = evaluation.get("macro_f1", status.get("macro_f1"))
    return {
        "run": run.name,
        "path": str(run.path),
        "backbone": summary["backbone"],
        "backbone_title": _backbone_title(summary["backbone"]),
        "strategy": summary["strategy"],
        "data": summary["data"],  # the picture folder: accuracies rank only between runs on the same one
        "adapted_from": summary.get("adapted_from"),  # a kept adapted model: its source run, folder and method
        "created": summary["created"],
        "state": state,
        "reason": summary["reason"],
        "epochs_done": summary["epochs_done"],
        "epochs": summary["epochs"],
        "trainable_params": _number(status.get("trainable_params")),
        "total_params": _number(status.get("total_params")),
        "best_val_accuracy": summary["best_val_accuracy"],
        "macro_f1": _number(macro_f1),
        "training_seconds": summary["seconds"],
        "ms_per_image": ms,
        "device": summary["device_name"] or summary["device"],
    }


def _backbone_title(backbone) -> str | None:
    try:
        return get_backbone(backbone).title
    except Exception:  # noqa: BLE001 - an unknown or damaged name is shown as it is
        return None if backbone is None else str(backbone)


def _number(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _cached_speed(run_dir: Path, device) -> float | None:
    """A speed.json entry for this device, without loading the model."""
    cache = read_json(Path(run_dir) / SPEED_FILE, {}, dict)
    prefix = _device_label(torch.device(device)) + "@"
    for key, entry in cache.items():
        if key.startswith(prefix) and isinstance(entry, dict) and _number(entry.get("ms_per_image")):
            return float(entry["ms_per_image"])
    return None


def curves(run_dirs: Iterable[str | Path]) -> list[dict]:
    """Per-epoch metrics of the runs in long format, one row per (run, epoch, metric):
    {"run", "label", "backbone", "strategy", "epoch", "metric", "kind" ("loss" |
    "accuracy"), "split" ("train" | "val"), "value"}. None for a kept adapted
    model: it did not train (one kept before that was said holds a copy of its
    source's epochs, which are not its own)."""
    rows = []
    for run_dir in run_dirs:
        try:
            run = open_run(run_dir)
        except FileNotFoundError:
            continue
        if isinstance(run.status.get("adapted_from"), dict):
            continue
        config = run.config
        label = f"{config.get('backbone')} · {config.get('strategy')} · {run.name[:15]}"
        for entry in run.metrics:
            for metric in METRICS:
                if _number(entry.get(metric)) is None:
                    continue
                split, kind = metric.split("_", 1)
                rows.append(
                    {
                        "run": run.name,
                        "label": label,
                        "backbone": config.get("backbone"),
                        "strategy": config.get("strategy"),
                        "epoch": int(entry["epoch"]),
                        "metric": metric,
                        "kind": kind,
                        "split": split,
                        "value": float(entry[metric]),
                    }
                )
    return rows


# --------------------------------------------------------------------------------------
# Sweeps: one run per backbone (and strategy)
# --------------------------------------------------------------------------------------


def sweep_configs(base_config, backbones: Sequence[str], strategies: Sequence[str] | None = None) -> list:
    """One TrainConfig per (backbone, strategy), everything else as in base_config.
    strategies None: the base config's strategy. Raises ValueError for an unknown
    backbone or strategy before anything is queued."""
    backbones = list(dict.fromkeys(str(b).strip().lower() for b in backbones if str(b).strip()))
    strategies = list(dict.fromkeys(str(s).strip().lower() for s in (strategies or [base_config.strategy])))
    if not backbones:
        raise ValueError("Choose at least one backbone to compare.")
    for b in backbones:
        get_backbone(b)  # raises a readable ValueError
    for s in strategies:
        if s == "custom":
            raise ValueError("A sweep cannot use the 'custom' strategy: its blocks differ per backbone.")
        freeze_plan_for(["stem", "stage1", "pool", "head"], {"strategy": s})  # raises for an unknown strategy
    return [
        dataclasses.replace(base_config, backbone=b, strategy=s, trained_blocks=None)
        for b in backbones
        for s in strategies
    ]


def spread_over_gpus(configs: list, gpus: int | None = None) -> list:
    """With several GPUs and the device left to "auto", the runs go to GPU 0,
    1, ... in turn: the job manager keeps one queue per device, so one run
    trains on each GPU at the same time. One GPU or none: unchanged (one after
    another, as before)."""
    gpus = torch.cuda.device_count() if gpus is None else gpus
    if gpus < 2:
        return configs
    return [
        dataclasses.replace(c, device=f"cuda:{i % gpus}") if c.device == "auto" else c for i, c in enumerate(configs)
    ]


def queue_sweep(manager, base_config, backbones: Sequence[str], strategies: Sequence[str] | None = None) -> list:
    """Queue one run per (backbone, strategy) on `manager` (a JobManager). Jobs
    for the same device run one after another in this order. Each run folder
    gets a sweep.json naming the sweep, so sweep_runs finds them after a restart.
    Returns the jobs."""
    configs = spread_over_gpus(sweep_configs(base_config, backbones, strategies))
    sweep_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    jobs = []
    for index, config in enumerate(configs):
        job = manager.submit(config)
        atomic_write_json(
            Path(job.run_dir) / SWEEP_FILE,
            {
                "sweep": sweep_id,
                "index": index,
                "of": len(configs),
                "backbone": config.backbone,
                "strategy": config.strategy,
                "backbones": [c.backbone for c in configs],
                "strategies": sorted({c.strategy for c in configs}),
                "data_dir": config.data_dir,
            },
        )
        jobs.append(job)
    return jobs


def sweep_of(run_dir: str | Path) -> dict | None:
    """The sweep.json of a run, or None when it was not part of a sweep."""
    return read_json(Path(run_dir) / SWEEP_FILE, None, dict)


def sweep_runs(runs_dir: str | Path, sweep_id: str) -> list:
    """The runs of one sweep, in the order they were queued."""
    runs = [r for r in RunStore(runs_dir).list() if (sweep_of(r.path) or {}).get("sweep") == sweep_id]
    return sorted(runs, key=lambda r: _number(sweep_of(r.path).get("index")) or 0)


def latest_sweep(runs_dir: str | Path) -> dict | None:
    """The newest sweep in the runs folder, read from the run folders' sweep.json
    (so a page finds it again after a reload or a restart): {"id", "runs"
    (run names in the order they were queued)}, or None."""
    runs = RunStore(runs_dir).list()  # newest first
    sweeps = {run.name: (sweep_of(run.path) or {}) for run in runs}
    newest = next((s.get("sweep") for s in sweeps.values() if s.get("sweep")), None)
    if newest is None:
        return None
    members = [name for name, s in sweeps.items() if s.get("sweep") == newest]
    members.sort(key=lambda name: _number(sweeps[name].get("index")) or 0)
    return {"id": newest, "runs": members}
