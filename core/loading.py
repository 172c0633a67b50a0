"""From image files to batches a model takes: the transforms, a Dataset that
survives files going bad mid-training, the seeded per-picture random
choices, collating, the threaded loaders and batch normalising on the
device.

Images come from core.images (open_rgb, or a DecodedImageCache the scan
filled); nothing here walks folders or knows about Streamlit.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import v2

from .config import AUGMENT_PRESETS
from .images import DecodedImageCache, open_rgb

# --------------------------------------------------------------------------
# Transforms


def make_transform(
    image_size: int,
    resize_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    augment: str = "none",
    train: bool = False,
    normalize: bool = True,
    interpolation: str = "bilinear",
) -> Callable[[Image.Image], torch.Tensor]:
    """PIL RGB image -> normalised float tensor (3, image_size, image_size).

    Validation (train=False) and augment "none" use the deterministic resize +
    centre crop the backbone was pretrained with. interpolation: the resize
    filter its weights expect (BackboneInfo.interpolation; EfficientNet and
    ViT weights were made with bicubic).

    normalize=False stops at the uint8 tensor, for loaders that normalise a
    whole batch at once with BatchNormalizer (mean and std are then unused):
    the same numbers, at a fraction of the cost, and a quarter of the bytes
    to move to a GPU.
    """
    if augment not in AUGMENT_PRESETS:
        raise ValueError(f"Unknown augmentation preset {augment!r}; choose one of {', '.join(AUGMENT_PRESETS)}")
    mode = v2.InterpolationMode(interpolation)
    if not train or augment == "none":
        steps = [v2.Resize(resize_size, interpolation=mode, antialias=True), v2.CenterCrop(image_size)]
    else:
        steps = [v2.RandomResizedCrop(image_size, interpolation=mode, antialias=True), v2.RandomHorizontalFlip()]
        if augment == "strong":
            steps += [v2.ColorJitter(0.3, 0.3, 0.3, 0.05), v2.TrivialAugmentWide()]
    steps.append(v2.ToImage())
    if normalize:
        steps += [
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize([float(m) for m in mean], [float(s) for s in std]),
        ]
    steps.append(v2.ToPureTensor())  # a plain Tensor, not a tv_tensors.Image
    return v2.Compose(steps)


class BatchNormalizer:
    """A batch of uint8 images (from make_transform(normalize=False)) -> the
    normalised float tensor that make_transform(normalize=True) gives for
    each image, on `device`.

    One vectorised pass over the whole batch, on the device, instead of a
    few small tensor operations per image in the loader: on a CPU that saves
    about a millisecond an image of Python and memory traffic."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device, channels_last: bool = False):
        mean = torch.tensor([float(m) for m in mean]).view(1, 3, 1, 1)
        std = torch.tensor([float(s) for s in std]).view(1, 3, 1, 1)
        # (x / 255 - mean) / std as one multiply and one subtract.
        self.scale = (1.0 / (255.0 * std)).to(device)
        self.shift = (mean / std).to(device)
        self.device = torch.device(device)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device, non_blocking=True)
        x = x.to(torch.float32, memory_format=self.memory_format)
        return x.mul_(self.scale).sub_(self.shift)


class NormalizedBatches:
    """A loader of uint8 image batches, yielding them normalised (see
    BatchNormalizer): what the training loop and evaluation expect."""

    def __init__(self, loader, normalizer: BatchNormalizer):
        self.loader = loader
        self.normalizer = normalizer

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for images, labels, indices, failed in self.loader:
            if images.numel():
                images = self.normalizer(images)
            yield images, labels, indices, failed


# --------------------------------------------------------------------------
# Dataset


