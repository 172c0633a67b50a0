"""The feature cache: run a frozen prefix of the backbone once per image and keep
its outputs on disk, so a linear probe (or a fine-tune of the top blocks) trains
on stored tensors instead of decoding and re-running the same frozen layers
every epoch.

It is only valid for a fixed (eval) transform: with random augmentation the
training images change every epoch, so then only the validation images (whose
transform is always fixed) use it, and the training images go through the
frozen blocks every epoch (without autograd; see core.training).

The cache key covers everything that changes the stored outputs: the files
(path, size, modification time), the backbone and its weights, the prefix
length, the image size, normalisation and resizing, and the precision the
blocks ran in. Change any of them and a new entry is
computed; an old one is never read for a different key.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .conv_bn_pairs import conv_bn_pairs
from .files import atomic_torch_save
from .fusion import TappedBlocks
from .loading import ImageDataset, threaded_batches


def default_cache_dir() -> Path:
    return Path(os.environ.get("TRANSFER_STUDIO_CACHE", Path.home() / ".cache" / "transfer-studio"))


def files_fingerprint(samples: list[tuple[str, int]]) -> list:
    """What identifies the dataset's content without reading every byte."""
    out = []
    for path, label in samples:
        try:
            st = os.stat(path)
            out.append([path, label, st.st_size, int(st.st_mtime_ns)])
        except OSError:
            out.append([path, label, None, None])
    return out


def weights_identity(init: str) -> str:
    """'pretrained' and 'random' name themselves; a local file is named by its
    path, size and time so that replacing the file invalidates the cache."""
    if init in ("pretrained", "random"):
        return init
    try:
        st = os.stat(init)
        return f"{os.path.abspath(init)}:{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        return init


def cache_key(
    *,
    samples,
    backbone: str,
    init: str,
    weights_file: str | None,
    prefix: int,
    block_names: list[str],
    transform_desc: dict,
    seed: int,
    precision: str = "float32",
    taps: list[str] | None = None,
) -> str:
    payload = {
        "version": 2,
        "files": files_fingerprint(samples),
        "backbone": backbone,
        "weights": weights_identity(init),
        "weights_file": weights_file,
        "prefix": prefix,
        "blocks": block_names[:prefix],
        "transform": transform_desc,
        "precision": precision,  # features computed in bfloat16 differ a little from float32 ones
        "torch": torch.__version__.split("+")[0],
        # Random initial weights come from the seed, so they are part of the key.
        "seed": seed if init == "random" else None,
    }
    if taps:  # a fused model's prefix stores its fused stages' pooled outputs (core.fusion)
        payload["fused"] = list(taps)
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _fold_batchnorm(block: nn.Module) -> nn.Module:
    """A copy of `block` for inference with each BatchNorm folded into the
    convolution before it: the convolution's weights and bias absorb the
    normalisation, so one pass over the data does the work of two. A
    convolution subclass (EfficientNet-Lite's input-dependent "same" padding)
    keeps its class and so its padding. The block itself is untouched."""
    folded = copy.deepcopy(block).eval()  # eval: folding uses the running statistics
    for parent, conv_name, bn_name in list(conv_bn_pairs(folded)):  # listed first: the loop replaces children
        conv, bn = parent._modules[conv_name], parent._modules[bn_name]
        if bn.track_running_stats:
            parent._modules[conv_name] = fuse_conv_bn_eval(conv, bn)
            parent._modules[bn_name] = nn.Identity()
    return folded


FOLDED_COPY = "is_folded_copy"  # the attribute inference_blocks sets on the copies it makes


def inference_blocks(model, start: int, stop: int, channels_last: bool = False) -> nn.Module:
    """blocks[start:stop] as one module for passes without gradients through
    blocks that are frozen (in eval mode, their weights fixed).

    With BatchNorm layers, a copy with BatchNorm folded into the convolutions:
    the same function up to rounding, and on a CPU about 1.7x faster for
    MobileNetV2 (normalising every activation again is a memory-bound pass of
    its own). The copy is only valid while those blocks stay frozen: make a
    new one when the frozen prefix changes. Without BatchNorm, the blocks
    themselves, no copy."""
    blocks = list(model.blocks.values())[start:stop]
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for b in blocks for m in b.modules()):
        return _span(model, start, stop, blocks)
    folded = _span(model, start, stop, [_fold_batchnorm(b) for b in blocks]).eval()
    folded.requires_grad_(False)
    setattr(folded, FOLDED_COPY, True)  # every tensor in it is its own: release_copy may free them
    if channels_last:
        folded.to(memory_format=torch.channels_last)  # the folded weights are new tensors
    return folded


