"""What the training loop iterates: batches of images, or of stored features.

`build_data` carries out the run's `Decisions` (core.decisions):

- Blocks frozen for the whole run (a prefix) need to run only once per image
  when the image is always the same: the validation images always (their
  transform is fixed), the training images when there is no augmentation.
  Their outputs are cached on disk (core.features).
- `decoded`: the images, decoded by the scan (scan_and_decode) when they fit
  in memory. The feature pass reads them from there, and so do the epochs
  that put images through the model (augmented training images, or any image
  when nothing is frozen); without it, from disk.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader

from . import distributed
from .augmented_views import ViewBatches, stack_views, view_seeds, view_transform_description
from .config import TrainConfig
from .counts import how_many
from .decisions import Decisions, dtype_name
from .devices import LOADER_TIMEOUT_S
from .features import FeatureBatches, cache_key, describe_cache, transform_description
from .freeze import frozen_with_weights
from .images import DecodedImageCache
from .loading import BatchNormalizer, ImageDataset, NormalizedBatches, ThreadedLoader, collate_skip_broken
from .progress import Progress


@dataclass
class TrainingData:
    """What the loop iterates. Training batches enter the model at block
    train_start and validation batches at val_start: 0 for images, k for the
    cached outputs of the frozen blocks[:k] (FeatureBatches)."""

    train_loader: object
    val_loader: object
    train_start: int = 0
    val_start: int = 0
    cache: dict = field(default_factory=dict)  # status.json "feature_cache"
    decoded: dict = field(default_factory=dict)  # status.json "decoded_images"
    train_failed: list[int] = field(default_factory=list)
    val_failed: list[int] = field(default_factory=list)


FEATURE_PASS = "Computing features of the frozen layers"


def build_data(
    config: TrainConfig,
    report,
    model,
    decisions: Decisions,
    progress: Progress,
    decoded: DecodedImageCache | None = None,
    why_not_decoded: str | None = None,
) -> TrainingData:
    """The training and validation batches, as cheap as the decisions allow."""
    info = model.info
    # The loaders give uint8 images; they are normalised a whole batch at a
    # time on the device (BatchNormalizer), not one by one.
    train_tf = info.transforms(config.image_size, augment=decisions.augment, train=True, normalize=False)
    eval_tf = info.transforms(config.image_size, normalize=False)
    normalizer = BatchNormalizer(info.mean, info.std, decisions.device, channels_last=decisions.channels_last)

    # Images that go through the model every epoch keep their decoded pixels
    # for the whole run; the others only until the feature pass is done.
    every_epoch = [p for p, _ in report.train] if not decisions.cache_train else []
    every_epoch += [p for p, _ in report.val] if not decisions.cache_val else []
    decoded_record = _decoded_record(decoded, why_not_decoded, decisions, len(every_epoch))

    features, seconds = {}, None
    if decisions.cache_val:
        transforms = {"eval": eval_tf, "train": train_tf}
        features, seconds = _feature_pass(config, report, model, decisions, progress, transforms, normalizer, decoded)
    decoded = decoded.subset(every_epoch) if decoded is not None and every_epoch else None

    def image_loader(samples, transform, size: int, shuffle: bool):
        return _image_loader(samples, transform, size, shuffle, config.seed, decisions, normalizer, decoded)

    train_failed, val_failed = [], []
    if decisions.cache_train and decisions.train_views:
        tf, tl, ti, train_failed, _ = features["train_views"]
        train_loader = ViewBatches(
            tf, tl, ti, decisions.train_views, decisions.batch_size, seed=config.seed, device=decisions.device
        )
    elif decisions.cache_train:
        tf, tl, ti, train_failed, _ = features["train"]
        train_loader = FeatureBatches(
            tf, tl, ti, decisions.batch_size, shuffle=True, seed=config.seed, device=decisions.device
        )
    else:
        train_loader = image_loader(report.train, train_tf, decisions.batch_size, shuffle=True)
    if decisions.cache_val:
        vf, vl, vi, val_failed, _ = features["val"]
        val_loader = FeatureBatches(
            vf, vl, vi, decisions.stored_eval_batch_size, shuffle=False, seed=config.seed, device=decisions.device
        )
    else:
        val_loader = image_loader(report.val, eval_tf, decisions.val_batch_size, shuffle=False)

    return TrainingData(
        train_loader,
        val_loader,
        train_start=decisions.train_start,
        val_start=decisions.val_start,
        cache=_cache_record(decisions, model.block_param_counts(), features, seconds),
        decoded=decoded_record,
        train_failed=list(train_failed),
        val_failed=list(val_failed),
    )


def _decoded_record(
    decoded: DecodedImageCache | None, why_not: str | None, decisions: Decisions, read_every_epoch: int
) -> dict:
    """status.json "decoded_images": whether the scan's decoded pictures are used."""
    if decoded is None:
        return {"used": False, "why_not": why_not or "not asked for"}
    return {
        "used": True,
        "images": len(decoded),
        "megabytes": round(decoded.nbytes / 2**20, 1),
        "short_side": decisions.resize_size,
        "read_every_epoch": read_every_epoch,
    }


