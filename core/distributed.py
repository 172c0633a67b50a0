"""Training one run with several processes (torchrun), on PyTorch's own
distributed engine: a process group, DistributedDataParallel, a
DistributedSampler per split.

`torchrun --nproc_per_node N -m core train DATA …` starts N copies of the
command; torchrun gives each one RANK, WORLD_SIZE, LOCAL_RANK and
MASTER_ADDR/PORT. `init_from_env` joins them into one process group (NCCL on
GPUs, gloo on CPUs), with a timeout, so that a rank that stops answering makes
the others fail with a reason instead of waiting for ever. Everything else here
is a small piece the training loop calls at one place (see the "distributed:"
comments in core.training and core.training_data); with one process each is
a no-op, so a plain run is untouched:

- `place`: each rank's GPU (cuda:LOCAL_RANK);
- `per_rank_decisions`: the batch split between ranks, so the global batch is
  the one a single process would take;
- `prefix_features`: the feature pass of frozen blocks split across ranks and
  gathered, so every rank holds every picture's features (rank 0 stores them);
- `shard_loaders` / `set_epoch`: a DistributedSampler per split (training
  shuffled and reshuffled every epoch; validation in order, not padded);
- `wrap_model`: DistributedDataParallel around what trains;
- `sum_over_ranks`, `any_rank`: metric sums and stop requests over all ranks,
  so the run reports the numbers one process would and all ranks stop together;
- `PeerRun`: rank 0 alone writes the run folder; the others read it.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from .features import cached_prefix_features, compute_prefix_features, default_cache_dir
from .files import atomic_torch_save
from .runs import Run

# How long a rank waits for the others at one collective before it gives up
# (a dead or hung peer). Long enough for a feature pass on a slow rank.
TIMEOUT_S = float(os.environ.get("TRANSFER_STUDIO_DDP_TIMEOUT", "600"))


@dataclass(frozen=True)
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def backend_for(cuda: bool) -> str:
    """NCCL between GPUs, gloo between CPUs."""
    return "nccl" if cuda and dist.is_nccl_available() else "gloo"


def init_from_env(device: str = "auto") -> World:
    """Join the process group torchrun's environment describes (once).
    device: the run's device setting; "cpu" trains on CPUs even where GPUs are."""
    if dist.is_initialized():
        return current()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and not str(device).startswith(("cpu", "mps"))
    if cuda:
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    backend = backend_for(cuda)
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=TIMEOUT_S))
    return current()


def current() -> World:
    """This process's place in the run (one process: rank 0 of 1)."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        backend=dist.get_backend(),
    )


def finish() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# --- one place each in the loop ----------------------------------------------------


def place(device: torch.device) -> torch.device:
    """The device of this rank: its own GPU (LOCAL_RANK) under NCCL."""
    w = current()
    if w.active and device.type == "cuda":
        return torch.device("cuda", w.local_rank % torch.cuda.device_count())
    return device


def per_rank_decisions(decisions):
    """The training batch is split between the ranks, so a step still sees
    the global batch a single process would (DDP averages the gradients)."""
    w = current()
    if not w.active:
        return decisions
    return dataclasses.replace(decisions, batch_size=max(1, math.ceil(decisions.batch_size / w.world_size)))


def prefix_features(model, prefix: int, splits: dict, transform, device, *, cache_dir=None, **kwargs) -> dict:
    """core.features.cached_prefix_features, with the pictures split between
    the ranks: each computes the frozen blocks' outputs of its share, and
    every rank gets all of them back, in order. Rank 0 writes the cache; it
    is used only when every rank finds it."""
    w = current()
    if not w.active:
        return cached_prefix_features(model, prefix, splits, transform, device, cache_dir=cache_dir, **kwargs)
    folder = Path(cache_dir or default_cache_dir()) / "features"
    # A stop seen by one rank in the middle of the pass would leave the others
    # waiting at the gather: the stop is taken at the first training batch.
    kwargs["should_stop"] = lambda: False
    found = {}
    for name, (_samples, key) in splits.items():
        try:
            path = folder / f"{key}.pt"
            found[name] = torch.load(path, map_location="cpu", weights_only=True) if path.exists() else None
        except Exception:  # noqa: BLE001 - a bad entry is recomputed
            found[name] = None
    if not any_rank(any(blob is None for blob in found.values())):
        return {
            name: (b["features"], b["labels"], b["indices"], b["failed"].tolist(), True) for name, b in found.items()
        }
    together = [sample for samples, _key in splits.values() for sample in samples]
    mine = list(range(w.rank, len(together), w.world_size))
    seeds_of = kwargs.pop("seeds_of", None)
    if seeds_of:  # a random transform: each picture keeps its own seed, whichever rank reads it
        seeds = [seed for name in splits for seed in seeds_of[name]]
        kwargs["seeds"] = [seeds[i] for i in mine]
    features, labels, indices, failed = compute_prefix_features(
        model, prefix, [together[i] for i in mine], transform, device, **kwargs
    )
    part = (
        features,
        labels,
        torch.tensor([mine[i] for i in indices.tolist()], dtype=torch.long),
        [mine[i] for i in failed],
    )
    parts = [None] * w.world_size
    dist.all_gather_object(parts, part)
    features = torch.cat([p[0] for p in parts])
    labels = torch.cat([p[1] for p in parts])
    indices = torch.cat([p[2] for p in parts])
    failed = sorted(i for p in parts for i in p[3])
    order = torch.argsort(indices)
    features, labels, indices = features[order], labels[order], indices[order]
    out, start = {}, 0
    for name, (samples, key) in splits.items():
        end = start + len(samples)
        keep = (indices >= start) & (indices < end)
        entry = {
            "features": features[keep],
            "labels": labels[keep],
            "indices": indices[keep] - start,
            "failed": torch.tensor([i - start for i in failed if start <= i < end], dtype=torch.long),
        }
        if w.main:
            folder.mkdir(parents=True, exist_ok=True)
            atomic_torch_save(folder / f"{key}.pt", entry)
        out[name] = (entry["features"], entry["labels"], entry["indices"], entry["failed"].tolist(), False)
        start = end
    return out


class _Rows:
    """A sized stand-in for a dataset: DistributedSampler needs only len()."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n


