"""Training: a config, a device, and the loop that writes a run as it goes.

`run_job(job)` is what a background thread runs. It scans the data, builds the
model and its freeze plan, trains, and writes every epoch's metrics and a
checkpoint to the run folder, reporting progress to the `Job` (never to a
page). Anything that goes wrong ends the job as "failed" with a reason a person
can act on; a stop request ends it as "stopped" before the next batch.
"""
from __future__ import annotations

import copy
import math
import os
import queue
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from . import evaluation
from .config import OPTIMIZERS, SCHEDULES, TrainConfig
from .errors import UserError
from .data import (BatchNormalizer, DataFolderError, DecodedImageCache, ImageDataset, NormalizedBatches,
                   ThreadedLoader, collate_skip_broken, scan_and_decode)
from .features import FeatureBatches, cache_key, cached_prefix_features, describe_cache, inference_blocks
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

class TrainingError(UserError):
    """A problem a user can fix; its message says what to do."""


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
    """The mixed-precision type on CUDA, or None for float32.

    bf16 where the GPU supports it (no loss scaling needed), else fp16 (with
    a GradScaler). CPUs stay in float32: only some have bf16 in hardware
    (AMX, AVX512-BF16), and there it would also shift the numbers a run
    reports (confidences by a percent or two) away from what float32
    predictions later give."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


# How many images a pass without gradients (feature cache, validation) puts
# through the model at once, per GiB of GPU memory: activations alone, no
# gradients kept. 16 per GiB gives 128 on an 8 GB card and the cap of 256 from
# 16 GB on; VGG-16 at 224 px, the hungriest backbone here, needs about 40 MB
# per image in half precision, so 16 of them fit in well under a GiB.
_INFERENCE_IMAGES_PER_GIB = 16


def _cuda_memory_gib(device: torch.device) -> float:
    return torch.cuda.get_device_properties(device).total_memory / 2**30


def inference_batch_size(device: torch.device) -> int:
    """Batch size for passes without gradients (features, validation).

    CPU: 64. Bigger batches stop paying on a CPU around there (the kernels
    already keep every core busy) and only cost memory. GPU: as many as its
    memory holds comfortably, so the GPU is not starved by small batches."""
    if device.type != "cuda":
        return 64
    return int(max(32, min(256, _INFERENCE_IMAGES_PER_GIB * _cuda_memory_gib(device))))


def auto_batch_size(device: torch.device) -> int:
    """Training batch size when the user leaves it to the machine.

    Training keeps every trained layer's activations for the backward pass,
    so it gets a quarter of the inference batch on a GPU (64 on a 16 GB card),
    and 32 on a CPU: the usual default, and larger batches are no faster there."""
    if device.type != "cuda":
        return 32
    return max(16, inference_batch_size(device) // 4)


def auto_num_workers(device: torch.device, in_memory: bool = False) -> int:
    """DataLoader worker processes for images read every epoch; 0 means
    threads in this process read them instead (ThreadedLoader).

    CPU (and Apple MPS): none. Threads read each batch with every core, then
    the model computes with every core; processes would only add start-up
    time and copies. With the decoded images in memory an image costs a
    millisecond or two of cropping against tens of milliseconds of model time.
    CUDA: the GPU outruns what threads can prepare while holding Python's GIL,
    so several processes do it, leaving a core for the training loop itself.
    With images in memory only augmentation is left, and 4 keep up."""
    cpus = os.cpu_count() or 1
    if device.type != "cuda" or cpus <= 2:
        return 0
    return min(4 if in_memory else 8, cpus - 1)


def decode_threads(device: torch.device) -> int:
    """Threads that read (decode, resize, crop) images in this process."""
    return max(1, min(8, os.cpu_count() or 1))


def read_ahead(device: torch.device) -> int:
    """Batches read while the model computes (see threaded_batches): on a GPU
    two, so it never waits; on a CPU none, because the model's threads and the
    reading threads would take turns on the same cores."""
    return 0 if device.type == "cpu" else 2


def use_channels_last(device: torch.device) -> bool:
    """Channels-last memory layout: faster convolutions with CUDA's tensor
    cores and with oneDNN on CPU (measured about 1.5x on MobileNetV2 here)."""
    return device.type in ("cuda", "cpu")


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
    """What the loop iterates. Training batches enter the model at block
    train_start and validation batches at val_start: 0 for images, k for the
    cached outputs of the frozen blocks[:k] (FeatureBatches)."""

    train_loader: object
    val_loader: object
    train_start: int = 0
    val_start: int = 0
    cache: dict = field(default_factory=dict)
    decoded: dict = field(default_factory=dict)
    train_failed: list[int] = field(default_factory=list)
    val_failed: list[int] = field(default_factory=list)


def build_data(config: TrainConfig, report, model, plan: FreezePlan, device, job: Job,
               decoded: DecodedImageCache | None = None, why_not_decoded: str | None = None) -> _Data:
    """The training and validation batches, as cheap as the plan allows.

    - Blocks frozen for the whole run (a prefix) need to run only once per
      image when the image is always the same: the validation images always
      (their transform is fixed), the training images when there is no
      augmentation. Their outputs are cached on disk (core.features).
    - `decoded`: the images, decoded by the scan (scan_and_decode) when they
      fit in memory. The feature pass reads them from there, and so do the
      epochs that put images through the model (augmented training images,
      or any image when nothing is frozen); without it, from disk.
    """
    info = model.info
    image_size, resize_size = info.sizes(config.image_size)
    augment = config.resolved_augment
    # The loaders give uint8 images; they are normalised a whole batch at a
    # time on the device (BatchNormalizer), not one by one.
    train_tf = info.transforms(config.image_size, augment=augment, train=True, normalize=False)
    eval_tf = info.transforms(config.image_size, normalize=False)
    normalizer = BatchNormalizer(info.mean, info.std, device, channels_last=use_channels_last(device))
    batch_size = config.batch_size or auto_batch_size(device)
    eval_batch = inference_batch_size(device)
    pin = device.type == "cuda"

    prefix = plan.frozen_prefix(None, config.epochs)
    cache_val = bool(config.feature_cache and prefix > 0)
    cache_train = cache_val and augment == "none"
    why_not_train = ("turned off" if not config.feature_cache
                     else "no leading block stays frozen for the whole run" if prefix == 0
                     else "augmentation changes the training images every epoch" if augment != "none" else None)

    # Images that go through the model every epoch keep their decoded pixels
    # for the whole run; the others only until the feature pass is done.
    every_epoch = [p for p, _ in report.train] if not cache_train else []
    every_epoch += [p for p, _ in report.val] if not cache_val else []
    if decoded is not None:
        decoded_record = {"used": True, "images": len(decoded), "megabytes": round(decoded.nbytes / 2**20, 1),
                          "short_side": resize_size, "read_every_epoch": len(every_epoch)}
    else:
        decoded_record = {"used": False, "why_not": why_not_decoded or "not asked for"}

    features: dict = {}
    if cache_val:
        transform_desc = {"image_size": image_size, "resize_size": resize_size, "mean": list(info.mean),
                          "std": list(info.std), "resize": f"{info.interpolation}, antialiased", "decode": "jpeg draft"}
        dtype = autocast_dtype(device, config.mixed_precision)
        sets = {"train": report.train} if cache_train else {}
        sets["val"] = report.val
        splits = {name: (samples, cache_key(samples=samples, backbone=config.backbone, init=config.init,
                                             weights_file=info.weights_file, prefix=prefix,
                                             block_names=model.block_names, transform_desc=transform_desc,
                                             seed=config.seed,
                                             precision=str(dtype or torch.float32).replace("torch.", "")))
                  for name, samples in sets.items()}
        job.update(phase="Computing features of the frozen layers", batch=0,
                   batches=sum(len(samples) for samples in sets.values()))
        began = time.time()
        features = cached_prefix_features(
            model, prefix, splits, eval_tf, device, cache_dir=config.cache_dir, batch_size=eval_batch, decoded=decoded,
            threads=decode_threads(device), ahead=read_ahead(device), max_side=resize_size, normalize=normalizer,
            channels_last=use_channels_last(device), autocast_dtype=dtype, should_stop=lambda: job.stop_requested,
            on_batch=lambda done, total: job.update(batch=done, batches=total))
        seconds = round(time.time() - began, 2)

    decoded = decoded.subset(every_epoch) if decoded is not None and every_epoch else None
    workers = config.num_workers if config.num_workers is not None else auto_num_workers(device, decoded is not None)

    def image_loader(samples, transform, size: int, shuffle: bool):
        dataset = ImageDataset(samples, transform, max_side=resize_size, decoded=decoded)
        if workers == 0:
            loader = ThreadedLoader(dataset, size, shuffle=shuffle, seed=config.seed, threads=decode_threads(device),
                                    ahead=read_ahead(device), pin_memory=pin)
        else:
            loader = DataLoader(dataset, batch_size=size, shuffle=shuffle, num_workers=workers,
                                collate_fn=collate_skip_broken, pin_memory=pin, persistent_workers=True,
                                generator=torch.Generator().manual_seed(config.seed))
        return NormalizedBatches(loader, normalizer)

    train_failed, val_failed = [], []
    if cache_train:
        tf, tl, ti, train_failed, _ = features["train"]
        train_loader = FeatureBatches(tf, tl, ti, batch_size, shuffle=True, seed=config.seed, device=device)
    else:
        train_loader = image_loader(report.train, train_tf, batch_size, shuffle=True)
    if cache_val:
        vf, vl, vi, val_failed, _ = features["val"]
        val_loader = FeatureBatches(vf, vl, vi, eval_batch, shuffle=False, seed=config.seed, device=device)
    else:
        val_loader = image_loader(report.val, eval_tf, eval_batch, shuffle=False)

    if cache_val:
        cache = {"used": True, "train": cache_train, "val": True, "prefix_blocks": prefix,
                 "frozen_blocks": model.block_names[:prefix],
                 "hit": all(out[4] for out in features.values()),
                 "feature_shape": list(features["val"][0].shape[1:]), "seconds": seconds}
        if why_not_train:
            cache["why_not"] = why_not_train  # why the training images do not use it
    else:
        cache = {"used": False, "why_not": why_not_train}
    cache["note"] = describe_cache(cache)
    return _Data(train_loader, val_loader, train_start=prefix if cache_train else 0,
                 val_start=prefix if cache_val else 0, cache=cache, decoded=decoded_record,
                 train_failed=list(train_failed), val_failed=list(val_failed))


# --- the loop ---------------------------------------------------------------------

def _to_device(x, device, channels_last):
    x = x.to(device, non_blocking=True)
    if channels_last and x.dim() == 4:
        x = x.to(memory_format=torch.channels_last)
    return x


@torch.no_grad()
def _validate(model, data: _Data, criterion, device, dtype, channels_last, job: Job):
    model.eval()
    # Sums stay on the device: one synchronisation per validation, not per batch.
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen = 0
    for x, y, _idx, bad in data.val_loader:
        if job.stop_requested:
            raise InterruptedError
        if len(y) == 0:
            continue
        x, y = _to_device(x, device, channels_last), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model.forward_from(data.val_start, x)
        total_loss += criterion(logits.float(), y) * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
    return total_loss.item() / max(seen, 1), correct.item() / max(seen, 1)


def train(config: TrainConfig, run: Run, job: Job, resume: bool = False) -> dict:
    """Train `config` into `run`, reporting to `job`. Returns the result dict.

    Raises TrainingError (and the data/weights errors) for problems a user can
    fix, InterruptedError when stopped."""
    started = time.time()
    seed_everything(config.seed)
    device = pick_device(config.device)
    job.update(state="running", phase="Reading the image folder", started=started, **describe_device(device))
    run.update_status(state="running", started=started, reason=None, **describe_device(device), **_owner())

    info = get_backbone(config.backbone)
    # The scan decodes every image to check it; it keeps them, at the size
    # training needs, so that training does not decode them again.
    report, decoded, why_not_decoded = scan_and_decode(config.data_dir, info.sizes(config.image_size)[1],
                                                       val_fraction=config.val_fraction, seed=config.seed,
                                                       interpolation=info.interpolation)
    if not report.can_train:
        raise TrainingError(" ".join(report.errors))
    run.write_json("scan.json", report.to_dict())
    run.write_json("classes.json", report.classes)
    job.add_skipped([s.path for s in report.skipped])

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

    channels_last = use_channels_last(device)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        # Every batch has the same image size, so cuDNN may time its algorithms
        # once and keep the fastest.
        torch.backends.cudnn.benchmark = True
    dtype = autocast_dtype(device, config.mixed_precision)

    data = build_data(config, report, model, plan, device, job, decoded, why_not_decoded)
    del decoded  # what the epochs still need, the loaders hold
    job.update(feature_cache=data.cache, decoded_images=data.decoded)

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
                      decoded_images=data.decoded,
                      freeze_plan=plan.describe(), blocks=model.block_names, resumed_from=start_epoch - 1 if resume else None)

    # Per-epoch files are written by a background thread (_RunWriter). On
    # every way out of here it finishes them: a stopped run keeps its last
    # finished epoch.
    with _RunWriter() as writer:
        step = (start_epoch - 1) * batches
        images_done, train_started = 0, time.time()
        frozen_blocks, frozen_for = None, None
        best_weights, trained_now = None, None
        stopped_early = False
        for epoch in range(start_epoch, config.epochs + 1):
            if plan.trained_at(epoch - 1) != trained_now:  # the first epoch, and gradual unfreezing
                # Checkpoints still being written share the frozen blocks' tensors
                # (see _model_payload): let them finish before any block unfreezes.
                writer.flush()
                trained_now = plan.trained_at(epoch - 1)
                apply_freeze_plan(model, plan, epoch=epoch - 1)
            model.train()
            # Blocks frozen in this epoch run without autograd: no graph is built
            # and none of their activations are kept for a backward pass. They are
            # in eval mode (TransferModel.train), so they run as a copy with
            # BatchNorm folded in, made again only when the frozen prefix changes.
            frozen = max(plan.frozen_prefix(epoch - 1), data.train_start)
            if frozen > data.train_start and frozen != frozen_for:
                frozen_blocks = inference_blocks(model, data.train_start, frozen, channels_last)
                frozen_for = frozen
            job.update(epoch=epoch, epochs=config.epochs, batch=0, batches=batches, phase="Training")
            # Sums stay on the device, read once per epoch: reading a GPU number
            # waits for the GPU, and doing that every batch would stall it.
            epoch_loss = torch.zeros((), device=device)
            epoch_correct = torch.zeros((), dtype=torch.long, device=device)
            epoch_seen, epoch_start = 0, time.time()
            for batch_index, (x, y, _idx, bad) in enumerate(data.train_loader, start=1):
                if job.stop_requested:
                    raise InterruptedError
                if bad:
                    job.add_skipped([report.train[i][0] for i in bad])
                if len(y) == 0:
                    continue
                x, y = _to_device(x, device, channels_last), y.to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    if frozen > data.train_start:
                        with torch.no_grad():
                            x = frozen_blocks(x)
                    logits = model.forward_from(frozen, x)
                    loss = criterion(logits.float(), y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                step += 1
                epoch_loss += loss.detach() * len(y)
                epoch_correct += (logits.argmax(1) == y).sum()
                epoch_seen += len(y)
                images_done += len(y)
                elapsed = time.time() - train_started
                speed = images_done / elapsed if elapsed > 0 else None
                remaining_batches = (config.epochs - epoch) * batches + (batches - batch_index)
                eta = remaining_batches * (elapsed / max(1, step - (start_epoch - 1) * batches))
                job.update(batch=batch_index, images_per_second=speed, eta_seconds=eta)
                if step % max(1, config.batch_loss_every) == 0 or batch_index == batches:
                    value = loss.item()
                    if not math.isfinite(value):
                        raise TrainingError("The loss became infinite or NaN: the learning rate is probably too high. Try a smaller one.")
                    job.add_batch_loss(step, value)
            epoch_loss, epoch_correct = epoch_loss.item(), epoch_correct.item()
            if not math.isfinite(epoch_loss):
                raise TrainingError("The loss became infinite or NaN: the learning rate is probably too high. Try a smaller one.")

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

            # The epoch's files go to the writer thread, which writes them in
            # this order while the next epoch trains: the checkpoints, then the
            # epoch's metrics line (so every epoch in metrics.jsonl can be
            # resumed from, whenever a kill lands), then the job hears of it.
            payload = _model_payload(model, config, report.classes, epoch, trained_now)
            improved = val_acc > best["val_accuracy"] or (val_acc == best["val_accuracy"] and val_loss < best["val_loss"])
            if improved:
                best = {"epoch": epoch, "val_accuracy": val_acc, "val_loss": val_loss}
                best_weights = payload["model"]
                writer.submit(run.save_checkpoint, "best.pt", payload)
            if val_loss < best.get("lowest_val_loss", math.inf) - 1e-4:
                best["lowest_val_loss"] = val_loss
                epochs_without_gain = 0
            else:
                epochs_without_gain += 1
            writer.submit(run.save_checkpoint, "last.pt", {
                **payload,
                "optimizer": _snapshot(optimizer.state_dict()), "scheduler": copy.deepcopy(scheduler.state_dict()),
                "scaler": scaler.state_dict(), "best": dict(best), "epochs_without_gain": epochs_without_gain,
                "rng": torch.get_rng_state(),
            })
            writer.submit(run.write_metrics, list(history))
            writer.submit(job.add_epoch, row)
            writer.submit(run.update_status, epochs_done=epoch, best_epoch=best["epoch"],
                          best_val_accuracy=best["val_accuracy"])
            if config.early_stopping and epochs_without_gain >= config.early_stopping:
                stopped_early = True
                break

        job.update(phase="Evaluating the best model on the validation images", eta_seconds=0)
        writer.flush()
        if best_weights is None:  # resumed, and no epoch since beat the best before
            best_weights = torch.load(run.best_checkpoint, map_location="cpu", weights_only=True)["model"]
        model.load_state_dict(best_weights)
        result_eval = evaluation.evaluate_loader(model, data.val_loader, data.val_start, report.classes,
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
        "decoded_images": data.decoded.get("used", False),
        "trainable_params": trainable,
        "total_params": total,
        "skipped_files": len(job.snapshot()["skipped_files"]),
    }
    return result  # the model, optimiser and data go with this frame; run_job then frees the GPU's cache


def _model_payload(model, config: TrainConfig, classes: list[str], epoch: int,
                   trained: dict[str, bool] | None = None) -> dict:
    """The checkpoint's model part, safe to write while training goes on: a
    copy of every tensor that can still change. With `trained` (block name ->
    trains now), the blocks that do not train are not copied, because their
    tensors stay as they are (the caller flushes the writer before that
    changes); on a GPU, the move to the CPU is the copy."""
    def keep(name: str, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.detach()
        if tensor.device.type != "cpu":
            return tensor.cpu()
        block = name.split(".", 2)[1] if name.startswith("blocks.") else None
        return tensor if trained is not None and trained.get(block) is False else tensor.clone()

    return {"model": {k: keep(k, v) for k, v in model.state_dict().items()},
            "config": config.to_dict(), "classes": list(classes), "epoch": epoch,
            "backbone": config.backbone}


def _snapshot(obj):
    """A copy of a (nested) state dict whose tensors training may change in place."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu() if obj.device.type != "cpu" else obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _snapshot(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_snapshot(v) for v in obj)
    return copy.deepcopy(obj)


