"""python -m bench: time the tutorial's plain loop (a) and Transfer Studio's
engine (b) side by side, in one process, on the same data, device, backbone,
strategy, epochs and seed, and print one table.

For each of a linear probe and a fine-tune of the last blocks it prints the
seconds, the images per second (training images x epochs / seconds), the best
val accuracy and the ratio (a)/(b). For the linear probe it also times one
bare forward pass of the backbone over every image (the floor: no method can
train a probe without it) and prints ours / floor.

(b) starts from an empty feature cache in a fresh temporary folder, so the
first pass over the images is paid for; "(b) warm cache" is a second run that
finds it (another head or learning rate on the same data would, too).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"

# Targets from the issue, for 10 epochs of mobilenet_v2 on hymenoptera.
LINEAR_SPEEDUP = 10.0
FLOOR_RATIO = 1.5
FINETUNE_SPEEDUP = 1.5


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
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    p.add_argument("--finetune", default="last-2", help="the fine-tune strategy (default last-2)")
    p.add_argument(
        "--only",
        choices=["linear", "finetune", "presets"],
        help="run one of the comparisons: the tutorial loop against a linear probe or a fine-tune; or "
        "(only this way) every preset, with its defaults, against fastai's fine_tune",
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
        "--quick", action="store_true", help="a smoke run: 8 images per class and 2 epochs (figures mean little)"
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
    from core.config import TrainConfig
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
    }


# --- the floor ----------------------------------------------------------------------


def bare_forward_seconds(data: str, backbone: str, device_name: str, amp: bool = True) -> dict:
    """One forward pass of the backbone over every train and val image, in
    inference mode, with the images already decoded and transformed in memory
    (decoding is not counted), in the engine's batch size, memory layout and
    precision. One warm-up batch first, not counted. Nothing trains a linear
    probe on these images without at least this.

    Timed twice: the backbone as it is (the floor), and with BatchNorm folded
    into the convolutions, which is what the engine's feature pass runs."""
    import torch

    from core.devices import autocast_dtype, inference_batch_size, pick_device, use_channels_last
    from core.features import inference_blocks
    from core.images import open_rgb
    from core.models import build_model
    from core.scan import scan_folder

    device = pick_device(device_name)
    report = scan_folder(data)
    model = build_model(backbone, len(report.classes)).eval().to(device)
    info = model.info
    tf = info.transforms()
    images = torch.stack([tf(open_rgb(p, info.resize_size)) for p, _ in report.train + report.val])
    channels_last = use_channels_last(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    dtype = autocast_dtype(device, amp)
    batch = inference_batch_size(device)
    folded = inference_blocks(model, 0, len(model.block_names), channels_last)

    def forward(net, x):
        x = x.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            return net(x)

    def timed(net) -> float:
        with torch.inference_mode():
            forward(net, images[:batch])  # warm-up: kernels picked, memory allocated
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            for i in range(0, len(images), batch):
                forward(net, images[i : i + batch])
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            return time.perf_counter() - started

    return {
        "seconds": timed(model),
        "folded_seconds": timed(folded),
        "images": len(images),
        "batch_size": batch,
        "channels_last": channels_last,
        "precision": str(dtype or torch.float32).replace("torch.", ""),
    }


# --- the table ----------------------------------------------------------------------


def _median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def _row(label: str, seconds: float, cpu: float | None, images: int | None, acc: float | None, ratio: str = "") -> str:
    cpu_text = f"{cpu:9.1f}" if cpu is not None else " " * 9
    ips = f"{images / seconds:9.1f}" if images else " " * 9
    acc_text = f"{acc:8.3f}" if acc is not None else " " * 8
    return f"  {label:<34}{seconds:9.1f}{cpu_text}{ips}{acc_text}  {ratio}"


def main(argv=None) -> int:
    args = _parse(argv)
    if "TORCH_HOME" not in os.environ and (SHARED / "torch-home").is_dir():
        os.environ["TORCH_HOME"] = str(SHARED / "torch-home")  # the offline weights beside the checkout
    sys.path.insert(0, str(REPO))
    from bench.presets import compare_presets, print_presets
    from bench.tutorial import train_tutorial
    from core.devices import pick_device

    device = pick_device(args.device)
    data = Path(args.data).resolve()
    if not (data / "train").is_dir() or not (data / "val").is_dir():
        raise SystemExit(f"{data} needs train/ and val/ folders of classes (the tutorial's ImageFolder layout)")
    epochs = 2 if args.quick else args.epochs
    work = Path(tempfile.mkdtemp(prefix="transfer-studio-bench-"))
    try:
        if args.quick:
            data = _small_copy(data, work / "data", per_class=8)
        machine = _machine(device)
        _say(f"Transfer Studio benchmark: {args.backbone} on {data}, {epochs} epochs, seed {args.seed}")
        _say(
            f"device: {machine['device']}; CPU: {machine['cpu']}, {machine['cpu_count']} cores, "
            f"torch {machine['torch']} with {machine['torch_threads']} threads; {_load()}"
        )
        results: dict = {
            "machine": machine,
            "data": str(data),
            "backbone": args.backbone,
            "epochs": epochs,
            "seed": args.seed,
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        plans = [("linear", "linear")] if args.only in (None, "linear") else []
        plans += [("finetune", args.finetune)] if args.only in (None, "finetune") else []
        for name, strategy in plans:
            runs: dict[str, list[dict]] = {"a": [], "b": [], "b_warm": [], "floor": []}
            for rep in range(args.repeat):
                # Alternate which loop goes first, so a change in the machine's
                # load during the benchmark does not favour one side.
                order = ["a", "b"] if rep % 2 == 0 else ["b", "a"]
                for which in order:
                    if which == "a":
                        _say(f"  [{name} {rep + 1}/{args.repeat}] (a) tutorial loop, {strategy} ...  ({_load()})")
                        runs["a"].append(
                            train_tutorial(str(data), args.backbone, strategy, epochs, args.seed, device, log=_say)
                        )
                    else:
                        cache = work / f"cache-{name}-{rep}"  # empty: (b) pays for the first pass
                        _say(
                            f"  [{name} {rep + 1}/{args.repeat}] (b) Transfer Studio, {strategy}, cold cache ...  ({_load()})"
                        )

                        def engine(strategy=strategy, epochs=epochs, cache=cache):
                            return run_engine(
                                str(data),
                                args.backbone,
                                strategy,
                                epochs,
                                args.seed,
                                args.device,
                                cache,
                                work / "runs",
                                amp=not args.no_amp,
                            )

                        runs["b"].append(engine())
                        if name == "linear":
                            _say(f"  [{name} {rep + 1}/{args.repeat}] (b) again, warm cache ...")
                            runs["b_warm"].append(engine())  # the same run, its features now stored
                            _say(f"  [{name} {rep + 1}/{args.repeat}] bare forward pass (floor) ...")
                            runs["floor"].append(
                                bare_forward_seconds(str(data), args.backbone, args.device, amp=not args.no_amp)
                            )
            results[name] = {"strategy": strategy, **{k: v for k, v in runs.items() if v}}

        _say("")
        _say(
            f"Results ({f'median of {args.repeat} runs' if args.repeat > 1 else 'one run each'}; "
            f"images/s = training images x epochs / seconds; {_load()})"
        )
        _say(f"  {'':<34}{'seconds':>9}{'CPU s':>9}{'images/s':>9}{'val acc':>8}  ratio (a)/(b) in seconds [in CPU s]")
        checks = []
        for name in ("linear", "finetune"):
            if name not in results:
                continue
            r = results[name]
            a_s, b_s = _median(r["a"], "seconds"), _median(r["b"], "seconds")
            a_cpu, b_cpu = _median(r["a"], "cpu_seconds"), _median(r["b"], "cpu_seconds")
            a_acc, b_acc = _median(r["a"], "val_accuracy"), _median(r["b"], "val_accuracy")
            title = "linear probe" if name == "linear" else f"fine-tune ({r['strategy']}, augmented)"
            _say(f"{title}")
            _say(_row("(a) tutorial loop", a_s, a_cpu, r["a"][0]["train_images"] * epochs, a_acc))
            _say(
                _row(
                    "(b) Transfer Studio, cold cache",
                    b_s,
                    b_cpu,
                    r["b"][0]["train_images"] * epochs,
                    b_acc,
                    f"{a_s / b_s:.1f}x [{a_cpu / b_cpu:.1f}x]",
                )
            )
            speedup = a_s / b_s
            if name == "linear":
                w_s, w_cpu = _median(r["b_warm"], "seconds"), _median(r["b_warm"], "cpu_seconds")
                f_s = _median(r["floor"], "seconds")
                _say(
                    _row(
                        "(b) again, warm feature cache",
                        w_s,
                        w_cpu,
                        r["b"][0]["train_images"] * epochs,
                        _median(r["b_warm"], "val_accuracy"),
                        f"{a_s / w_s:.1f}x [{a_cpu / w_cpu:.1f}x]",
                    )
                )
                ff_s = _median(r["floor"], "folded_seconds")
                floor = r["floor"][0]
                _say(
                    _row(
                        f"bare forward pass, {floor['images']} images",
                        f_s,
                        None,
                        None,
                        None,
                        f"(b)/floor = {b_s / f_s:.2f}x",
                    )
                )
                _say(_row("  the same, BatchNorm folded", ff_s, None, None, None, f"(b)/this = {b_s / ff_s:.2f}x"))
                _say(
                    f"  (forward passes: {floor['precision']}, batch {floor['batch_size']}, "
                    f"{'channels-last' if floor['channels_last'] else 'NCHW'}, images already in memory; "
                    f"(b)'s feature pass, decoding included: {_median(r['b'], 'feature_seconds'):.1f} s)"
                )
                checks.append((f"linear probe >= {LINEAR_SPEEDUP:g}x faster than (a)", speedup >= LINEAR_SPEEDUP))
                checks.append(("linear probe val accuracy >= (a)'s", b_acc >= a_acc))
                checks.append((f"linear probe within {FLOOR_RATIO:g}x of the floor", b_s / f_s <= FLOOR_RATIO))
            else:
                checks.append((f"fine-tune >= {FINETUNE_SPEEDUP:g}x faster than (a)", speedup >= FINETUNE_SPEEDUP))
        if args.only == "presets":  # its own comparison: five trainings and fastai's
            results["presets"] = compare_presets(
                str(data),
                args.backbone,
                [p.strip() for p in args.presets.split(",") if p.strip()],
                epochs,
                args.seed,
                device,
                args.device,
                work,
                amp=not args.no_amp,
                run_engine=run_engine,
                log=_say,
            )
            checks += print_presets(results["presets"], log=_say)
        if args.quick:
            _say("(--quick: a smoke run on 8 images per class; the targets are for the full run)")
        else:
            _say("Targets: " + "; ".join(f"{text}: {'yes' if ok else 'NO'}" for text, ok in checks))
        results["checks"] = {text: ok for text, ok in checks}
        results["ended"] = time.strftime("%Y-%m-%d %H:%M:%S")
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2, default=str))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