def _feature_pass(
    config: TrainConfig, report, model, decisions: Decisions, progress: Progress, transforms: dict, normalizer, decoded
) -> tuple[dict, float]:
    """The frozen prefix's outputs for the images that are the same every
    epoch (and for the stored augmented versions of the training images),
    read from the on-disk cache or computed once. Returns ({split:
    (features, labels, indices, failed, hit)}, seconds); "train_views" holds
    the versions stacked (core.augmented_views.stack_views)."""
    info = model.info
    transform_desc = transform_description(info, config.image_size)
    views = decisions.train_views if decisions.cache_train else 0
    sets = {"train": report.train} if decisions.cache_train and not views else {}
    sets["val"] = report.val
    total = sum(len(samples) for samples in sets.values()) + views * len(report.train)

    def key(samples, description: dict, autocast) -> str:
        return cache_key(
            samples=samples,
            backbone=config.backbone,
            init=config.init,
            weights_file=info.weights_file,
            prefix=decisions.frozen_prefix,
            block_names=model.block_names,
            transform_desc=description,
            seed=config.seed,
            precision=dtype_name(autocast),
            taps=[t for t in getattr(model, "taps", []) if t in model.block_names[: decisions.frozen_prefix]],
        )

    # With stored versions the count is of versions, not of the pictures the person has: the name says so.
    phase = f"{FEATURE_PASS}, {how_many(views, 'changed version')} of each training picture" if views else FEATURE_PASS
    progress.phase(phase, 0, total)
    began = time.time()
    features = {}
    if views:
        named = {f"train_view{v}": v for v in range(views)}
        described = {
            n: view_transform_description(transform_desc, decisions.augment, config.seed, v) for n, v in named.items()
        }
        out = _prefix_pass(
            config,
            model,
            decisions,
            progress,
            {name: (report.train, key(report.train, described[name], decisions.feature_autocast)) for name in named},
            transforms["train"],
            normalizer,
            decoded,
            (phase, 0, total),
            seeds_of={name: view_seeds(config.seed, v, len(report.train)) for name, v in named.items()},
            autocast=decisions.feature_autocast,
        )
        features["train_views"] = (*stack_views([out[name][:4] for name in named]), all(o[4] for o in out.values()))
    # Training pictures' features only feed the learning (Decisions.feature_autocast);
    # validation's are what the run's figures come from.
    by_precision: dict = {}
    for name, samples in sets.items():
        autocast = decisions.autocast if name == "val" else decisions.feature_autocast
        by_precision.setdefault(autocast, {})[name] = (samples, key(samples, transform_desc, autocast))
    done_before = views * len(report.train)
    for autocast, splits in by_precision.items():
        counted = (phase, done_before, total)
        pass_args = (config, model, decisions, progress, splits, transforms["eval"], normalizer, decoded, counted)
        features.update(_prefix_pass(*pass_args, autocast=autocast))
        done_before += sum(len(samples) for samples, _ in splits.values())
    return features, round(time.time() - began, 2)


