"""Stored augmented views: what the frozen blocks make of a few randomly
changed versions of each training picture, computed once; each epoch draws
one version of each picture.

With augmentation the training pictures change every epoch, so the blocks
frozen at the bottom of the network would run over every picture in every
epoch, while only the top blocks learn. Those frozen blocks are most of the
work (stem to stage 3 of MobileNetV2 for a `last-2` fine-tune). Running them
once over K changed versions of each picture (the run's own random crops and
flips, each from its own seed) and storing the outputs brings most of a linear
probe's speed to a fine-tune of the top blocks: an epoch then runs only the
blocks that learn. The price is variety: over the run the model sees K
versions of each picture instead of a new one every epoch (README, Speed,
measures what that does to accuracy; `augment_views` = 0 turns it off).

The K versions are stored in memory (as float16 when they are feature maps)
and in the on-disk feature cache, one entry per version, so a second run on
the same pictures (another learning rate, another head) starts at once.
"""

from __future__ import annotations

import math

import torch

from .features import HALF_ABOVE_NUMEL, fits_on_gpu


def stored_bytes_per_picture(model, prefix: int, image_size: int) -> int:
    """Bytes the frozen blocks[:prefix]'s output of one picture takes when
    stored, found by running them once on a blank picture (milliseconds)."""
    if prefix <= 0:
        return 0
    was_training = model.training
    model.eval()  # BatchNorm's running statistics stay as they are
    try:
        with torch.inference_mode():
            device = next(model.parameters()).device
            out = model.forward_to(prefix, torch.zeros(1, 3, image_size, image_size, device=device))
    finally:
        model.train(was_training)
    numel = out[0].numel()
    return numel * (2 if numel > HALF_ABOVE_NUMEL else 4)


def view_seeds(seed: int, view: int, pictures: int) -> list[int]:
    """One seed per picture for version `view`: the same run seed gives the
    same versions, on one process or several, today or when resumed."""
    generator = torch.Generator().manual_seed(seed * 7919 + view + 1)
    return torch.randint(0, 2**62, (pictures,), generator=generator).tolist()


def view_transform_description(transform_desc: dict, augment: str, seed: int, view: int) -> dict:
    """A version's part of its feature-cache key: the augmentation and its seeds."""
    return {**transform_desc, "augment": augment, "view": view, "view_seed": seed}


def stack_views(per_view: list[tuple]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    """The K versions' (features, labels, indices, failed) as one table:
    (features of shape (K * N, ...) with version v of picture p in row
    v * N + p, labels (N,), indices (N,), failed). A picture that failed in
    any version is left out of all of them."""
    failed = sorted({i for _f, _l, _i, bad in per_view for i in bad})
    common = set(per_view[0][2].tolist())
    for _f, _l, indices, _bad in per_view[1:]:
        common &= set(indices.tolist())
    keep = torch.tensor(sorted(common), dtype=torch.long)
    rows, labels = [], None
    for features, view_labels, indices, _bad in per_view:
        where = {int(i): r for r, i in enumerate(indices.tolist())}
        pick = torch.tensor([where[int(i)] for i in keep], dtype=torch.long)
        rows.append(features.index_select(0, pick))
        labels = view_labels.index_select(0, pick)
    return torch.cat(rows), labels, keep, failed


class ViewBatches:
    """Batches of stored versions for the training loop, like
    core.features.FeatureBatches: (features, labels, indices, failed).

    Each picture starts at a random version (from the run's seed) and moves
    to the next one every epoch, so over K epochs it meets each of its K
    versions once; the epoch comes from the sampler (set_epoch, see
    core.distributed), so a resumed run draws what an unbroken one would."""

    def __init__(self, features, labels, indices, views: int, batch_size: int, seed: int, device):
        device = torch.device(device)
        if device.type == "cuda" and not fits_on_gpu(features, device):
            device = torch.device("cpu")  # kept in CPU memory, copied per batch
        self.features = features.to(device)  # float16 maps stay float16: K times the memory otherwise
        self.labels = labels.to(device)
        self.indices = indices
        self.views = int(views)
        self.pictures = len(indices)
        self.batch_size = max(1, int(batch_size))
        self.offsets = torch.randint(0, self.views, (self.pictures,), generator=torch.Generator().manual_seed(seed))
        self.generator = torch.Generator().manual_seed(seed)
        self.sampler = None  # distributed: the pictures this rank reads, in order (core.distributed)
        self._epochs_seen = 0

    def __len__(self) -> int:
        return math.ceil(len(self.sampler if self.sampler is not None else self.indices) / self.batch_size)

    def __iter__(self):
        if self.sampler is not None:
            order = torch.tensor(list(self.sampler), dtype=torch.long)
            epoch = getattr(self.sampler, "epoch", self._epochs_seen)
        else:
            order = torch.randperm(self.pictures, generator=self.generator)
            epoch = self._epochs_seen
        self._epochs_seen += 1
        view = (self.offsets.index_select(0, order) + epoch) % self.views
        rows = (view * self.pictures + order).to(self.features.device)
        order_here = order.to(self.labels.device)
        for start in range(0, len(order), self.batch_size):
            pick = rows[start : start + self.batch_size]
            x = self.features.index_select(0, pick)
            y = self.labels.index_select(0, order_here[start : start + self.batch_size])
            yield x.float(), y, self.indices.index_select(0, order[start : start + self.batch_size]), []
