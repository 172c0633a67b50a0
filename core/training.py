"""Training: a config, a device, and the loop that writes a run as it goes.

`run_job(job)` is what a background thread runs. It scans the data, builds the
model and its freeze plan, trains, and writes every epoch's metrics and a
checkpoint to the run folder, reporting progress to the `Job` (never to a
page). Anything that goes wrong ends the job as "failed" with a reason a person
can act on; a stop request ends it as "stopped" before the next batch.
"""
from __future__ import annotations

import math
import os
import random
import socket
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from . import evaluation
from .data import DataFolderError, ImageDataset, collate_skip_broken, make_transform, scan_folder
from .features import cache_key, cached_prefix_features
from .jobs import Job
from .models import (
    WeightsUnavailableError,
    apply_freeze_plan,
    build_model,
    count_parameters,
    get_backbone,
    make_freeze_plan,
    parameter_groups,
    HeadConfig,
    FreezePlan,
)
from .runs import Run, RunStore, open_run

OPTIMIZERS = {
    "sgd": "SGD with momentum: the classic; steady, needs a larger learning rate (e.g. 0.01).",
    "adam": "Adam: adapts the step per weight; a safe default.",
    "adamw": "AdamW: Adam with proper weight decay; the usual choice for fine-tuning.",
    "rmsprop": "RMSprop: an older adaptive method, used to train MobileNet and EfficientNet.",
}
SCHEDULES = {
    "constant": "The learning rate stays the same.",
    "step": "The learning rate drops to a tenth every third of the epochs.",
    "cosine": "The learning rate glides down to zero along a cosine curve.",
    "onecycle": "The learning rate warms up, then comes down (one-cycle policy).",
}


class TrainingError(Exception):
    """A problem a user can fix; its message says what to do."""


@dataclass
class TrainConfig:
    data_dir: str
    backbone: str = "mobilenet_v2"
    init: str = "pretrained"  # "pretrained", "random", or a path to a weights file
    strategy: str = "linear"  # linear | last-N | full | gradual | discriminative | custom
    trained_blocks: dict | None = None  # strategy "custom": block name -> trained
    unfreeze_every: int = 1  # gradual: epochs between unfreezing steps
    lr_factor: float = 0.5  # discriminative: each earlier block's rate is this times the next
    head_hidden: int = 0
    head_dropout: float = 0.0
    epochs: int = 5
    batch_size: int = 32
    image_size: int | None = None  # None: the backbone's own size
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    schedule: str = "cosine"
    augment: str = "auto"  # none | light | strong | auto (none for a linear probe, else light)
    label_smoothing: float = 0.0
    class_weighted: bool = False
    early_stopping: int = 0  # patience in epochs on val loss; 0 = off
    seed: int = 0
    val_fraction: float = 0.2
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    mixed_precision: bool = True  # CUDA only
    num_workers: int | None = None  # None: chosen from the machine
    feature_cache: bool = True  # reuse a frozen prefix's outputs when the transform is fixed
    cache_dir: str | None = None
    batch_loss_every: int = 5

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @property
    def resolved_augment(self) -> str:
        if self.augment != "auto":
            return self.augment
        return "none" if self.strategy == "linear" else "light"


# --- devices ------------------------------------------------------------------

def pick_device(preference: str = "auto") -> torch.device:
    """CUDA, then Apple MPS, then CPU, unless the user names one."""
    preference = (preference or "auto").lower()
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError("You chose the GPU (CUDA), but no CUDA GPU is available here. Choose 'auto' or 'cpu'.")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise TrainingError("You chose Apple's GPU (MPS), but it is not available here. Choose 'auto' or 'cpu'.")
    return device


def device_key(preference: str = "auto") -> str:
    try:
        device = pick_device(preference)
    except TrainingError:
        return str(preference)
    if device.type == "cuda":
        return f"cuda:{device.index if device.index is not None else torch.cuda.current_device()}"
    return device.type


def describe_device(device: torch.device) -> dict:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return {"device": str(device), "device_name": props.name,
                "device_memory_gb": round(props.total_memory / 2**30, 1)}
    if device.type == "mps":
        return {"device": "mps", "device_name": "Apple GPU (MPS)", "device_memory_gb": None}
    return {"device": "cpu", "device_name": f"CPU ({os.cpu_count()} cores)", "device_memory_gb": None}