def shard_loaders(data, seed: int) -> None:
    """A DistributedSampler per split. Training: shuffled by (seed, epoch)
    (set_epoch) and dealt out, rank r taking items r, r+W, ... of the
    epoch's order; with the batch split W ways (per_rank_decisions), the W
    ranks' batches together are exactly the batch one process takes, so a
    run trains the same on 1 or W processes (one process uses the same
    sampler). Validation (W > 1 only): dealt out in order and not padded,
    so the summed metrics count each picture once; the full validation
    loader is kept for the final evaluation on rank 0."""
    w = current()
    train = DistributedSampler(_Rows(_size(data.train_loader)), w.world_size, w.rank, shuffle=True, seed=seed)
    data.train_loader = _with_sampler(data.train_loader, train)
    if w.active:
        data.full_val_loader = data.val_loader
        val = list(range(w.rank, _size(data.val_loader), w.world_size))
        data.val_loader = _with_sampler(data.val_loader, val)


def _size(loader) -> int:
    inner = getattr(loader, "loader", loader)  # NormalizedBatches
    if hasattr(inner, "dataset"):
        return len(inner.dataset)
    return len(inner.indices)  # FeatureBatches


def _with_sampler(loader, sampler):
    """A copy of the loader that reads only `sampler`'s rows (FeatureBatches
    and ThreadedLoader take a sampler; a DataLoader is made again with it).
    The loader itself is left as it was."""
    loader = copy.copy(loader)
    if not hasattr(loader, "loader"):  # FeatureBatches
        loader.sampler = sampler
        return loader
    inner = loader.loader  # NormalizedBatches around a ThreadedLoader or a DataLoader
    if isinstance(inner, DataLoader):
        loader.loader = DataLoader(
            inner.dataset,
            batch_size=inner.batch_size,
            sampler=sampler,
            num_workers=inner.num_workers,
            collate_fn=inner.collate_fn,
            pin_memory=inner.pin_memory,
            persistent_workers=inner.persistent_workers,
            timeout=inner.timeout,
            multiprocessing_context=inner.multiprocessing_context,
        )
    else:
        loader.loader = copy.copy(inner)
        loader.loader.sampler = sampler
    return loader


def set_epoch(data, epoch: int) -> None:
    """Reshuffle the training split for this epoch, the same on every rank."""
    inner = getattr(data.train_loader, "loader", data.train_loader)
    sampler = getattr(inner, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)


def final_val_loader(data):
    """Every validation picture (the final evaluation runs on rank 0 alone)."""
    return getattr(data, "full_val_loader", None) or data.val_loader


class _FromBlock(nn.Module):
    """model.forward_from(start, x) as a forward(), so DDP sees the call."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, start: int, x):
        return self.model.forward_from(start, x)


def wrap_model(model, device: torch.device):
    """The function the loop trains through: model.forward_from with one
    process; with several, the same through DistributedDataParallel (made
    again whenever the set of trained blocks changes, as DDP registers the
    parameters that train when it is made)."""
    if not current().active:
        return model.forward_from
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(_FromBlock(model), device_ids=ids, find_unused_parameters=False)


def sum_over_ranks(*values):
    """Each value summed over all ranks (floats and ints, or 0-d tensors);
    one process: unchanged."""
    if not current().active:
        return values
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return tuple(type(v)(x) if isinstance(v, (int, float)) else x for v, x in zip(values, t.tolist()))


def any_rank(flag: bool) -> bool:
    """True on every rank when it is true on any (stop requests)."""
    if not current().active:
        return bool(flag)
    return sum_over_ranks(1.0 if flag else 0.0)[0] > 0


# --- the run folder ---------------------------------------------------------------


class PeerRun(Run):
    """The run folder as ranks other than 0 see it: they read it (resume,
    status) and never write it; rank 0 writes everything."""

    def write_json(self, name: str, obj) -> None:
        pass

    def update_status(self, **changes) -> dict:
        return {**self.status, **changes}

    def write_metrics(self, rows: list[dict]) -> None:
        pass

    def save_checkpoint(self, name: str, payload: dict) -> None:
        pass

    def remove_leftovers(self, lock=None) -> list[str]:
        return []


def share_path(path: str | None) -> str:
    """Rank 0's run folder, told to every rank."""
    box = [path]
    dist.broadcast_object_list(box, src=0)
    return box[0]