def _span(model, start: int, stop: int, blocks: list[nn.Module]) -> nn.Module:
    """Blocks as one module; a span through a fused model's taps collects
    their pooled outputs (core.fusion)."""
    names = model.block_names[start:stop]
    taps = getattr(model, "taps", [])
    if taps and set(taps) & set(names):
        return TappedBlocks(list(zip(names, blocks)), taps)
    return nn.Sequential(*blocks)


def compute_prefix_features(
    model,
    prefix: int,
    samples,
    transform,
    device,
    *,
    batch_size: int = 64,
    threads: int = 1,
    ahead: int = 0,
    max_side: int | None = None,
    decoded=None,
    normalize: Callable[[torch.Tensor], torch.Tensor] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    on_batch: Callable[[int, int], None] | None = None,
    channels_last: bool = False,
    autocast_dtype=None,
    first_batch: int | None = None,
    seeds: list[int] | None = None,
):
    """Run blocks[:prefix] over every sample with the (fixed) eval transform,
    or a random one whose choices come from `seeds`, one per sample
    (core.augmented_views).

    One pass, as cheap as it gets: inference mode (no autograd bookkeeping),
    BatchNorm folded into the convolutions (inference_blocks), big batches,
    and `threads` threads reading each batch's images, `ahead` batches before
    the model needs them (threaded_batches). `decoded`, a DecodedImageCache,
    saves decoding the images it holds. `normalize`: for a transform that
    gives uint8 images, what turns a batch of them into the model's input
    (a core.loading.BatchNormalizer). `first_batch`: a smaller first batch
    (the next ones double up to `batch_size`), so `on_batch(done, total)`
    hears of the pass from its first seconds.

    Returns (features, labels, indices, failed_indices): features is a CPU
    tensor (float16 for big feature maps, float32 for vectors) in the order of
    `indices` into `samples`; broken files are left out and listed."""
    was_training = model.training
    model.eval()
    frozen = inference_blocks(model, 0, prefix, channels_last)
    dataset = ImageDataset(samples, transform, max_side=max_side, decoded=decoded)
    feats, labels, indices, failed = [], [], [], []
    done = 0
    try:
        with torch.inference_mode():
            for images, y, idx, bad in threaded_batches(
                dataset,
                batch_size,
                threads=threads,
                ahead=ahead,
                pin_memory=device.type == "cuda",
                first=first_batch,
                seeds=seeds,
            ):
                if should_stop():
                    raise InterruptedError("stopped while computing features")
                failed.extend(bad)
                done += len(idx) + len(bad)
                if len(idx):
                    if normalize is not None:  # uint8 images, normalised here as one batch
                        x = normalize(images)
                    else:
                        x = images.to(device, non_blocking=True)
                    if channels_last:
                        x = x.to(memory_format=torch.channels_last)
                    with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                        out = frozen(x)
                    feats.append(_to_host(_storage_form(out)))
                    labels.append(y)
                    indices.append(idx)
                if on_batch:
                    on_batch(done, len(samples))
    finally:
        model.train(was_training)
        release_copy(frozen)
    if not feats:
        return torch.empty(0), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), failed
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # the non-blocking copies to the host have all landed
    return torch.cat(feats), torch.cat(labels), torch.cat(indices), failed


# Feature maps are big (e.g. 96x14x14 per image); half precision halves disk and
# memory at no cost to what a head learns from them. Vectors stay float32.
HALF_ABOVE_NUMEL = 8192
_FP16_MAX = 65504.0


def _storage_form(out: torch.Tensor) -> torch.Tensor:
    """A batch of outputs as stored: float32 vectors, or float16 maps.

    Values computed in bfloat16 (or float32) can lie beyond float16's range
    and would turn into inf; they are clipped to its largest finite value
    first (on the device, no synchronisation)."""
    if out[0].numel() <= HALF_ABOVE_NUMEL:
        return out.float()
    return out.float().clamp_(-_FP16_MAX, _FP16_MAX).half()


def _to_host(out: torch.Tensor) -> torch.Tensor:
    """Copy a batch to CPU memory without making the GPU wait: into pinned
    memory, asynchronously (the caller synchronises once, after the pass)."""
    if out.device.type != "cuda":
        return out
    host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
    host.copy_(out, non_blocking=True)
    return host


def release_copy(runner: nn.Module) -> None:
    """Free a folded copy made by inference_blocks as soon as it is done.

    Without this their weights stay in (GPU) memory until the copy's last
    reference goes (or, caught in a reference cycle, the garbage collector
    runs): old copies piled up during gradual unfreezing. Only a copy is
    freed (inference_blocks marks it): the model's own blocks, what it
    returns when there was nothing to fold, are left alone. Deciding by the
    mark, not by comparing every tensor with the model's, keeps this cheap
    enough for every validation of a warm linear probe."""
    if not getattr(runner, FOLDED_COPY, False):
        return
    for t in (*runner.parameters(), *runner.buffers()):
        t.data = torch.empty(0, dtype=t.dtype, device=t.device)


