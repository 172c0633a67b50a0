"""A training's decisions, made once before the first batch.

`decide` asks the machine's rules (core.devices), the backbone's sizes and the
freeze plan everything the run depends on: device and precision, picture
sizes, batch and worker counts, read-ahead, channels-last, augmentation, and
which leading blocks run once and are stored (the feature cache). The answers
are one frozen `Decisions`, written to the run's status.json ("decisions") and
then only read: the data assembly (core.training_data) and the loop
(core.training) never ask a rule again.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch

from . import devices, distributed, progressive
from .backbones import get_backbone
from .config import TrainConfig
from .images import decoded_cache_budget


@dataclass(frozen=True)
class Decisions:
    device: torch.device
    autocast: torch.dtype | None  # None: float32
    feature_autocast: torch.dtype | None  # the frozen blocks' one pass over the training pictures
    channels_last: bool
    pin_memory: bool
    cudnn_benchmark: bool
    image_size: int  # the crop the model sees
    resize_size: int  # the shorter side before the crop (and of the decoded images kept in memory)
    augment: str  # the preset, "auto" resolved
    batch_size: int  # training
    train_slice: int  # training batches of pictures run in slices of this many (core.sliced_steps); 0: whole
    eval_batch_size: int  # passes of pictures without gradients: feature pass, validation
    stored_eval_batch_size: int  # passes of stored features without gradients (validation)
    val_batch_size: int  # validation pictures per batch when worker processes read them
    feature_first_batch: int  # the feature pass's first batch (they double up to eval_batch_size)
    workers: int  # DataLoader processes; 0 = threads in this process (ThreadedLoader)
    worker_start: str | None  # how those processes start (fork, forkserver, spawn)
    loader_note: str  # who reads the images every epoch, and why, in words
    decode_threads: int
    read_ahead: int
    frozen_prefix: int  # leading blocks frozen for the whole run
    cache_train: bool  # training images go through the frozen prefix once, stored
    train_views: int  # with augmentation: stored versions of each training picture (0: none stored)
    epoch_image_sizes: list[int] | None  # progressive resizing: each epoch's picture side (None: image_size)
    cache_val: bool  # validation images likewise
    why_not_cache: str | None  # why the training images do not use stored features
    precision_note: str | None = None  # in words, where a CPU computes some passes in bf16

    @property
    def precision(self) -> str:
        return dtype_name(self.autocast)

    @property
    def grad_scaling(self) -> bool:
        """fp16 needs loss scaling against underflow; bf16 and fp32 do not."""
        return self.autocast == torch.float16

    @property
    def train_start(self) -> int:
        """The block where training batches enter the model (after stored features)."""
        return self.frozen_prefix if self.cache_train else 0

    @property
    def val_start(self) -> int:
        return self.frozen_prefix if self.cache_val else 0

    def to_dict(self) -> dict:
        """For status.json: plain JSON values."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["device"] = str(self.device)
        for name in ("autocast", "feature_autocast"):
            out[name] = dtype_name(out[name])
        return out


def dtype_name(autocast: torch.dtype | None) -> str:
    """ "float32", "bfloat16", "float16": for status.json and feature-cache keys."""
    return str(autocast or torch.float32).replace("torch.", "")


# cuDNN's autotuning (torch.backends.cudnn.benchmark) times the algorithms
# of every convolution for each new input shape, forward and backward, and
# keeps the fastest for the rest of the process. On the H200 (README, Speed)
# the first epoch that trained mobilenet_v2's blocks took 39 s for 244
# pictures where the head-only epoch before it took 13 s, and last-2's took
# 6 s against 0.1 s for the epochs after: tens of seconds of timing that a
# few hundred steps, a few milliseconds faster each, never earn back. So it
# is on only for runs this long (a guess from those figures, to be settled
# by timing both on a GPU); cuDNN's own heuristics pick the rest, which also
# makes two runs with one seed more alike.
CUDNN_TIMING_MIN_STEPS = 2000


def _batch_size(config: TrainConfig, device: torch.device) -> int:
    return config.batch_size or devices.auto_batch_size(device)


def _training_steps(config: TrainConfig, report, device: torch.device) -> int:
    """The steps this process takes (under torchrun each takes its share of the pictures)."""
    processes = distributed.current().world_size
    return math.ceil(len(report.train) / processes / _batch_size(config, device)) * config.epochs


def _stored_sets(config: TrainConfig, plan) -> tuple[int, bool, bool]:
    """(the prefix frozen for the whole run, whether the training pictures and
    whether the validation pictures go through it once, stored)."""
    prefix = plan.frozen_prefix(None, config.epochs)
    cache_val = bool(config.feature_cache and prefix > 0)
    return prefix, cache_val and config.resolved_augment == "none", cache_val


def reads_pictures_every_epoch(config: TrainConfig, plan, report) -> bool:
    """Whether pictures are read after the scan more than once: a set that
    does not use stored features, or augmented training pictures (read
    every epoch, or once for each stored version, core.augmented_views),
    which is when keeping them decoded in memory pays."""
    _, cache_train, cache_val = _stored_sets(config, plan)
    return (not cache_train and bool(report.train)) or (not cache_val and bool(report.val))