def autocast_dtype(device: torch.device, enabled: bool):
    """bf16 where the GPU supports it (no loss scaling needed), else fp16."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def auto_num_workers(device: torch.device) -> int:
    # On a small CPU machine loader workers compete with the model for the same
    # cores, and forking from a server thread is fragile: decode in-process.
    cpus = os.cpu_count() or 1
    if device.type != "cuda" or cpus <= 4:
        return 0
    return min(8, cpus // 2)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --- setting a run up -----------------------------------------------------------

def prepare_run(config: TrainConfig, store: RunStore) -> Run:
    """Make the run folder and write its config before anything slow happens."""
    run = store.create(config.backbone, config.strategy)
    run.write_json("config.json", config.to_dict())
    run.update_status(state="queued", created=time.time(), epochs_done=0, **_owner())
    return run


def _owner() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname()}


def build_optimizer(name: str, groups: list[dict], config: TrainConfig) -> torch.optim.Optimizer:
    name = name.lower()
    if name == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=True)
    if name == "adam":
        return torch.optim.Adam(groups, lr=config.lr)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=config.lr, momentum=config.momentum, alpha=0.9, eps=1e-3)
    raise TrainingError(f"Unknown optimiser '{name}'. Choose one of: {', '.join(OPTIMIZERS)}.")


def build_scheduler(name: str, optimizer, total_steps: int, epochs: int):
    """Every schedule steps once per batch, so all of them behave the same when
    a run is stopped and resumed."""
    name = name.lower()
    total_steps = max(1, total_steps)
    if name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    if name == "step":
        every = max(1, total_steps // 3)
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=every, gamma=0.1)
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    if name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=total_steps + 1)
    raise TrainingError(f"Unknown schedule '{name}'. Choose one of: {', '.join(SCHEDULES)}.")


def class_weights(labels: list[int], num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights, mean 1, so rare classes count as much."""
    counts = torch.bincount(torch.tensor(labels, dtype=torch.long), minlength=num_classes).float()
    weights = counts.sum() / (num_classes * counts.clamp(min=1))
    return weights / weights.mean()


@dataclass
class _Data:
    """What the loop iterates: images through the whole model, or cached
    prefix features through blocks[start:]."""

    train_loader: DataLoader
    val_loader: DataLoader
    start_block: int = 0
    cache: dict = field(default_factory=dict)
    train_failed: list[int] = field(default_factory=list)
    val_failed: list[int] = field(default_factory=list)


def _tensor_loader(features, labels, indices, batch_size, shuffle, seed) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(features, labels, indices), batch_size=batch_size, shuffle=shuffle,
                      generator=generator, collate_fn=lambda b: (
                          torch.stack([x[0] for x in b]), torch.stack([x[1] for x in b]),
                          torch.stack([x[2] for x in b]), []))


def build_data(config: TrainConfig, report, model, plan: FreezePlan, device, job: Job) -> _Data:
    info = model.info
    image_size = info.image_size if (config.image_size is None or info.fixed_image_size) else int(config.image_size)
    resize_size = max(image_size, round(image_size * info.resize_size / info.image_size))
    augment = config.resolved_augment
    train_tf = make_transform(image_size, resize_size, info.mean, info.std, augment=augment, train=True)
    eval_tf = make_transform(image_size, resize_size, info.mean, info.std, augment="none", train=False)
    workers = config.num_workers if config.num_workers is not None else auto_num_workers(device)
    pin = device.type == "cuda"

    prefix = plan.frozen_prefix(None, config.epochs)
    use_cache = config.feature_cache and augment == "none" and prefix > 0
    if use_cache:
        transform_desc = {"image_size": image_size, "resize_size": resize_size,
                          "mean": list(info.mean), "std": list(info.std)}
        dtype = autocast_dtype(device, config.mixed_precision)
        out = {}
        for split, samples in (("train", report.train), ("val", report.val)):
            key = cache_key(samples=samples, backbone=config.backbone, init=config.init,
                            weights_file=info.weights_file, prefix=prefix, block_names=model.block_names,
                            transform_desc=transform_desc, seed=config.seed)
            job.update(phase=f"Computing features of the frozen layers ({split})", batch=0,
                       batches=len(samples))
            out[split] = cached_prefix_features(
                model, prefix, samples, eval_tf, device, key=key, cache_dir=config.cache_dir,
                batch_size=max(config.batch_size, 64), num_workers=workers, max_side=resize_size,
                should_stop=lambda: job.stop_requested,
                on_batch=lambda done, total: job.update(batch=done, batches=total),
                channels_last=device.type == "cuda", autocast_dtype=dtype)
        (tf, tl, ti, tbad, thit), (vf, vl, vi, vbad, vhit) = out["train"], out["val"]
        cache = {"used": True, "prefix_blocks": prefix, "frozen_blocks": model.block_names[:prefix],
                 "hit": bool(thit and vhit), "feature_shape": list(tf.shape[1:])}
        return _Data(_tensor_loader(tf, tl, ti, config.batch_size, True, config.seed),
                     _tensor_loader(vf, vl, vi, max(config.batch_size, 64), False, config.seed),
                     start_block=prefix, cache=cache, train_failed=tbad, val_failed=vbad)

    generator = torch.Generator().manual_seed(config.seed)
    train_loader = DataLoader(ImageDataset(report.train, train_tf, max_side=resize_size),
                              batch_size=config.batch_size, shuffle=True, num_workers=workers,
                              collate_fn=collate_skip_broken, pin_memory=pin, generator=generator,
                              persistent_workers=workers > 0, drop_last=False)
    val_loader = DataLoader(ImageDataset(report.val, eval_tf, max_side=resize_size),
                            batch_size=max(config.batch_size, 64), shuffle=False, num_workers=workers,
                            collate_fn=collate_skip_broken, pin_memory=pin, persistent_workers=workers > 0)
    reason = ("augmentation changes the images every epoch" if augment != "none"
              else "no leading block is frozen" if prefix == 0 else "turned off")
    return _Data(train_loader, val_loader, cache={"used": False, "why_not": reason})