class PrefixRunner:
    """inference_blocks for a frozen prefix that changes during a run
    (gradual unfreezing): made once per span of blocks, and the copy for the
    previous span freed (release_copy) as soon as it is replaced, so only
    one is ever in (GPU) memory."""

    def __init__(self, model, channels_last: bool = False):
        self.model = model
        self.channels_last = channels_last
        self._span: tuple[int, int] | None = None
        self._runner: nn.Module | None = None

    def blocks(self, start: int, stop: int) -> nn.Module:
        if (start, stop) != self._span:
            self.release()
            self._runner = inference_blocks(self.model, start, stop, self.channels_last)
            self._span = (start, stop)
        return self._runner

    def release(self) -> None:
        if self._runner is not None:
            release_copy(self._runner)
        self._runner, self._span = None, None


def cached_prefix_features(
    model,
    prefix: int,
    splits: dict,
    transform,
    device,
    *,
    cache_dir: Path | None = None,
    seeds_of: dict | None = None,
    **kwargs,
) -> dict:
    """compute_prefix_features for sets of samples (train, val), each read
    from or written to the on-disk cache under its own key.

    splits: {name: (samples, key)}. The sets that are not in the cache are
    computed together in one pass: the frozen blocks are prepared once, and
    batches stay full across the sets' boundary. seeds_of: {name: one seed
    per sample} for a random transform.

    Returns {name: (features, labels, indices, failed, hit)}."""
    cache_dir = Path(cache_dir or default_cache_dir()) / "features"
    found, missing = {}, []
    for name, (_samples, key) in splits.items():
        path = cache_dir / f"{key}.pt"
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True) if path.exists() else None
        except Exception:  # noqa: BLE001 - a bad cache entry is recomputed, never trusted
            path.unlink(missing_ok=True)
            blob = None
        if blob is None:
            missing.append(name)
        else:
            found[name] = (blob["features"], blob["labels"], blob["indices"], blob["failed"].tolist(), True)
    if missing:
        together = [sample for name in missing for sample in splits[name][0]]
        if seeds_of:
            kwargs["seeds"] = [seed for name in missing for seed in seeds_of[name]]
        features, labels, indices, failed = compute_prefix_features(
            model, prefix, together, transform, device, **kwargs
        )
        cache_dir.mkdir(parents=True, exist_ok=True)
        start = 0
        for name in missing:
            end = start + len(splits[name][0])
            mine = (indices >= start) & (indices < end)
            entry = {
                "features": features[mine],
                "labels": labels[mine],
                "indices": indices[mine] - start,
                "failed": torch.tensor([i - start for i in failed if start <= i < end], dtype=torch.long),
            }
            atomic_torch_save(cache_dir / f"{splits[name][1]}.pt", entry)
            found[name] = (entry["features"], entry["labels"], entry["indices"], entry["failed"].tolist(), False)
            start = end
    return {name: found[name] for name in splits}


class FeatureBatches:
    """Batches of cached features for the training loop, in place of a
    DataLoader: (features, labels, indices, failed) like the image loaders.

    A DataLoader would fetch and stack every sample in Python; here a batch is
    one index_select on a tensor, so an epoch of a linear probe takes
    milliseconds. The features move to the device once (when they fit easily)
    and are converted to float32 there, so nothing is copied per batch.
    """

    def __init__(self, features, labels, indices, batch_size: int, shuffle: bool, seed: int, device):
        device = torch.device(device)
        if device.type == "cuda" and not fits_on_gpu(features, device):
            device = torch.device("cpu")  # kept in CPU memory, copied per batch
        if device.type != "cuda":
            features = features.float()  # CPU kernels want float32; once, not per batch
        self.features = features.to(device)
        self.labels = labels.to(device)
        self.indices = indices
        self.batch_size = max(1, int(batch_size))
        self.shuffle = shuffle
        self.generator = torch.Generator().manual_seed(seed)
        self.sampler = None  # distributed: the rows this rank reads, in order (core.distributed)

    def __len__(self) -> int:
        return math.ceil(len(self.sampler if self.sampler is not None else self.indices) / self.batch_size)

    def __iter__(self):
        n = len(self.indices)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else None
        if self.sampler is not None:
            order = torch.tensor(list(self.sampler), dtype=torch.long)
            n = len(order)
        # The order goes to the features' device once per epoch, not once per
        # batch (each copy of a CPU tensor to the GPU would wait for it).
        order_here = order.to(self.features.device) if order is not None else None
        for start in range(0, n, self.batch_size):
            if order is None:
                rows = slice(start, start + self.batch_size)
                x, y, idx = self.features[rows], self.labels[rows], self.indices[rows]
            else:
                pick = order_here[start : start + self.batch_size]
                x = self.features.index_select(0, pick)
                y = self.labels.index_select(0, pick)
                idx = self.indices.index_select(0, order[start : start + self.batch_size])
            yield x.float(), y, idx, []


