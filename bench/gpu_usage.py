"""How busy the GPU is while the engine trains: a thread samples its
utilisation (the share of the last sample period in which a kernel ran, as
nvidia-smi reports it) every half second. A GPU that waits for the data
loader shows it here. On a CPU or MPS device nothing is sampled.

torch.cuda.utilization needs pynvml (nvidia-ml-py); without it the sampler
asks nvidia-smi. With neither, the summary says so.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import threading


class GpuUtilisation:
    """with GpuUtilisation(device) as gpu: ...; then gpu.summary()."""

    def __init__(self, device, every: float = 0.5):
        self.device = device
        self.every = every
        self.samples: list[float] = []
        self.source: str | None = None
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> GpuUtilisation:
        if getattr(self.device, "type", None) == "cuda":
            self._thread = threading.Thread(target=self._run, name="gpu-utilisation", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _index(self) -> int:
        import torch

        return self.device.index if self.device.index is not None else torch.cuda.current_device()

    def _read(self) -> float:
        """One sample, in percent, from whichever source works."""
        if self.source in (None, "torch.cuda.utilization"):
            try:
                import torch

                value = float(torch.cuda.utilization(self._index()))
                self.source = "torch.cuda.utilization"
                return value
            except Exception:  # no pynvml, or the driver would not tell
                if self.source is not None:
                    raise
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", self._smi_index()],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        self.source = "nvidia-smi"
        return float(out.stdout.strip().splitlines()[0])

    def _smi_index(self) -> str:
        """nvidia-smi counts every GPU; CUDA_VISIBLE_DEVICES may show this process a few."""
        visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
        index = self._index()
        return visible[index] if index < len(visible) else str(index)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(self._read())
            except Exception as exc:  # noqa: BLE001 - reported in the summary, never fails the run
                self.error = f"{type(exc).__name__}: {exc}"
                return
            self._stop.wait(self.every)

    def summary(self) -> dict | None:
        """None on a device that is not a GPU; else the samples' mean and median."""
        if self._thread is None:
            return None
        if not self.samples:
            return {"samples": 0, "source": self.source, "error": self.error or "no sample taken"}
        return {
            "samples": len(self.samples),
            "every_s": self.every,
            "mean": statistics.fmean(self.samples),
            "median": statistics.median(self.samples),
            "source": self.source,
        }


def describe(summary: dict | None) -> str | None:
    """A line for the table, or None when there is nothing to say (not a GPU)."""
    if summary is None:
        return None
    if not summary["samples"]:
        return f"GPU utilisation not measured ({summary['error']})"
    return (
        f"GPU utilisation during training: mean {summary['mean']:.0f} %, median {summary['median']:.0f} % "
        f"({summary['samples']} samples every {summary['every_s']:g} s, {summary['source']})"
    )
