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
import shutil
import sys
import time
import warnings

import numpy as np
import torch

from .errors import TrainingError


def pick_device(preference: str = "auto") -> torch.device:
    """CUDA, then Apple MPS, then CPU, unless the user names one. A CUDA
    device always comes with its number ("cuda" is GPU 0): which GPU is
    "current" differs from thread to thread, so an unnumbered device would
    mean another GPU in the job's thread than where it was picked."""
    preference = (preference or "auto").lower()
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", 0)
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError("You chose the GPU (CUDA), but no CUDA GPU is available here. Choose 'auto' or 'cpu'.")
    if device.type == "cuda":
        device = torch.device("cuda", device.index or 0)
        if device.index >= torch.cuda.device_count():
            raise TrainingError(
                f"You chose GPU {device.index}, but this machine has "
                f"{torch.cuda.device_count()} (numbered from 0). Choose 'auto' or another one."
            )
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise TrainingError("You chose Apple's GPU (MPS), but it is not available here. Choose 'auto' or 'cpu'.")
    return device


def device_key(preference: str = "auto") -> str:
    try:
        device = pick_device(preference)
    except TrainingError:
        return str(preference)
    return str(device)


def use_in_this_thread(device: torch.device) -> None:
    """Make `device` the current GPU of the calling thread (a job's). CUDA's
    current device is per thread and starts at GPU 0, and what follows uses
    the current one: pinned host memory, empty_cache, streams, bf16 checks.
    Nothing happens for a CPU or MPS device (no CUDA context is made)."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    elif device.type == "cpu":
        torch.set_num_threads(free_cores())


def free_cores(samples: int = 5) -> int:
    """The cores a CPU training can have to itself now: this process's cores
    less the other tasks running at this moment (the kernel's count of
    runnable tasks, /proc/loadavg, the median of a few looks over 40
    milliseconds, a time a warm run's start can spare), at least one. The load average would count this process's own
    work of the last minute. Why it matters: the compute threads of one
    operation wait for each other, so on 2 cores with another busy program, 2
    threads trained a MobileNetV2 fine-tune's epoch 2.4x slower than 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    counts = []
    for _ in range(samples):
        try:
            with open("/proc/loadavg") as f:
                running = int(f.read().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            return cores  # not Linux: use them all, as torch does
        counts.append(running - 1)  # not this task, which is running to read it
        time.sleep(0.01)
    others = sorted(counts)[len(counts) // 2]
    return max(1, min(cores, cores - others))


def describe_device(device: torch.device) -> dict:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return {
            "device": str(device),
            "device_name": props.name,
            "device_memory_gb": round(props.total_memory / 2**30, 1),
        }
    if device.type == "mps":
        return {"device": "mps", "device_name": "Apple GPU (MPS)", "device_memory_gb": None}
    return {
        "device": "cpu",
        "device_name": f"CPU ({os.cpu_count()} cores)",
        "device_memory_gb": None,
        "cpu_threads": torch.get_num_threads(),  # free_cores(), set by use_in_this_thread
    }


def autocast_dtype(device: torch.device, enabled: bool):
    """The mixed-precision type of training steps, validation and evaluation
    on CUDA (see half_precision_for), or None for float32. CPUs stay in
    float32 there: on a Xeon with bf16 units, whole MobileNetV2 fine-tunes
    took as long in bf16 as in float32 (the casts of the trained weights at
    every step, BatchNorm folded while training, cost what the smaller
    numbers save), and float32 keeps a run's figures exactly what float32
    predictions later give (bf16 moves confidences by a percent or two)."""
    if not enabled or device.type != "cuda":
        return None
    return half_precision_for(torch.cuda.get_device_capability(device))


def feature_pass_autocast(device: torch.device, enabled: bool):
    """The type of the frozen blocks' one pass over the training pictures
    (or their stored versions), whose outputs only feed the learning: as
    autocast_dtype, and bf16 on a CPU with bf16 units (cpu_has_bf16_units)."""
    if enabled and device.type == "cpu" and cpu_has_bf16_units():
        return torch.bfloat16
    return autocast_dtype(device, enabled)


def cpu_has_bf16_units() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware: Intel AMX (Xeon
    from Sapphire Rapids on), which oneDNN's convolutions use. Measured on a
    2-core Xeon with AMX: the frozen blocks' pass over pictures 1.4x faster
    than float32 (MobileNetV2, channels-last); a last-2 fine-tune with 4
    stored versions used about a fifth less CPU time. CPUs with AVX512-BF16
    alone (AMD Zen 4) stay in float32 until measured there."""
    try:
        return bool(torch.cpu._is_amx_tile_supported() and torch.cpu._is_avx512_bf16_supported())
    except (AttributeError, RuntimeError):  # private helpers of torch.cpu: absent in other versions
        return False


def half_precision_for(capability: tuple[int, int]) -> torch.dtype:
    """bf16 on GPUs that compute it in hardware (compute capability 8.0 and
    up: A100, RTX 30xx, H100), which needs no loss scaling; fp16 with a
    GradScaler below (V100 7.0, T4 7.5). torch.cuda.is_bf16_supported() is
    no guide: it also says yes where bf16 is only emulated, far slower."""
    return torch.bfloat16 if tuple(capability) >= (8, 0) else torch.float16


# How many images a pass without gradients (feature cache, validation) puts
# through the model at once, per GiB of GPU memory: activations alone, no
# gradients kept. 16 per GiB gives 128 on an 8 GB card and the cap of 256 from
# 16 GB on; VGG-16 at 224 px, the hungriest backbone here, needs about 40 MB
# per image in half precision, so 16 of them fit in well under a GiB.
_INFERENCE_IMAGES_PER_GIB = 16


def _cuda_memory_gib(device: torch.device) -> float:
    return torch.cuda.get_device_properties(device).total_memory / 2**30


def inference_batch_size(device: torch.device) -> int:
    """Batch size for passes of pictures without gradients (the feature pass,
    validation and tests that read pictures).

    CPU: 8. A convolutional network's first blocks make big activation maps
    (MobileNetV2's stem: 1.6 MB a picture); a batch of 8 keeps them in the
    processor's cache, a batch of 64 sends them through main memory.
    Measured on a 2-core CPU (bench, README's Speed): MobileNetV2's frozen
    stem-to-stage-3 ran 1.5-2x faster a picture in batches of 8 than of 64,
    EfficientNet-Lite0 2x. GPU: as many as its memory holds comfortably,
    so the GPU is not starved by small batches."""
    if device.type != "cuda":
        return 8
    return int(max(32, min(256, _INFERENCE_IMAGES_PER_GIB * _cuda_memory_gib(device))))


def stored_features_batch_size(device: torch.device) -> int:
    """Batch size for passes over stored features without gradients (the
    validation of a run whose frozen blocks ran once). Their maps are small
    (MobileNetV2 after stage 3: 32x28x28), so bigger batches pay: on the
    same CPU the trained blocks ran about 1.25x faster a picture in batches
    of 64 than of 8. GPU: the inference batch."""
    return 64 if device.type != "cuda" else inference_batch_size(device)


def training_slice(device: torch.device) -> int:
    """On a CPU, training batches of pictures run in slices of this many,
    their gradients summed (core.sliced_steps): the inference batch, for the
    same reason (the activation maps stay in the cache). 0 on a GPU, which
    wants whole batches."""
    return inference_batch_size(device) if device.type != "cuda" else 0


def first_feature_batch(device: torch.device, eval_batch: int) -> int:
    """The feature pass's first batch. On a CPU a batch takes a while, so
    the pass starts with at most 8 pictures (then doubles up to the batch
    size): its progress, speed and time left show after the first few
    pictures. A GPU takes whole batches at once (and each new batch shape
    costs cuDNN a new search)."""
    return min(8, eval_batch) if device.type != "cuda" else eval_batch


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


# Worker processes hand every batch over through shared memory (/dev/shm);
# with less free than this, a few batches in flight (workers x 2 of them, a
# batch of 64 pictures at 224 px is about 10 MB) can run out of it, and a
# worker dies of a bus error mid-epoch. Containers get 64 MB by default.
MIN_SHARED_MEMORY = 512 * 2**20

# Seconds a DataLoader waits for a worker's batch before the run fails with a
# reason: a batch takes well under a second, the first one a few seconds
# (the workers start), so minutes mean a worker is stuck, never slow.
LOADER_TIMEOUT_S = 300


def shared_memory_free(path: str = "/dev/shm") -> int | None:
    """Bytes free in shared memory, or None where there is no /dev/shm to ask
    (macOS, Windows: their shared memory is not a small fixed tmpfs)."""
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def worker_start_method(other_threads: bool, platform: str = sys.platform) -> str:
    """How DataLoader worker processes start. fork copies the process as it
    is, including every lock another thread holds at that moment (a logging
    lock, the allocator's, a web server's), and a worker that needs one
    waits forever. So fork only where it is the platform's own way and this
    thread is the only one (the command line); forkserver forks from a
    clean helper process instead; spawn where there is neither."""
    if platform.startswith("linux") and not other_threads:
        return "fork"
    return "forkserver" if not platform.startswith(("win", "darwin")) else "spawn"


def loader_workers(
    wanted: int, *, other_threads: bool, shm_free: int | None, shared_bytes: int = 0, platform: str = sys.platform
) -> tuple[int, str | None, str]:
    """(worker processes, their start method, the choice in words) for
    reading images every epoch, given the `wanted` count. `shared_bytes`:
    what goes to shared memory with the workers when they do not fork (the
    decoded images). Short of shared memory, threads read instead."""
    if wanted <= 0:
        return 0, None, "Threads in this process read the images."
    method = worker_start_method(other_threads, platform)
    needed = MIN_SHARED_MEMORY + (shared_bytes if method != "fork" else 0)
    if shm_free is not None and shm_free < needed:
        return (
            0,
            None,
            (
                f"Threads in this process read the images, not worker processes: /dev/shm, through which "
                f"workers hand their batches over, has {shm_free / 2**20:.0f} MB free and they would need "
                f"{needed / 2**20:.0f} MB. Give the machine more shared memory (for Docker: "
                f"--shm-size=2g) to use them."
            ),
        )
    why = (
        "other threads run in this process, and a forked copy could inherit a lock one of them holds"
        if other_threads
        else "only this thread runs here, so forking is safe"
        if method == "fork"
        else "this platform's way"
    )
    return (
        wanted,
        method,
        (
            f"{wanted} worker processes read the images (started with {method}: {why}); "
            f"if they give no batch for {LOADER_TIMEOUT_S // 60} minutes, the run stops and says so."
        ),
    )


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


def release_device_memory(device: torch.device | None) -> str | None:
    """Give the memory of a finished run on `device` back. Call it once
    nothing refers to the run's tensors any more: gc.collect frees those
    caught in reference cycles, and empty_cache hands the blocks PyTorch's
    caching allocator still holds on that GPU back to the driver, so other
    programs (and the next run) get them.

    Only that GPU is touched, and only when this process already uses CUDA:
    a CPU run never makes a CUDA context. Never raises (it runs after the
    run's outcome is recorded, and an error kept by the GPU from the run
    must not turn a finished run into a crash): returns what went wrong, or
    None."""
    gc.collect()
    if device is None or device.type != "cuda" or not torch.cuda.is_initialized():
        return None
    try:
        with torch.cuda.device(device):
            torch.cuda.synchronize(device)
            torch.cuda.empty_cache()
    except Exception as exc:  # noqa: BLE001 - see above
        warnings.warn(f"Could not give {device}'s memory back: {exc}", RuntimeWarning, stacklevel=2)
        return str(exc)
    return None