class _RunWriter:
    """Writes a run's files in a background thread, one after another in the
    order given, so training goes on while a checkpoint reaches the disk (a
    MobileNetV2 checkpoint and its fsync take tens of milliseconds, as long
    as a whole epoch of a linear probe).

    At most `backlog` writes wait; submit blocks beyond that, so a slow disk
    slows training down instead of filling memory with checkpoints. A write
    that fails is raised in the training thread at the next submit or flush."""

    def __init__(self, backlog: int = 8):
        self._queue: queue.Queue = queue.Queue(maxsize=backlog)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="run-writer", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if self._error is None:  # after a failure, later writes are dropped, not reordered
                    fn, args, kwargs = item
                    fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the training thread
                self._error = exc
            finally:
                self._queue.task_done()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, fn, *args, **kwargs) -> None:
        self._raise()
        self._queue.put((fn, args, kwargs))

    def flush(self) -> None:
        """Wait until everything submitted is on disk."""
        self._queue.join()
        self._raise()

    def close(self) -> None:
        """Finish the writes and stop the thread (raises a write's error)."""
        self._queue.put(None)
        self._thread.join()
        self._raise()

    def __enter__(self) -> _RunWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:  # already failing or stopping: finish the writes, keep that first reason
            try:
                self.close()
            except BaseException:  # noqa: BLE001
                pass


def release_device_memory(device: torch.device) -> None:
    """Give the memory of a finished run back. Call it once nothing refers to
    the run's tensors any more: gc.collect frees those caught in reference
    cycles, and empty_cache hands the blocks PyTorch's caching allocator still
    holds back to the driver, so other programs (and the next run) get them."""
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
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