def decide(
    config: TrainConfig,
    device: torch.device,
    sizes: tuple[int, int],
    plan,
    report,
    decoded_in_memory: bool,
    decoded_bytes: int = 0,
    stored_bytes_per_picture: Callable[[], int] = lambda: 0,
) -> Decisions:
    """Every choice of the run, from the config, the device, the backbone's
    (crop, resize) `sizes`, the freeze `plan`, the scan `report`, whether
    the scan kept the decoded images in memory (and how many bytes they take),
    and what tells the bytes the frozen prefix's output of one picture takes
    when stored (asked only when augmented versions may be stored)."""
    prefix, _, cache_val = _stored_sets(config, plan)
    augment = config.resolved_augment
    views, views_note = 0, None
    if cache_val and augment != "none":
        views, views_note = views_that_fit(
            config.augment_views, config.epochs, len(report.train), stored_bytes_per_picture(), decoded_cache_budget()
        )
    cache_train = cache_val and (augment == "none" or views > 0)
    why_not = (
        "reusing the frozen blocks' output was switched off"
        if not config.feature_cache
        else "every block learns during the run, so no block's outputs stay the same to keep"
        if prefix == 0
        else views_note
    )
    # Images that go through the model every epoch are read from memory when
    # the scan kept them, which needs fewer reader processes.
    read_every_epoch = (not cache_train and bool(report.train)) or (not cache_val and bool(report.val))
    in_memory = decoded_in_memory and read_every_epoch
    wanted = config.num_workers if config.num_workers is not None else devices.auto_num_workers(device, in_memory)
    workers, worker_start, loader_note = devices.loader_workers(
        wanted if read_every_epoch else 0,
        other_threads=threading.active_count() > 1,
        shm_free=devices.shared_memory_free(),
        shared_bytes=decoded_bytes if in_memory else 0,
    )
    if not read_every_epoch:
        loader_note = "No pictures are read during the epochs: both sets use stored features."
    eval_batch = devices.inference_batch_size(device)
    return Decisions(
        device=device,
        autocast=devices.autocast_dtype(device, config.mixed_precision),
        feature_autocast=devices.feature_pass_autocast(device, config.mixed_precision),
        channels_last=devices.use_channels_last(device),
        pin_memory=device.type == "cuda",
        cudnn_benchmark=device.type == "cuda" and _training_steps(config, report, device) >= CUDNN_TIMING_MIN_STEPS,
        image_size=sizes[0],
        resize_size=sizes[1],
        augment=augment,
        batch_size=_batch_size(config, device),
        # Stored features are small maps: slices only pay where pictures enter the network.
        train_slice=0 if cache_train else devices.training_slice(device),
        eval_batch_size=eval_batch,
        stored_eval_batch_size=devices.stored_features_batch_size(device),
        val_batch_size=_val_batch_size(len(report.val), eval_batch, workers),
        feature_first_batch=devices.first_feature_batch(device, eval_batch),
        workers=workers,
        worker_start=worker_start,
        loader_note=loader_note,
        decode_threads=devices.decode_threads(device),
        read_ahead=devices.read_ahead(device),
        frozen_prefix=prefix,
        cache_train=cache_train,
        train_views=views,
        # Only where the pictures go through every block each epoch: stored features are full size.
        epoch_image_sizes=(
            progressive.epoch_image_sizes(sizes[0], config.epochs, config.progressive_resizing, plan.head_epochs)
            if not cache_train
            and config.progressive_resizing > 0
            and not get_backbone(config.backbone).fixed_image_size
            else None
        ),
        cache_val=cache_val,
        why_not_cache=why_not,
        precision_note=_cpu_precision_note(device, config.mixed_precision, cache_train),
    )


def _cpu_precision_note(device: torch.device, mixed_precision: bool, cache_train: bool) -> str | None:
    if not cache_train or device.type != "cpu" or devices.feature_pass_autocast(device, mixed_precision) is None:
        return None
    return (
        "This processor computes 16-bit numbers (bf16) in hardware, so the frozen blocks' pass over the"
        " training pictures used them, which is faster; the training steps and the accuracy use 32-bit numbers."
    )


def views_that_fit(wanted: int, epochs: int, pictures: int, bytes_per_picture: int, budget: int):
    """How many augmented versions of each training picture to store
    (core.augmented_views), and, when none, why in words: as many as asked
    for, no more than there are epochs to use them, and only as many as fit
    in `budget` bytes. When fewer than 2 fit where more were wanted, none are
    stored: one version seen every epoch would be no augmentation at all."""
    if wanted <= 0:
        return 0, "augmentation changes the training images every epoch"
    views = min(wanted, max(1, epochs))
    fit = budget // (bytes_per_picture * pictures) if bytes_per_picture > 0 and pictures > 0 else views
    if fit < min(views, 2):
        need = min(views, 2) * bytes_per_picture * pictures
        return 0, (
            f"storing augmented versions of the training images would need about {need / 2**20:,.0f} MB, "
            f"more than the {budget / 2**20:,.0f} MB set aside, so the augmented images go through the "
            "frozen blocks every epoch"
        )
    return int(min(views, fit)), None


def _val_batch_size(images: int, eval_batch: int, workers: int) -> int:
    """A worker process reads a whole batch: with the 256-picture inference
    batch, a validation set of a few hundred pictures would be read by one
    or two workers while the rest wait. Batches of images / workers give
    each worker some (at least 16 pictures a batch, at most the inference
    batch). Threads share every batch between them, so they keep the
    inference batch."""
    if workers <= 0:
        return eval_batch
    return max(1, min(eval_batch, max(16, math.ceil(images / workers))))