def _prefix_pass(
    config, model, decisions, progress, splits, transform, normalizer, decoded, counted: tuple, autocast, seeds_of=None
) -> dict:
    """One call of the (distributed) feature pass over `splits`; `counted`:
    (the phase's name, pictures done before it, pictures in the whole pass) for the progress."""
    phase, done_before, total = counted
    # distributed: the pictures split between the ranks, the features gathered (one process: the same call)
    return distributed.prefix_features(
        model,
        decisions.frozen_prefix,
        splits,
        transform,
        decisions.device,
        cache_dir=config.cache_dir,
        seeds_of=seeds_of,
        batch_size=decisions.eval_batch_size,
        decoded=decoded,
        threads=decisions.decode_threads,
        ahead=decisions.read_ahead,
        max_side=decisions.resize_size,
        normalize=normalizer,
        channels_last=decisions.channels_last,
        autocast_dtype=autocast,
        should_stop=lambda: progress.stop_requested,
        first_batch=decisions.feature_first_batch,
        on_batch=lambda done, _total: progress.phase(phase, done_before + done, total),
    )


def _image_loader(
    samples,
    transform,
    size: int,
    shuffle: bool,
    seed: int,
    decisions: Decisions,
    normalizer,
    decoded: DecodedImageCache | None,
):
    """Batches of pictures (from memory or disk), normalised on the device:
    threads in this process, or DataLoader worker processes."""
    dataset = ImageDataset(samples, transform, max_side=decisions.resize_size, decoded=decoded)
    if decisions.workers == 0:
        loader = ThreadedLoader(
            dataset,
            size,
            shuffle=shuffle,
            seed=seed,
            threads=decisions.decode_threads,
            ahead=decisions.read_ahead,
            pin_memory=decisions.pin_memory,
        )
    else:
        loader = DataLoader(
            dataset,
            batch_size=size,
            shuffle=shuffle,
            num_workers=decisions.workers,
            collate_fn=collate_skip_broken,
            pin_memory=decisions.pin_memory,
            persistent_workers=True,
            generator=torch.Generator().manual_seed(seed),
            timeout=LOADER_TIMEOUT_S,
            multiprocessing_context=decisions.worker_start,
        )
    return NormalizedBatches(loader, normalizer)


def _cache_record(decisions: Decisions, counts: dict[str, int], features: dict, seconds: float | None) -> dict:
    """status.json "feature_cache": what was stored, whether it was found, and why not."""
    if decisions.cache_val:
        prefix = decisions.frozen_prefix
        block_names = list(counts)
        param_free = [n for n, c in counts.items() if c == 0]
        cache = {
            "used": True,
            "train": decisions.cache_train,
            "val": True,
            "prefix_blocks": prefix,
            "frozen_blocks": block_names[:prefix],
            # what the Model page's picture shows as frozen: blocks with weights
            "frozen_with_weights": frozen_with_weights(block_names, param_free, {}, prefix),
            "hit": all(out[4] for out in features.values()),
            "train_views": decisions.train_views,
            "feature_shape": list(features["val"][0].shape[1:]),
            "seconds": seconds,
        }
        if decisions.why_not_cache:
            cache["why_not"] = decisions.why_not_cache  # why the training images do not use it
    else:
        cache = {"used": False, "why_not": decisions.why_not_cache}
    cache["note"] = describe_cache(cache)
    return cache


def loader_for_test_split(config: TrainConfig, report, model, decisions: Decisions):
    """Batches of the held-out test pictures (report.test), read from disk
    only now, at the end of a run: they are in neither the decoded cache nor
    the feature pass, so nothing about them can sway training or the choice
    of the best epoch. Same eval transform and normalisation as validation."""
    info = model.info
    eval_tf = info.transforms(config.image_size, normalize=False)
    normalizer = BatchNormalizer(info.mean, info.std, decisions.device, channels_last=decisions.channels_last)
    return _image_loader(
        report.test, eval_tf, decisions.eval_batch_size, False, config.seed, decisions, normalizer, None
    )