class ImageDataset(Dataset):
    """(path, label) samples -> (tensor, label, index).

    A file can go bad after the scan (deleted, overwritten, disk error). Then
    the item's image is None instead of an exception, so one file cannot kill
    an hour of training; collate_skip_broken drops it and reports its index.

    decoded: a DecodedImageCache holding (some of) the images already decoded;
    those are taken from memory, the others read from disk as usual.
    """

    def __init__(
        self,
        samples: list[tuple[str, int]],
        transform,
        max_side: int | None = None,
        decoded: DecodedImageCache | None = None,
    ):
        if decoded is not None and decoded.short_side != max_side:
            # Its images were resized for another transform: resizing them
            # again would not give what reading the file gives.
            raise ValueError(
                f"The decoded images have a shorter side of {decoded.short_side}, not max_side={max_side}."
            )
        self.samples = list(samples)
        self.transform = transform
        self.max_side = max_side
        self.decoded = decoded

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        return self.item(i)

    def item(self, i: int, seed: int | None = None):
        """__getitem__, with the random choices of the transform (crops,
        flips) drawn from `seed` when given: the same seed, the same picture,
        whichever thread reads it and whenever (see ThreadedLoader)."""
        path, label = self.samples[i]
        try:
            image = self.decoded.get(path) if self.decoded is not None else None
            if image is None:
                image = open_rgb(path, self.max_side)
            if self.transform is not None:
                if seed is None:
                    image = self.transform(image)
                else:
                    with _seeded_cpu_rng(seed):
                        image = self.transform(image)
            return image, label, i
        except Exception:
            return None, label, i


# torchvision's random transforms draw from torch's one global CPU generator.
# Threads reading images at once would take turns on it in whatever order they
# run, so a run's crops would depend on thread timing; each seeded transform
# holds this lock and runs from its own seed instead. Decoding (the slow part)
# stays outside the lock.
_CPU_RNG_LOCK = threading.Lock()


@contextlib.contextmanager
def _seeded_cpu_rng(seed: int):
    generator = torch.default_generator  # the CPU one only: CUDA's generators are left alone
    with _CPU_RNG_LOCK:
        state = generator.get_state()
        generator.manual_seed(seed)
        try:
            yield
        finally:
            generator.set_state(state)  # the training thread's own random stream goes on untouched


def _stack_images(images: list[torch.Tensor]) -> torch.Tensor:
    """torch.stack, but fast for images that are (height, width, channel)
    pixels seen as (channel, height, width), which is what a PIL image
    becomes: stacking those views as they are copies one byte at a time
    (about 7 ms per 224x224 image), while stacking the pixels in their own
    order is a plain memory copy. The result is the same tensor, in
    channels-last memory layout, the layout the model wants anyway."""
    if all(x.dim() == 3 and x.permute(1, 2, 0).is_contiguous() for x in images):
        return torch.stack([x.permute(1, 2, 0) for x in images]).permute(0, 3, 1, 2)
    return torch.stack(images)


