"""python -m bench: issue 15's targets, measured side by side in one run.

One process, the same data, device, backbone and seed for every side:

1. Fine-tune (`--finetune`, default last-2, with augmentation, `--epochs`,
   default 10): (a) the PyTorch tutorial's fine-tuning loop with the same
   blocks trained against (b) Transfer Studio's engine. Target: (b) at least
   4x faster, at equal or better val accuracy.
2. Full fine-tune, `--full-epochs` passes (default 6, the number fastai's
   `fine_tune(5)` makes: 1 frozen + 5): (c) fastai's `vision_learner(...)
   .fine_tune(5)` against (b) `--strategy full --epochs 6`, whose first epoch
   trains only the head (head_epochs=1). Target: (b) at least 2x faster, at
   equal or better val accuracy. Skipped, with the reason, without fastai.
3. Linear probe, cold (an empty feature cache in a fresh folder) against the
   floor: one bare forward pass of the backbone over every image with
   reading, decoding and transforming each file counted (bench/floor.py).
   Target: at most 1.2x the floor. Also shown, as information: the tutorial's
   linear probe, a second run with the features stored, and the floor with
   BatchNorm folded, without decoding, and the decoding alone.
4. Warm path (bench/warm.py): importing torch, `python -m core --help`, a CLI
   linear probe whose features are stored, and the same in the app. Targets:
   the CLI's time beyond importing torch under 1 s; the app's under 1 s.

Each row gives seconds, CPU seconds, images per second (training images x
epochs / seconds), the best val accuracy and the ratio; on a GPU also the
GPU's utilisation while the engine fine-tunes. The last lines say which
targets are met ("Targets: ... yes/NO") and how long the whole run took.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
SECTIONS = ("linear", "finetune", "full", "warm")  # what a run without --only measures


def _parse(argv):
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data",
        default=str(SHARED / "datasets" / "hymenoptera"),
        help="image folder with train/ and val/ class folders (default: ../shared/datasets/hymenoptera)",
    )
    p.add_argument(
        "--backbone",
        default="mobilenet_v2",
        help="a torchvision backbone (the tutorial loop builds it with torchvision); default mobilenet_v2",
    )
    p.add_argument("--epochs", type=int, default=10, help="epochs of the linear probe and the fine-tune (default 10)")
    p.add_argument(
        "--full-epochs",
        type=int,
        default=6,
        help="passes of the full fine-tune against fastai: fine_tune(N - 1) makes 1 frozen + N - 1 (default 6)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    p.add_argument("--finetune", default="last-2", help="the fine-tune strategy against the tutorial (default last-2)")
    p.add_argument(
        "--only",
        choices=[*SECTIONS, "presets"],
        help="run one comparison: linear (probe, floor), finetune (against the tutorial), full (against "
        "fastai), warm (the warm path); or (only this way) presets: every preset, with its defaults, "
        "against fastai's fine_tune",
    )
    p.add_argument(
        "--skip",
        default="",
        help="sections to leave out of a whole run, comma-separated (e.g. warm: on a GPU machine whose time is "
        "short, the warm path's targets are for the 2-core CPU)",
    )
    p.add_argument(
        "--presets",
        default="linear,last-2,full,gradual,discriminative",
        help="the presets compared with fastai's fine_tune (comma-separated)",
    )
    p.add_argument(
        "--repeat", type=int, default=1, help="run every measurement this many times, alternating, and report medians"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 8 images per class and 2 epochs, the full fine-tune too (figures mean little)",
    )
    p.add_argument(
        "--no-amp", action="store_true", help="run the engine (and the floor) in float32, without mixed precision"
    )
    p.add_argument("--json", help="also write the results to this file")
    return p.parse_args(argv)


def _say(*parts) -> None:
    print(*parts, flush=True)


def _small_copy(src: Path, dst: Path, per_class: int) -> Path:
    for split in ("train", "val"):
        for class_dir in sorted(d for d in (src / split).iterdir() if d.is_dir()):
            out = dst / split / class_dir.name
            out.mkdir(parents=True)
            for f in sorted(p for p in class_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))[:per_class]:
                shutil.copy(f, out / f.name)
    return dst


def _machine(device) -> dict:
    import torch

    from core.devices import describe_device

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "device": describe_device(device)["device_name"],
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def _load() -> str:
    try:
        return "load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())
    except OSError:
        return "load average unknown"


# --- (b) the engine ---------------------------------------------------------------


def run_engine(
    data: str,
    backbone: str,
    strategy: str,
    epochs: int,
    seed: int,
    device: str,
    cache_dir: Path,
    runs_dir: Path,
    amp: bool = True,
) -> dict:
    from bench.gpu_usage import GpuUtilisation
    from core.config import TrainConfig
    from core.devices import pick_device
    from core.jobs import train_blocking

    # Defaults otherwise: AdamW, cosine schedule, batch 32; "auto" augmentation
    # is none for a linear probe and light (random crop + flip, as in the
    # tutorial) for a fine-tune.
    config = TrainConfig(
        data_dir=data,
        backbone=backbone,
        strategy=strategy,
        epochs=epochs,
        seed=seed,
        device=device,
        cache_dir=str(cache_dir),
        mixed_precision=amp,
    )
    with GpuUtilisation(pick_device(device)) as gpu:  # samples only on a GPU
        started, cpu_started = time.perf_counter(), time.process_time()
        job, run = train_blocking(config, runs_dir=runs_dir)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    snap = job.snapshot()
    if snap["state"] != "finished":
        raise SystemExit(f"the engine's run {snap['state']}: {snap['reason']}")
    status = run.status
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "val_accuracy": snap["result"]["val_accuracy"],
        "feature_seconds": (status.get("feature_cache") or {}).get("seconds") or 0.0,
        "train_images": len(run.scan["train"]),
        "val_images": len(run.scan["val"]),
        "feature_cache": status.get("feature_cache"),
        "decoded_images": status.get("decoded_images"),
        "history": [r["val_accuracy"] for r in run.metrics],
        "gpu_utilisation": gpu.summary(),
    }


# --- the comparisons ---------------------------------------------------------------


def _engine(ctx, strategy: str, epochs: int, cache: Path) -> dict:
    args = ctx.args
    return run_engine(
        str(ctx.data), args.backbone, strategy, epochs, args.seed, args.device, cache, ctx.work / "runs", amp=ctx.amp
    )


def _alternate(ctx, sides: dict) -> dict[str, list[dict]]:
    """Run every side `--repeat` times, alternating which goes first so that a
    change in the machine's load during the benchmark favours neither. A side
    returns {list name: result}; the lists are gathered."""
    runs: dict[str, list[dict]] = {}
    for rep in range(ctx.args.repeat):
        order = list(sides) if rep % 2 == 0 else list(reversed(sides))
        for which in order:
            for key, result in sides[which](rep).items():
                runs.setdefault(key, []).append(result)
    return runs


def measure_linear(ctx) -> dict:
    from bench.floor import bare_forward_seconds
    from bench.tutorial import train_tutorial

    args, tag = ctx.args, "[linear]"

    def tutorial(rep):
        _say(f"  {tag} {rep + 1}/{args.repeat} (a) tutorial loop ...  ({_load()})")
        return {
            "a": train_tutorial(str(ctx.data), args.backbone, "linear", ctx.epochs, args.seed, ctx.device, log=_say)
        }

    def engine(rep):
        cache = ctx.work / f"cache-linear-{rep}"  # empty: (b) pays for the first pass
        _say(f"  {tag} {rep + 1}/{args.repeat} (b) Transfer Studio, cold cache ...  ({_load()})")
        cold = _engine(ctx, "linear", ctx.epochs, cache)
        _say(f"  {tag} {rep + 1}/{args.repeat} (b) again, warm cache ...")
        warm = _engine(ctx, "linear", ctx.epochs, cache)  # the same run, its features now stored
        _say(f"  {tag} {rep + 1}/{args.repeat} floor: bare forward passes, decoding counted ...")
        floor = bare_forward_seconds(str(ctx.data), args.backbone, args.device, amp=ctx.amp)
        return {"b": cold, "b_warm": warm, "floor": floor}

    return {"strategy": "linear", **_alternate(ctx, {"a": tutorial, "b": engine})}


def measure_finetune(ctx) -> dict:
    from bench.tutorial import train_tutorial

    args, strategy = ctx.args, ctx.args.finetune
    tag = f"[{strategy}]"

    def tutorial(rep):
        _say(f"  {tag} {rep + 1}/{args.repeat} (a) tutorial loop ...  ({_load()})")
        return {
            "a": train_tutorial(str(ctx.data), args.backbone, strategy, ctx.epochs, args.seed, ctx.device, log=_say)
        }

    def engine(rep):
        _say(f"  {tag} {rep + 1}/{args.repeat} (b) Transfer Studio, cold cache ...  ({_load()})")
        return {"b": _engine(ctx, strategy, ctx.epochs, ctx.work / f"cache-{strategy}-{rep}")}

    return {"strategy": strategy, **_alternate(ctx, {"a": tutorial, "b": engine})}


def measure_full(ctx) -> dict:
    from bench.fastai_baseline import available, train_fastai

    args, epochs, tag = ctx.args, ctx.full_epochs, "[full]"

    def fastai(rep):
        _say(f"  {tag} {rep + 1}/{args.repeat} (c) fastai fine_tune({epochs - 1}) ...  ({_load()})")
        return {"c": train_fastai(str(ctx.data), args.backbone, epochs, args.seed, ctx.device, log=_say)}

    def engine(rep):
        _say(f"  {tag} {rep + 1}/{args.repeat} (b) Transfer Studio, full, {epochs} epochs ...  ({_load()})")
        return {"b": _engine(ctx, "full", epochs, ctx.work / f"cache-full-{rep}")}

    skipped = None if available() else "fastai is not installed: pip install -e '.[bench]'"
    if skipped:
        _say(f"  {tag} (c) fastai: skipped ({skipped})")
    sides = {"c": fastai, "b": engine} if not skipped else {"b": engine}
    return {"strategy": "full", "epochs": epochs, "c": [], "skipped": skipped, **_alternate(ctx, sides)}


def measure_warm_path(ctx) -> dict:
    try:
        from bench.warm import measure_warm
    except ModuleNotFoundError as exc:
        if exc.name != "bench.warm":
            raise
        return {"runs": [], "skipped": "bench/warm.py missing"}
    runs = []
    for rep in range(ctx.args.repeat):
        _say(f"  [warm] {rep + 1}/{ctx.args.repeat} the warm path ...  ({_load()})")
        folder = ctx.work / f"warm-{rep}"
        folder.mkdir()
        try:
            runs.append(measure_warm(str(ctx.data), ctx.args.backbone, ctx.epochs, folder, log=_say))
        except Exception as exc:  # noqa: BLE001 - it runs last: the rows measured before it still print
            traceback.print_exc()
            return {"runs": [], "skipped": f"bench/warm.py failed: {type(exc).__name__}: {exc}"}
    return {"epochs": ctx.epochs, "runs": runs}


MEASURE = {"linear": measure_linear, "finetune": measure_finetune, "full": measure_full, "warm": measure_warm_path}


def _table(results: dict, ctx) -> list:
    """Prints every section measured; returns the targets' checks."""
    from bench.presets import print_presets
    from bench.table import header, print_finetune, print_full, print_linear, print_warm

    checks: list = []
    if any(name in results for name in ("linear", "finetune", "full")):
        header(_say)
    if "finetune" in results:
        checks += print_finetune(results["finetune"], ctx.epochs, _say)
    if "full" in results:
        checks += print_full(results["full"], _say)
    if "linear" in results:
        checks += print_linear(results["linear"], ctx.epochs, _say)
    if "warm" in results:
        checks += print_warm(results["warm"], _say)
    if "presets" in results:
        checks += print_presets(results["presets"], log=_say)
    return checks


