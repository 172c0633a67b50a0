"""The benchmark's table: one section per comparison, and the targets each
section checks. A check is (text, passed), passed None when it was not
measured (with the reason in the text)."""

from __future__ import annotations

import statistics

from bench.gpu_usage import describe

# Issue 15's targets, for mobilenet_v2 on hymenoptera on a 2-core CPU.
FINETUNE_SPEEDUP = 4.0  # last-2 with augmentation, 10 epochs, against the tutorial's fine-tuning loop
FULL_SPEEDUP = 2.0  # full, 1 + 5 passes, against fastai's fine_tune(5)
FLOOR_RATIO = 1.2  # a cold linear probe against one forward pass with decoding counted
WARM_CLI_BEYOND_TORCH_S = 1.0  # a warm CLI linear probe, beyond importing torch
WARM_APP_S = 1.0  # a warm linear probe in the app, click to finished summary

LABEL = 40

# measure_warm's keys: the row's label, and the target with the check's words
WARM_ROWS = (
    ("import_torch_s", "import torch", None),
    ("help_s", "python -m core --help", None),
    ("cli_warm_s", "CLI linear probe, warm cache", None),
    ("cli_beyond_torch_s", "  beyond importing torch", (WARM_CLI_BEYOND_TORCH_S, "warm CLI beyond importing torch")),
    ("torch_optimizer_s", "import torch + build one optimizer", None),
    ("cli_beyond_optimizer_s", "  CLI beyond that", None),
    ("app_warm_s", "app: click to finished summary", (WARM_APP_S, "warm app, click to finished summary")),
)


def median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def row(label: str, seconds: float, cpu: float | None, images: int | None, acc: float | None, ratio: str = "") -> str:
    cpu_text = f"{cpu:9.1f}" if cpu is not None else " " * 9
    ips = f"{images / seconds:9.1f}" if images else " " * 9
    acc_text = f"{acc:8.3f}" if acc is not None else " " * 8
    return f"  {label:<{LABEL}}{seconds:9.1f}{cpu_text}{ips}{acc_text}  {ratio}".rstrip()


def header(log) -> None:
    log(f"  {'':<{LABEL}}{'seconds':>9}{'CPU s':>9}{'images/s':>9}{'val acc':>8}  ratio")


def _trained(label: str, runs: list[dict], epochs: int, ratio: str = "") -> str:
    return row(
        label,
        median(runs, "seconds"),
        median(runs, "cpu_seconds"),
        runs[0]["train_images"] * epochs,
        median(runs, "val_accuracy"),
        ratio,
    )


def _ratio(slow: list[dict], fast: list[dict], name: str) -> str:
    seconds = median(slow, "seconds") / median(fast, "seconds")
    cpu = median(slow, "cpu_seconds") / median(fast, "cpu_seconds")
    return f"{name} = {seconds:.1f}x [{cpu:.1f}x in CPU s]"


def _gpu(runs: list[dict], log) -> None:
    line = describe(runs[0].get("gpu_utilisation"))
    if line:
        log(f"  {line}")