def fits_on_gpu(features, device) -> bool:
    """Keep cached features on the GPU when they take under a quarter of its free memory."""
    try:
        free, _total = torch.cuda.mem_get_info(device)
    except Exception:  # noqa: BLE001 - no answer: don't risk it
        return False
    return features.numel() * 4 < free // 4


def describe_cache(record: dict | None) -> str:
    """The run's feature-cache record (status.json "feature_cache") in plain words."""
    if not record:
        return ""
    if not record.get("used"):
        why = record.get("why_not")
        # Words for a teacher: "stored features" meant nothing there.
        return f"Every epoch ran the pictures through all the blocks{': ' + why if why else ''}."
    # Blocks with weights only, as the Model page's picture counts them
    # (FreezePlan.frozen_blocks). A record written before "frozen_with_weights"
    # lists the whole prefix: "pool" has no weights, by design.
    frozen = record.get("frozen_with_weights")
    if frozen is None:
        frozen = [b for b in record.get("frozen_blocks") or [] if b != "pool"]
    blocks = len(frozen) or record.get("prefix_blocks")
    the_blocks, they, them = (
        ("the frozen block", "it", "it") if blocks == 1 else (f"the {blocks} frozen blocks", "they", "them")
    )
    where = "the training and validation images" if record.get("train", True) else "the validation images"
    views = record.get("train_views") or 0
    if views:
        versions = "1 randomly changed version" if views == 1 else f"{views} randomly changed versions"
        where = f"{versions} of each training image and the validation images"
    each_epoch = "each epoch took one version of each image and" if views else "each epoch"
    trained = f"{each_epoch} trained only the blocks after {them}."
    # Short sentences, no parenthesis: the note sits under the run's result.
    if record.get("hit"):
        text = f"Fast path: {the_blocks} ran once over {where}, for an earlier run or check of these "
        text += f"pictures, and what {they} made was kept; {trained}"
    else:
        text = f"Fast path: {the_blocks} ran once over {where}; {trained}"
        text += f" What {they} made is kept, so the next run of this network on these pictures starts sooner."
    if record.get("train") is False and record.get("why_not"):
        text += f" The training images still go through {them} every epoch (without learning): {record['why_not']}."
    return text


def transform_description(info, image_size: int | None = None) -> dict:
    """What about a picture's preparation changes the stored features: part
    of every cache key (training's and the folder check's alike)."""
    crop, resize = info.sizes(image_size)
    return {
        "image_size": crop,
        "resize_size": resize,
        "mean": list(info.mean),
        "std": list(info.std),
        "resize": f"{info.interpolation}, antialiased",
        "decode": "jpeg draft",
    }


def pooled_features(
    backbone: str,
    samples: list[tuple[str, int]],
    *,
    device: str = "auto",
    cache_dir: str | None = None,
    on_batch: Callable[[int, int], None] | None = None,
):
    """The pretrained backbone's pooled feature vector of every sample (one row
    each, in order; a broken file gets a row of zeros), stored in the feature
    cache like a linear probe's, so a second call is a read from disk."""
    from .devices import decode_threads, inference_batch_size, pick_device, use_channels_last
    from .loading import BatchNormalizer
    from .models import build_model

    here = pick_device(device)
    model = build_model(backbone, num_classes=2, init="pretrained").to(here)
    info = model.info
    prefix = model.block_names.index("head")
    crop, resize = info.sizes(None)
    key = cache_key(
        samples=samples,
        backbone=backbone,
        init="pretrained",
        weights_file=info.weights_file,
        prefix=prefix,
        block_names=model.block_names,
        transform_desc=transform_description(info),
        seed=0,
    )
    out = cached_prefix_features(
        model,
        prefix,
        {"all": (samples, key)},
        info.transforms(normalize=False),
        here,
        cache_dir=cache_dir,
        batch_size=inference_batch_size(here),
        threads=decode_threads(here),
        max_side=resize,
        normalize=BatchNormalizer(info.mean, info.std, here, channels_last=use_channels_last(here)),
        channels_last=use_channels_last(here),
        on_batch=on_batch,
    )
    features, _labels, indices, _failed, _hit = out["all"]
    rows = torch.zeros((len(samples), *features.shape[1:]), dtype=torch.float32)
    if len(indices):
        rows[indices] = features.float()
    return rows.flatten(1)