def _header(ctx, machine: dict) -> None:
    args, full = ctx.args, ctx.full_epochs
    _say(
        f"Transfer Studio benchmark: {args.backbone} on {ctx.data}, seed {args.seed}; linear probe and "
        f"{args.finetune} fine-tune: {ctx.epochs} epochs; full fine-tune against fastai: {full} passes "
        f"(--full-epochs: fastai's fine_tune({full - 1}) = 1 frozen + {full - 1}, the engine's first epoch head-only)"
    )
    _say(
        f"device: {machine['device']}; CPU: {machine['cpu']}, {machine['cpu_count']} cores, "
        f"torch {machine['torch']} with {machine['torch_threads']} threads; {_load()}"
    )


def _stop_on_sigterm(signum, frame) -> None:
    raise KeyboardInterrupt  # handled like Ctrl+C: the finished sections are printed


def _write_json(path: str, results: dict) -> None:
    Path(path).write_text(json.dumps(results, indent=2, default=str))


def main(argv=None) -> int:
    began = time.perf_counter()
    args = _parse(argv)
    if "TORCH_HOME" not in os.environ and (SHARED / "torch-home").is_dir():
        os.environ["TORCH_HOME"] = str(SHARED / "torch-home")  # the offline weights beside the checkout
    sys.path.insert(0, str(REPO))
    from types import SimpleNamespace

    from bench.presets import compare_presets
    from bench.table import targets_line
    from core.devices import pick_device

    data = Path(args.data).resolve()
    if not (data / "train").is_dir() or not (data / "val").is_dir():
        raise SystemExit(f"{data} needs train/ and val/ folders of classes (the tutorial's ImageFolder layout)")
    if args.full_epochs < 1 or args.epochs < 1:
        raise SystemExit("--epochs and --full-epochs need at least 1")
    skipped = {name.strip() for name in args.skip.split(",") if name.strip()}
    if skipped - set(SECTIONS):
        raise SystemExit(f"--skip takes {', '.join(SECTIONS)}, not {', '.join(sorted(skipped - set(SECTIONS)))}")
    work = Path(tempfile.mkdtemp(prefix="transfer-studio-bench-"))
    try:
        ctx = SimpleNamespace(
            args=args,
            data=_small_copy(data, work / "data", per_class=8) if args.quick else data,
            device=pick_device(args.device),
            work=work,
            epochs=2 if args.quick else args.epochs,
            full_epochs=2 if args.quick else args.full_epochs,
            amp=not args.no_amp,
        )
        machine = _machine(ctx.device)
        _header(ctx, machine)
        results: dict = {
            "machine": machine,
            "data": str(ctx.data),
            "backbone": args.backbone,
            "epochs": ctx.epochs,
            "full_epochs": ctx.full_epochs,
            "seed": args.seed,
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        sections = SECTIONS if args.only is None else [name for name in SECTIONS if name == args.only]
        sections = [name for name in sections if name not in skipped]
        # A run cut short (timeout's SIGTERM on a lent GPU machine, Ctrl+C)
        # still prints and saves the sections it finished.
        signal.signal(signal.SIGTERM, _stop_on_sigterm)
        for name in sections:
            try:
                results[name] = MEASURE[name](ctx)
            except (KeyboardInterrupt, SystemExit) as exc:  # SystemExit: a training of the engine failed
                why = "stopped" if isinstance(exc, KeyboardInterrupt) else str(exc)
                _say(f"\nThe {name} section did not finish ({why}): the results below are the sections before it.")
                results["stopped_during"] = {"section": name, "why": why}
                break
            if args.json:  # after every section, so a run cut short leaves what it measured
                _write_json(args.json, results)
        if args.only == "presets":  # its own comparison: five trainings and fastai's
            presets = [p.strip() for p in args.presets.split(",") if p.strip()]
            results["presets"] = compare_presets(
                str(ctx.data),
                args.backbone,
                presets,
                ctx.epochs,
                args.seed,
                ctx.device,
                args.device,
                work,
                amp=ctx.amp,
                run_engine=run_engine,
                log=_say,
            )

        incomplete = " (incomplete)" if "stopped_during" in results else ""
        runs = f"median of {args.repeat} runs" if args.repeat > 1 else "one run each"
        _say("")
        _say(f"Results{incomplete} ({runs}; images/s = training images x epochs / seconds; {_load()})")
        checks = _table(results, ctx)
        quick = " (--quick: a smoke run on 8 images per class; the targets are for the full run)" if args.quick else ""
        _say(f"Targets{quick}: {targets_line(checks)}")
        wall = time.perf_counter() - began
        _say(f"The whole benchmark took {wall // 60:.0f} min {wall % 60:.0f} s ({_load()}).")
        results.update(checks={text: ok for text, ok in checks}, wall_seconds=wall)
        results["ended"] = time.strftime("%Y-%m-%d %H:%M:%S")
        if args.json:
            _write_json(args.json, results)
        return 1 if "stopped_during" in results else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
