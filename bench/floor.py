"""The floor for a linear probe: one bare forward pass of the backbone over
every train and val image, with reading and decoding the files counted.

Nothing trains a linear probe on these images without at least reading,
decoding and transforming each picture once and running the frozen backbone
over it once. The engine's cold run (an empty feature cache) pays for exactly
that plus the scan, the head's epochs and the checkpoints, so its seconds over
these are what is left to win.

The floor streams: `decode_threads` threads (core.devices.decode_threads, the
number the engine's scan and loaders use) read each file with
core.images.open_rgb (JPEG draft decoding at the backbone's resize size, as
the engine does) and apply the backbone's eval transform (resize, centre
crop, normalise), while the main thread stacks them into batches of the
engine's size and runs the network, in its memory layout and precision.
Decoding and the forward pass overlap where the cores allow, as a plain loop
with a thread pool would. One warm-up batch first, not counted.

Also timed, as information: the same with BatchNorm folded into the
convolutions (what the engine's feature pass runs), the decoding alone, and
the forward passes over images already decoded in memory.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor


def bare_forward_seconds(data: str, backbone: str, device_name: str, amp: bool = True) -> dict:
    import torch

    from core.devices import (
        decode_threads,
        feature_pass_autocast,
        inference_batch_size,
        pick_device,
        use_channels_last,
    )
    from core.features import inference_blocks
    from core.images import open_rgb
    from core.models import build_model
    from core.scan import scan_folder

    device = pick_device(device_name)
    report = scan_folder(data)  # the file list; also puts the files in the OS's page cache, as the engine's scan does
    paths = [p for p, _ in report.train + report.val]
    model = build_model(backbone, len(report.classes)).eval().to(device)
    info = model.info
    tf = info.transforms()
    channels_last = use_channels_last(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    dtype = feature_pass_autocast(device, amp)  # as the engine's pass over the training pictures
    batch = inference_batch_size(device)
    threads = decode_threads(device)
    folded = inference_blocks(model, 0, len(model.block_names), channels_last)

    def read(path):
        return tf(open_rgb(path, info.resize_size))

    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def forward(net, x):
        x = x.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            return net(x)

    def decode_all() -> tuple[torch.Tensor, float]:
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=threads) as pool:
            images = torch.stack(list(pool.map(read, paths)))
        return images, time.perf_counter() - started

    images, decode_seconds = decode_all()

    def in_memory(net) -> float:
        with torch.inference_mode():
            forward(net, images[:batch])  # warm-up: kernels picked, memory allocated
            synchronize()
            started = time.perf_counter()
            for i in range(0, len(images), batch):
                forward(net, images[i : i + batch])
            synchronize()
            return time.perf_counter() - started

    def decoding_counted(net) -> float:
        with torch.inference_mode():
            forward(net, images[:batch])  # the same warm-up, outside the clock
            synchronize()
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=threads) as pool:
                pending = []
                for tensor in pool.map(read, paths):  # in order, while later files are still being decoded
                    pending.append(tensor)
                    if len(pending) == batch:
                        forward(net, torch.stack(pending))
                        pending = []
                if pending:
                    forward(net, torch.stack(pending))
            synchronize()
            return time.perf_counter() - started

    return {
        "seconds": decoding_counted(model),
        "folded_seconds": decoding_counted(folded),
        "in_memory_seconds": in_memory(model),
        "in_memory_folded_seconds": in_memory(folded),
        "decode_seconds": decode_seconds,
        "decode_threads": threads,
        "images": len(paths),
        "batch_size": batch,
        "channels_last": channels_last,
        "precision": str(dtype or torch.float32).replace("torch.", ""),
    }
