"""The fine-tuning presets side by side with fastai's `fine_tune` (c).

Each of Transfer Studio's presets, with its defaults (head-first epoch,
discriminative rates, warm-up, BatchNorm as the batch size calls for), on
the same folder, backbone, seed and number of passes as fastai's
`vision_learner(...).fine_tune(N)`: seconds and best val accuracy for each,
and whether each fine-tuning preset reaches the linear probe's and fastai's
val accuracy.
"""

from __future__ import annotations

import time
from pathlib import Path

PRESETS = ("linear", "last-2", "full", "gradual", "discriminative")


def compare_presets(
    data: str,
    backbone: str,
    presets: list[str],
    epochs: int,
    seed: int,
    device,
    device_name: str,
    work: Path,
    amp: bool,
    run_engine,
    log=print,
) -> dict:
    """`run_engine`: bench.__main__'s, which trains one preset with the engine."""
    from bench.fastai_baseline import available, train_fastai

    rows = {}
    for preset in presets:
        log(f"  [presets] Transfer Studio, {preset} ...")
        rows[preset] = run_engine(
            data, backbone, preset, epochs, seed, device_name, work / f"cache-{preset}", work / "runs", amp=amp
        )
    fastai = None
    if available():
        log("  [presets] (c) fastai vision_learner(...).fine_tune ...")
        fastai = train_fastai(data, backbone, epochs, seed, device, log=log)
    else:
        log("  [presets] fastai is not installed (pip install 'transfer-studio[bench]'): no (c) row")
    return {"rows": rows, "fastai": fastai, "epochs": epochs, "ended": time.strftime("%Y-%m-%d %H:%M:%S")}


def print_presets(result: dict, log=print) -> list[tuple[str, bool]]:
    """The table; returns the checks (text, passed)."""
    rows, fastai = result["rows"], result["fastai"]
    log(f"presets with their defaults, {result['epochs']} passes each (val acc: the best epoch's)")
    log(f"  {'':<34}{'seconds':>9}{'CPU s':>9}{'val acc':>8}")
    for preset, r in rows.items():
        log(f"  {'Transfer Studio, ' + preset:<34}{r['seconds']:9.1f}{r['cpu_seconds']:9.1f}{r['val_accuracy']:8.3f}")
    if fastai:
        log(
            f"  {'(c) fastai fine_tune':<34}{fastai['seconds']:9.1f}{fastai['cpu_seconds']:9.1f}"
            f"{fastai['val_accuracy']:8.3f}  (last epoch {fastai['final_val_accuracy']:.3f})"
        )
    checks = []
    probe = rows.get("linear", {}).get("val_accuracy")
    for preset, r in rows.items():
        if preset == "linear":
            continue
        if probe is not None:
            checks.append((f"{preset} >= the linear probe", r["val_accuracy"] >= probe))
        if fastai:
            checks.append((f"{preset} >= fastai's fine_tune", r["val_accuracy"] >= fastai["val_accuracy"]))
    return checks
