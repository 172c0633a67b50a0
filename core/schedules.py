"""Optimisers and learning-rate schedules, and how a fine-tune is phased.

A careful fine-tune (fastai's `fine_tune`, Keras' transfer-learning guide)
does not hand a pretrained network one big learning rate from the first
step. The phases here:

1. the head alone (the plan's `head_epochs`, or gradual unfreezing's first
   epochs) at the full rate: the new layer stops sending random gradients
   into the pretrained blocks before they join in;
2. then, once pretrained blocks learn, the rates climb from zero over
   `warmup_epochs` and follow the chosen schedule over the remaining steps.

Every schedule steps once per batch, so all of them behave the same when a
run is stopped and resumed (core.resume moves a fresh one on to its step).
A linear probe, or a run saved before these settings existed (no head-first
epoch, no warm-up), gets the plain torch schedules exactly as before.
"""

from __future__ import annotations

import math

import torch

from .config import OPTIMIZERS, SCHEDULES, TrainConfig
from .errors import TrainingError

# Batches with fewer pictures than this measure BatchNorm statistics poorly:
# "auto" keeps the pretrained ones.
SMALL_BATCH = 64


def build_optimizer(name: str, groups: list[dict], config: TrainConfig) -> torch.optim.Optimizer:
    name = name.lower()
    if name == "sgd":
        return _fused(torch.optim.SGD, groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0)
    if name == "adam":
        return _fused(torch.optim.Adam, groups, lr=config.lr)
    if name == "adamw":
        return _fused(torch.optim.AdamW, groups, lr=config.lr)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=config.lr, momentum=config.momentum, alpha=0.9, eps=1e-3)
    raise TrainingError(f"Unknown optimiser '{name}'. Choose one of: {', '.join(OPTIMIZERS)}.")


def _fused(kind, groups: list[dict], **settings) -> torch.optim.Optimizer:
    """The optimiser's fused kernel (one pass over each weight instead of one
    per operation: an AdamW step of MobileNetV2 took a third of the time on
    a CPU here), where this torch has one for the weights' device; else the
    usual one."""
    devices = {p.device.type for group in groups for p in group["params"]}
    if devices <= {"cpu", "cuda"}:
        try:
            return kind(groups, fused=True, **settings)
        except (RuntimeError, TypeError, ValueError):  # no fused kernel for these weights here
            pass
    return kind(groups, **settings)


def build_scheduler(name: str, optimizer, total_steps: int, epochs: int, step_every: int = 0):
    """The plain schedules over `total_steps` (`step_every`: steps between
    the step schedule's drops; 0 = a third of the steps)."""
    name = name.lower()
    total_steps = max(1, total_steps)
    if name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    if name == "step":
        every = step_every if step_every > 0 else max(1, total_steps // 3)
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=every, gamma=0.1)
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    if name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=total_steps + 1
        )
    raise TrainingError(f"Unknown schedule '{name}'. Choose one of: {', '.join(SCHEDULES)}.")


def join_epoch(plan) -> int:
    """The first epoch (0-based) in which a pretrained block learns; 0 when
    they learn from the start, None when none ever does (a linear probe)."""
    later = plan.trained_at(10**9)
    if not any(on for name, on in later.items() if name != "head"):
        return None
    epoch = 0
    while not any(on for name, on in plan.trained_at(epoch).items() if name != "head"):
        epoch += 1
    return epoch


def phases(config: TrainConfig, plan, batches: int) -> dict:
    """The run's phases in steps: {"total", "join" (the step the pretrained
    blocks join in), "warmup" (steps of warm-up after it), "step_every"}."""
    total = max(1, batches * config.epochs)
    joins = join_epoch(plan)
    join = min(total, (joins or 0) * batches)
    warmup = 0
    if joins is not None and join < total:
        warmup = min(total - join, round(max(0.0, config.warmup_epochs) * batches))
    step_every = max(0, config.step_epochs) * batches
    return {"total": total, "join": join, "warmup": warmup, "step_every": step_every}


def _shape(name: str, done: int, length: int, step_every: int) -> float:
    """The schedule's multiplier `done` steps into a stretch of `length`."""
    p = min(1.0, done / max(1, length))
    if name == "constant":
        return 1.0
    if name == "cosine":
        return 0.5 * (1 + math.cos(math.pi * p))
    if name == "step":
        every = step_every if step_every > 0 else max(1, length // 3)
        return 0.1 ** (done // every)
    if name == "onecycle":  # up from 1/25 for 30 %, then down along a cosine
        if p < 0.3:
            return 1 / 25 + (1 - 1 / 25) * 0.5 * (1 - math.cos(math.pi * p / 0.3))
        return 1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * (p - 0.3) / 0.7))
    raise TrainingError(f"Unknown schedule '{name}'. Choose one of: {', '.join(SCHEDULES)}.")


def multiplier(name: str, step: int, total: int, join: int, warmup: int, step_every: int = 0) -> float:
    """The rate, as a fraction of each group's own, at `step` (0-based)."""
    if step < join:  # the head alone, at its full rate
        return 1.0
    done, length = step - join, max(1, total - join)
    factor = _shape(name, done, length, step_every)
    if warmup > 0 and name != "onecycle":  # one-cycle warms up by itself
        factor *= min(1.0, (done + 1) / warmup)
    return factor


def build_schedule(config: TrainConfig, optimizer, plan, batches: int):
    """The run's schedule: plain when there is no head-first phase and no
    warm-up, else phased (see the module's doc)."""
    name = config.schedule.lower()
    if name not in SCHEDULES:
        raise TrainingError(f"Unknown schedule '{name}'. Choose one of: {', '.join(SCHEDULES)}.")
    p = phases(config, plan, batches)
    if p["join"] == 0 and p["warmup"] == 0:
        return build_scheduler(name, optimizer, p["total"], config.epochs, p["step_every"])
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: multiplier(name, step, p["total"], p["join"], p["warmup"], p["step_every"])
    )


def frozen_batchnorm(setting: str, batch_size: int) -> bool:
    """Whether BatchNorm layers keep their pretrained statistics in blocks that learn."""
    if setting == "frozen":
        return True
    if setting == "train":
        return False
    return batch_size < SMALL_BATCH
