"""The feature cache: run a frozen prefix of the backbone once per image and keep
its outputs on disk, so a linear probe (or a fine-tune of the top blocks) trains
on stored tensors instead of decoding and re-running the same frozen layers
every epoch.

It is only valid for a fixed (eval) transform: with random augmentation the
input changes every epoch, so the training loop does not use it then.

The cache key covers everything that changes the stored outputs: the files
(path, size, modification time), the backbone and its weights, the prefix
length, the image size and normalisation. Change any of them and a new entry is
computed; an old one is never read for a different key.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import DataLoader

from .data import ImageDataset, collate_skip_broken
from .runs import atomic_torch_save


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


def cache_key(*, samples, backbone: str, init: str, weights_file: str | None, prefix: int,
              block_names: list[str], transform_desc: dict, seed: int) -> str:
    payload = {
        "version": 1,
        "files": files_fingerprint(samples),
        "backbone": backbone,
        "weights": weights_identity(init),
        "weights_file": weights_file,
        "prefix": prefix,
        "blocks": block_names[:prefix],
        "transform": transform_desc,
        "torch": torch.__version__.split("+")[0],
        # Random initial weights come from the seed, so they are part of the key.
        "seed": seed if init == "random" else None,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:32]


@torch.no_grad()
def compute_prefix_features(model, prefix: int, samples, transform, device, *, batch_size: int = 64,
                            num_workers: int = 0, max_side: int | None = None,
                            should_stop: Callable[[], bool] = lambda: False,
                            on_batch: Callable[[int, int], None] | None = None,
                            channels_last: bool = False, autocast_dtype=None):
    """Run blocks[:prefix] over every sample with the eval transform.

    Returns (features, labels, indices, failed_indices): features is a CPU
    tensor (float16 for big feature maps, float32 for vectors) in the order of
    `indices` into `samples`; broken files are left out and listed."""
    was_training = model.training
    model.eval()
    dataset = ImageDataset(samples, transform, max_side=max_side)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_skip_broken, pin_memory=device.type == "cuda")
    feats, labels, indices, failed = [], [], [], []
    done = 0
    for images, y, idx, bad in loader:
        if should_stop():
            raise InterruptedError("stopped while computing features")
        failed.extend(bad)
        done += len(idx) + len(bad)
        if len(idx):
            x = images.to(device, non_blocking=True)
            if channels_last:
                x = x.to(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                out = model.forward_to(prefix, x)
            out = out.float().cpu()
            feats.append(out)
            labels.append(y)
            indices.append(idx)
        if on_batch:
            on_batch(done, len(samples))
    model.train(was_training)
    if not feats:
        return torch.empty(0), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), failed
    features = torch.cat(feats)
    # Feature maps are big (e.g. 96x14x14 per image); half precision halves disk and
    # memory at no cost to what a head learns from them. Vectors stay float32.
    if features[0].numel() > 8192:
        features = features.half()
    return features, torch.cat(labels), torch.cat(indices), failed


def cached_prefix_features(model, prefix: int, samples, transform, device, *, key: str,
                           cache_dir: Path | None = None, **kwargs):
    """compute_prefix_features, read from / written to the on-disk cache.

    Returns (features, labels, indices, failed, hit)."""
    cache_dir = Path(cache_dir or default_cache_dir()) / "features"
    path = cache_dir / f"{key}.pt"
    if path.exists():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            return blob["features"], blob["labels"], blob["indices"], list(blob["failed"]), True
        except Exception:
            path.unlink(missing_ok=True)  # a bad cache entry is recomputed, never trusted
    features, labels, indices, failed = compute_prefix_features(model, prefix, samples, transform, device, **kwargs)
    cache_dir.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(path, {"features": features, "labels": labels, "indices": indices,
                             "failed": torch.tensor(failed, dtype=torch.long)})
    return features, labels, indices, failed, False
