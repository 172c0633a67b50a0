"""Checkpoints: what an epoch writes, and the thread that writes it.

`model_payload` is the model part of a checkpoint (best.pt and last.pt),
`resume_payload` adds what resuming needs (optimiser, schedule, scaler, the
best so far, the random state), and `RunWriter` puts them on disk in the
background, in order, while the next epoch trains.
"""
from __future__ import annotations

import copy
import queue
import threading

import torch

from .config import TrainConfig


def model_payload(model, config: TrainConfig, classes: list[str], epoch: int,
                   trained: dict[str, bool] | None = None) -> dict:
    """The checkpoint's model part, safe to write while training goes on: a
    copy of every tensor that can still change. With `trained` (block name ->
    trains now), the blocks that do not train are not copied, because their
    tensors stay as they are (the caller flushes the writer before that
    changes); on a GPU, the move to the CPU is the copy."""
    def keep(name: str, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.detach()
        if tensor.device.type != "cpu":
            return tensor.cpu()
        block = name.split(".", 2)[1] if name.startswith("blocks.") else None
        return tensor if trained is not None and trained.get(block) is False else tensor.clone()

    return {"model": {k: keep(k, v) for k, v in model.state_dict().items()},
            "config": config.to_dict(), "classes": list(classes), "epoch": epoch,
            "backbone": config.backbone}


def snapshot(obj):
    """A copy of a (nested) state dict whose tensors training may change in place."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu() if obj.device.type != "cpu" else obj.detach().clone()
    if isinstance(obj, dict):
        return {k: snapshot(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(snapshot(v) for v in obj)
    return copy.deepcopy(obj)


def resume_payload(payload: dict, optimizer, scheduler, scaler, best: dict, epochs_without_gain: int) -> dict:
    """last.pt: the model part plus everything `core.training` needs to go on
    from this epoch as if it had never stopped."""
    return {
        **payload,
        "optimizer": snapshot(optimizer.state_dict()), "scheduler": copy.deepcopy(scheduler.state_dict()),
        "scaler": scaler.state_dict(), "best": dict(best), "epochs_without_gain": epochs_without_gain,
        "rng": torch.get_rng_state(),
    }


class RunWriter:
    """Writes a run's files in a background thread, one after another in the
    order given, so training goes on while a checkpoint reaches the disk (a
    MobileNetV2 checkpoint and its fsync take tens of milliseconds, as long
    as a whole epoch of a linear probe).

    At most `backlog` writes wait; submit blocks beyond that, so a slow disk
    slows training down instead of filling memory with checkpoints. A write
    that fails is raised in the training thread at the next submit or flush."""

    def __init__(self, backlog: int = 8):
        self._queue: queue.Queue = queue.Queue(maxsize=backlog)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="run-writer", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if self._error is None:  # after a failure, later writes are dropped, not reordered
                    fn, args, kwargs = item
                    fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the training thread
                self._error = exc
            finally:
                self._queue.task_done()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, fn, *args, **kwargs) -> None:
        self._raise()
        self._queue.put((fn, args, kwargs))

    def flush(self) -> None:
        """Wait until everything submitted is on disk."""
        self._queue.join()
        self._raise()

    def close(self) -> None:
        """Finish the writes and stop the thread (raises a write's error)."""
        self._queue.put(None)
        self._thread.join()
        self._raise()

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:  # already failing or stopping: finish the writes, keep that first reason
            try:
                self.close()
            except BaseException:  # noqa: BLE001
                pass