def print_linear(r: dict, epochs: int, log) -> list:
    a, b, warm, floor = r["a"], r["b"], r["b_warm"], r["floor"]
    b_s = median(b, "seconds")
    log(f"linear probe, {epochs} epochs")
    log(_trained("(a) tutorial loop (information)", a, epochs))
    log(_trained("(b) Transfer Studio, cold cache", b, epochs, _ratio(a, b, "(a)/(b)")))
    log(_trained("(b) again, warm feature cache", warm, epochs, _ratio(a, warm, "(a)/(b)")))
    f = floor[0]
    f_s, ff_s = median(floor, "seconds"), median(floor, "folded_seconds")
    log(row(f"floor: forward pass, {f['images']} images", f_s, None, None, None, f"(b)/floor = {b_s / f_s:.2f}x"))
    log(row("  the same, BatchNorm folded", ff_s, None, None, None, f"(b)/this = {b_s / ff_s:.2f}x"))
    log(row(f"  decoding alone, {f['decode_threads']} threads", median(floor, "decode_seconds"), None, None, None))
    log(row("  forward pass alone, images in memory", median(floor, "in_memory_seconds"), None, None, None))
    log(row("    the same, BatchNorm folded", median(floor, "in_memory_folded_seconds"), None, None, None))
    log(
        f"  (floor: reading, decoding and the eval transform of every file counted, in {f['decode_threads']} "
        f"threads as the engine's (core.devices.decode_threads), overlapping the forward pass; {f['precision']}, "
        f"batch {f['batch_size']}, {'channels-last' if f['channels_last'] else 'NCHW'}; "
        f"(b)'s feature pass, decoding included: {median(b, 'feature_seconds'):.1f} s)"
    )
    return [(f"cold linear probe <= {FLOOR_RATIO:g}x the floor (decoding counted)", b_s / f_s <= FLOOR_RATIO)]


def print_finetune(r: dict, epochs: int, log) -> list:
    a, b, strategy = r["a"], r["b"], r["strategy"]
    log(f"fine-tune ({strategy}, augmented), {epochs} epochs")
    log(_trained("(a) tutorial loop, same blocks trained", a, epochs))
    log(_trained("(b) Transfer Studio, cold cache", b, epochs, _ratio(a, b, "(a)/(b)")))
    _gpu(b, log)
    speedup = median(a, "seconds") / median(b, "seconds")
    return [
        (f"{strategy} >= {FINETUNE_SPEEDUP:g}x faster than the tutorial loop", speedup >= FINETUNE_SPEEDUP),
        (f"{strategy} val accuracy >= the tutorial loop's", median(b, "val_accuracy") >= median(a, "val_accuracy")),
    ]


def print_full(r: dict, log) -> list:
    b, c, epochs = r["b"], r["c"], r["epochs"]
    log(
        f"full fine-tune, {epochs} passes (the engine: 1 head-only epoch + {epochs - 1}; "
        f"fastai: fine_tune({epochs - 1}) = 1 frozen + {epochs - 1})"
    )
    if c:
        log(_trained("(c) fastai fine_tune", c, epochs))
        log(_trained("(b) Transfer Studio, full", b, epochs, _ratio(c, b, "(c)/(b)")))
    else:
        log(_trained("(b) Transfer Studio, full", b, epochs))
        log(f"  (c) fastai fine_tune: skipped ({r['skipped']})")
    _gpu(b, log)
    if not c:
        return [(f"full against fastai ({r['skipped']})", None)]
    speedup = median(c, "seconds") / median(b, "seconds")
    return [
        (f"full >= {FULL_SPEEDUP:g}x faster than fastai's fine_tune", speedup >= FULL_SPEEDUP),
        ("full val accuracy >= fastai's", median(b, "val_accuracy") >= median(c, "val_accuracy")),
    ]


def print_warm(r: dict, log) -> list:
    runs = r.get("runs") or []
    if not runs:
        log(f"warm path: not measured ({r['skipped']})")
        return [(f"warm path ({r['skipped']})", None)]
    log(f"warm path (features stored), {r['epochs']} epochs")
    checks = []
    for key, label, target in WARM_ROWS:
        values = [run[key] for run in runs if run.get(key) is not None]
        seconds = statistics.median(values) if values else None
        figure = f"{seconds:9.2f}" if seconds is not None else f"{'-':>9}  not measured"
        log(f"  {label:<{LABEL}}{figure}" + (f"  target < {target[0]:g} s" if target else ""))
        if target:
            checks.append((f"{target[1]} < {target[0]:g} s", None if seconds is None else seconds < target[0]))
    return checks


def targets_line(checks: list) -> str:
    words = {True: "yes", False: "NO", None: "not measured"}
    return "; ".join(f"{text}: {words[ok]}" for text, ok in checks)