# --- the loop ---------------------------------------------------------------------

def _to_device(x, device, channels_last):
    x = x.to(device, non_blocking=True)
    if x.dtype == torch.float16 and device.type == "cpu":
        x = x.float()  # cached half-precision features; CPU kernels want float32
    if channels_last and x.dim() == 4:
        x = x.to(memory_format=torch.channels_last)
    return x


@torch.no_grad()
def _validate(model, data: _Data, criterion, device, dtype, channels_last, job: Job):
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    for x, y, _idx, bad in data.val_loader:
        if job.stop_requested:
            raise InterruptedError
        if len(y) == 0:
            continue
        x, y = _to_device(x, device, channels_last), y.to(device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model.forward_from(data.start_block, x)
        total_loss += criterion(logits.float(), y).item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
    return total_loss / max(seen, 1), correct / max(seen, 1)


def train(config: TrainConfig, run: Run, job: Job, resume: bool = False) -> dict:
    """Train `config` into `run`, reporting to `job`. Returns the result dict.

    Raises TrainingError (and the data/weights errors) for problems a user can
    fix, InterruptedError when stopped."""
    started = time.time()
    seed_everything(config.seed)
    device = pick_device(config.device)
    job.update(state="running", phase="Reading the image folder", started=started, **describe_device(device))
    run.update_status(state="running", started=started, reason=None, **describe_device(device), **_owner())

    report = scan_folder(config.data_dir, val_fraction=config.val_fraction, seed=config.seed)
    if not report.can_train:
        raise TrainingError(" ".join(report.errors))
    run.write_json("scan.json", report.to_dict())
    run.write_json("classes.json", report.classes)
    job.add_skipped([s.path for s in report.skipped])

    info = get_backbone(config.backbone)
    job.update(phase=f"Loading {info.title}")

    def download_progress(done: int, total: int) -> None:
        job.update(phase=f"Downloading {info.title} weights", download={"file": info.weights_file, "done": done, "total": total})

    model = build_model(config.backbone, len(report.classes), init=config.init,
                        head=HeadConfig(hidden=config.head_hidden, dropout=config.head_dropout),
                        progress=download_progress)
    job.update(download=None)
    plan = make_freeze_plan(model, config.strategy, unfreeze_every=config.unfreeze_every,
                            lr_factor=config.lr_factor, trained=config.trained_blocks)
    apply_freeze_plan(model, plan, epoch=0)
    trainable, total = count_parameters(model)

    channels_last = device.type == "cuda"
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    dtype = autocast_dtype(device, config.mixed_precision)

    data = build_data(config, report, model, plan, device, job)
    job.update(feature_cache=data.cache)

    weights = class_weights([l for _, l in report.train], len(report.classes)).to(device) if config.class_weighted else None
    criterion = nn.CrossEntropyLoss(weight=weights, label_smoothing=config.label_smoothing)
    eval_criterion = nn.CrossEntropyLoss()
    optimizer = build_optimizer(config.optimizer, parameter_groups(model, plan, config.lr, config.weight_decay), config)
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    batches = len(data.train_loader)
    scheduler = build_scheduler(config.schedule, optimizer, batches * config.epochs, config.epochs)
    # fp16 needs loss scaling against underflow; bf16 and fp32 do not.
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)

    history: list[dict] = []
    start_epoch, best = 1, {"epoch": None, "val_accuracy": -1.0, "val_loss": math.inf}
    epochs_without_gain = 0
    if resume and run.last_checkpoint.exists():
        ckpt = torch.load(run.last_checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if "scaler" in ckpt and scaler.is_enabled():
            scaler.load_state_dict(ckpt["scaler"])
        history = [r for r in run.metrics if r["epoch"] <= ckpt["epoch"]]
        start_epoch = ckpt["epoch"] + 1
        best = ckpt.get("best", best)
        epochs_without_gain = ckpt.get("epochs_without_gain", 0)
        torch.set_rng_state(ckpt["rng"])
    job.set_history(history)
    run.update_status(trainable_params=trainable, total_params=total, feature_cache=data.cache,
                      freeze_plan=plan.describe(), blocks=model.block_names, resumed_from=start_epoch - 1 if resume else None)

    step = (start_epoch - 1) * batches
    images_done, train_started = 0, time.time()
    stopped_early = False
    for epoch in range(start_epoch, config.epochs + 1):
        apply_freeze_plan(model, plan, epoch=epoch - 1)  # gradual unfreezing moves on per epoch
        model.train()
        job.update(epoch=epoch, epochs=config.epochs, batch=0, batches=batches, phase="Training")
        epoch_loss, epoch_correct, epoch_seen, epoch_start = 0.0, 0, 0, time.time()
        for batch_index, (x, y, _idx, bad) in enumerate(data.train_loader, start=1):
            if job.stop_requested:
                raise InterruptedError
            if bad:
                job.add_skipped([report.train[i][0] for i in bad])
            if len(y) == 0:
                continue
            x, y = _to_device(x, device, channels_last), y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                logits = model.forward_from(data.start_block, x)
                loss = criterion(logits.float(), y)
            if not torch.isfinite(loss):
                raise TrainingError("The loss became infinite or NaN: the learning rate is probably too high. Try a smaller one.")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            epoch_loss += loss.item() * len(y)
            epoch_correct += (logits.argmax(1) == y).sum().item()
            epoch_seen += len(y)
            images_done += len(y)
            elapsed = time.time() - train_started
            speed = images_done / elapsed if elapsed > 0 else None
            remaining_batches = (config.epochs - epoch) * batches + (batches - batch_index)
            eta = remaining_batches * (elapsed / max(1, step - (start_epoch - 1) * batches))
            job.update(batch=batch_index, images_per_second=speed, eta_seconds=eta)
            if step % max(1, config.batch_loss_every) == 0 or batch_index == batches:
                job.add_batch_loss(step, loss.item())

        val_loss, val_acc = _validate(model, data, eval_criterion, device, dtype, channels_last, job)
        row = {
            "epoch": epoch,
            "train_loss": epoch_loss / max(epoch_seen, 1),
            "train_accuracy": epoch_correct / max(epoch_seen, 1),
            "val_loss": val_loss,
            "val_accuracy": val_acc,
            "lr": optimizer.param_groups[-1]["lr"],
            "trainable_params": count_parameters(model)[0],
            "seconds": time.time() - epoch_start,
        }
        history.append(row)

        improved = val_acc > best["val_accuracy"] or (val_acc == best["val_accuracy"] and val_loss < best["val_loss"])
        if improved:
            best = {"epoch": epoch, "val_accuracy": val_acc, "val_loss": val_loss}
            run.save_checkpoint("best.pt", _model_payload(model, config, report.classes, epoch))
        if val_loss < best.get("lowest_val_loss", math.inf) - 1e-4:
            best["lowest_val_loss"] = val_loss
            epochs_without_gain = 0
        else:
            epochs_without_gain += 1
        run.save_checkpoint("last.pt", {
            **_model_payload(model, config, report.classes, epoch),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "best": best, "epochs_without_gain": epochs_without_gain,
            "rng": torch.get_rng_state(),
        })
        # The epoch's metrics line is written after its checkpoints, so every
        # epoch in metrics.jsonl can be resumed from, whenever a kill lands.
        run.write_metrics(history)
        job.add_epoch(row)
        run.update_status(epochs_done=epoch, best_epoch=best["epoch"], best_val_accuracy=best["val_accuracy"])
        if config.early_stopping and epochs_without_gain >= config.early_stopping:
            stopped_early = True
            break

    job.update(phase="Evaluating the best model on the validation images", eta_seconds=0)
    best_ckpt = torch.load(run.best_checkpoint, map_location="cpu", weights_only=True)
    model.load_state_dict(best_ckpt["model"])
    result_eval = evaluation.evaluate_loader(model, data.val_loader, data.start_block, report.classes,
                                             [p for p, _ in report.val], device, dtype, channels_last)
    run.write_json("eval.json", result_eval)
    seconds = time.time() - started + (run.status.get("seconds_before_resume") or 0)
    result = {
        "run_dir": str(run.path),
        "val_accuracy": best["val_accuracy"],
        "best_epoch": best["epoch"],
        "macro_f1": result_eval["macro_f1"],
        "seconds": round(seconds, 2),
        "device": describe_device(device)["device_name"],
        "epochs_done": history[-1]["epoch"] if history else 0,
        "stopped_early": stopped_early,
        "feature_cache": data.cache.get("used", False),
        "trainable_params": trainable,
        "total_params": total,
        "skipped_files": len(job.snapshot()["skipped_files"]),
    }
    del model, optimizer, data
    release_device_memory(device)
    return result


def _model_payload(model, config: TrainConfig, classes: list[str], epoch: int) -> dict:
    return {"model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "config": config.to_dict(), "classes": list(classes), "epoch": epoch,
            "backbone": config.backbone}


def release_device_memory(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def friendly_reason(exc: BaseException) -> str:
    """One or two sentences a non-programmer can act on."""
    if isinstance(exc, (TrainingError, DataFolderError, WeightsUnavailableError)):
        return str(exc)
    if isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower():
        return "The GPU ran out of memory. Try a smaller batch size or image size, or a smaller backbone."
    if isinstance(exc, FileNotFoundError):
        return f"A file was missing: {exc}. Check that the data folder is still there."
    if isinstance(exc, ValueError):
        return f"A setting is not valid: {exc}"
    return f"Training stopped with an unexpected error ({type(exc).__name__}: {exc})."


def run_job(job: Job) -> None:
    """Run one job to its end. Never raises: every outcome lands in the job and
    the run's status.json."""
    run = open_run(job.run_dir)
    config = job.config
    if job.resume:  # the clock goes on from the time the run had already trained
        run.update_status(seconds_before_resume=run.status.get("seconds") or 0)
    # The run's files are written before the job says it ended, so whoever
    # waits on the job finds them final.
    try:
        result = train(config, run, job, resume=job.resume)
    except InterruptedError:
        reason = "Stopped by you. The last finished epoch is saved; you can resume it."
        _end_run(run, "stopped", reason)
        job.finish("stopped", reason)
    except BaseException as exc:  # noqa: BLE001 - a job must never take the app down
        import traceback

        reason = friendly_reason(exc)
        run.write_json("error.json", {"reason": reason, "traceback": traceback.format_exc()})
        _end_run(run, "failed", reason)
        job.finish("failed", reason)
    else:
        run.update_status(state="finished", reason=None, ended=time.time(), seconds=result["seconds"],
                          best_val_accuracy=result["val_accuracy"], best_epoch=result["best_epoch"],
                          macro_f1=result["macro_f1"])
        job.finish("finished", None, result)
    finally:
        release_device_memory(torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))


def _end_run(run: Run, state: str, reason: str) -> None:
    status = run.status
    started = status.get("started") or time.time()
    run.update_status(state=state, reason=reason, ended=time.time(),
                      seconds=round((status.get("seconds_before_resume") or 0) + time.time() - started, 2))


def train_blocking(config: TrainConfig, runs_dir: str | Path = "runs", on_epoch=None, run: Run | None = None,
                   resume: bool = False) -> tuple[Job, Run]:
    """Train in the calling thread (the command line). Same files, same job."""
    store = RunStore(runs_dir)
    run = run or prepare_run(config, store)
    job = Job(config, run_dir=str(run.path), resume=resume, on_epoch=on_epoch)
    run_job(job)
    return job, run
