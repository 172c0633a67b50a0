"""The machine's rules: which device trains, and what suits it.

Each function answers one question about a device (its precision, how many
pictures fit in a batch, how many workers read them, whether channels-last
pays). They are asked once per training, by core.decisions.decide, whose
answers the loop then uses; the app and the benchmark ask them directly for
passes of their own.
"""
from __future__ import annotations

import gc
import os
import random

import numpy as np
import torch

from .errors import TrainingError


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


def release_device_memory(device: torch.device) -> None:
    """Give the memory of a finished run back. Call it once nothing refers to
    the run's tensors any more: gc.collect frees those caught in reference
    cycles, and empty_cache hands the blocks PyTorch's caching allocator still
    holds back to the driver, so other programs (and the next run) get them."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