def collate_skip_broken(batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    """Stack the good items; return (images, labels, indices, failed_indices).

    If every item failed, images is torch.empty(0) and labels/indices have
    shape (0,): the training loop skips such a batch and counts the failures.
    """
    good = [item for item in batch if item[0] is not None]
    failed = [int(item[2]) for item in batch if item[0] is None]
    if not good:
        empty = torch.empty(0, dtype=torch.long)
        return torch.empty(0), empty, empty.clone(), failed
    images = _stack_images([item[0] for item in good])
    labels = torch.tensor([int(item[1]) for item in good], dtype=torch.long)
    indices = torch.tensor([int(item[2]) for item in good], dtype=torch.long)
    return images, labels, indices, failed


def threaded_batches(
    dataset: Dataset,
    batch_size: int,
    *,
    threads: int = 1,
    ahead: int = 0,
    order: Sequence[int] | None = None,
    pin_memory: bool = False,
    seeds: Sequence[int] | None = None,
    first: int | None = None,
):
    """Yield collate_skip_broken batches of `dataset` (in `order`, default all
    in turn), each batch's images read by `threads` threads at once.

    PIL decodes and resizes without holding the GIL, so the threads really run
    in parallel, with none of the start-up cost and pickling of worker
    processes. `ahead`: how many batches are read while the caller works on
    the current one. On a GPU, ahead >= 1: the GPU computes while the CPU
    reads. On a CPU, 0: the model's own threads already use every core, and
    reading and computing at the same time only makes them take turns (its
    threads wait for each other at every layer), so it is faster to read a
    batch with every core, then compute with every core. `seeds`: one per
    item of `dataset`, for its random transform (ImageDataset.item). `first`:
    the first batch's size; each next one is twice as big, up to `batch_size`
    (a long pass then reports progress after its first few pictures).
    """
    order = list(range(len(dataset))) if order is None else list(order)
    chunks = iter(batch_chunks(order, batch_size, first))
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        pending: list[tuple[list, Future]] = []  # (the items' futures, the batch's)

        def top_up(count: int) -> None:
            while len(pending) < count:
                chunk = next(chunks, None)
                if chunk is None:
                    return
                if seeds is None:
                    items = [pool.submit(dataset.__getitem__, i) for i in chunk]
                else:
                    items = [pool.submit(dataset.item, i, seeds[i]) for i in chunk]
                # Submitted after its items, so a reader takes it up only
                # once they are all being read: it never waits on an item
                # that no thread would pick up.
                pending.append((items, pool.submit(_assemble, items, pin_memory)))

        try:
            while True:
                top_up(1)
                if not pending:
                    return
                batch = pending.pop(0)[1].result()
                top_up(ahead)
                yield batch
        finally:  # also when the caller stops early: drop what was not started
            for items, assembled in pending:
                for future in (*items, assembled):
                    future.cancel()


def batch_chunks(order: list, batch_size: int, first: int | None = None) -> list[list]:
    """`order` cut into batches of `batch_size`, the first ones growing from `first`."""
    chunks, start, size = [], 0, max(1, min(first or batch_size, batch_size))
    while start < len(order):
        chunks.append(order[start : start + size])
        start += size
        size = min(batch_size, size * 2)
    return chunks


def _assemble(items: list[Future], pin_memory: bool):
    """A batch from its items' futures, in a reader thread: stacked, and on a
    GPU pinned (page-locked), so that its copy to the GPU can run
    asynchronously; the thread that trains only takes it."""
    batch = collate_skip_broken([future.result() for future in items])
    if pin_memory and batch[0].numel():
        batch = (batch[0].pin_memory(), *batch[1:])
    return batch


class ThreadedLoader:
    """A DataLoader's epochs (reshuffled each time with a seeded generator)
    through threaded_batches: for training and validation on a CPU, where
    worker processes would only compete with the model for the same cores.

    With shuffle (training), each image's random transform also gets a seed
    from that generator, so an augmented run is the same every time it is
    run with the same seed, as with a DataLoader's seeded worker processes."""

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        threads: int = 1,
        ahead: int = 0,
        pin_memory: bool = False,
    ):
        self.dataset = dataset
        self.batch_size = max(1, int(batch_size))
        self.shuffle = shuffle
        self.generator = torch.Generator().manual_seed(seed)
        self.threads, self.ahead, self.pin_memory = threads, ahead, pin_memory
        self.sampler = None  # distributed: the items this rank reads, in order (core.distributed)

    def __len__(self) -> int:
        return math.ceil(len(self.sampler if self.sampler is not None else self.dataset) / self.batch_size)

    def __iter__(self):
        n = len(self.dataset)
        order = seeds = None
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator).tolist()
            if hasattr(self.dataset, "item"):
                seeds = torch.randint(0, 2**62, (n,), generator=self.generator).tolist()
        if self.sampler is not None:
            order = list(self.sampler)
        yield from threaded_batches(
            self.dataset,
            self.batch_size,
            threads=self.threads,
            ahead=self.ahead,
            order=order,
            pin_memory=self.pin_memory,
            seeds=seeds,
        )
