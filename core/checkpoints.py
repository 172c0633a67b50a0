"""Checkpoints: what an epoch writes, and the thread that writes it.

`CheckpointCopies` makes the model part of a checkpoint (best.pt and
last.pt), `resume_payload` adds what resuming needs (optimiser, schedule,
scaler, the best so far, the random state), and `RunWriter` puts them on disk
in the background, in order, while the next epoch trains.
"""

from __future__ import annotations

import contextlib
import copy
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .config import TrainConfig


def host_copy(tensor: torch.Tensor) -> torch.Tensor:
    """A CPU copy of `tensor` as it is now, for a checkpoint written while
    training goes on. From a GPU it goes into pinned memory asynchronously:
    the copy is queued on the GPU before any later change to the tensor, so
    it holds this moment's values, and the training thread does not wait
    for it; read it only after `copies_landed`'s wait."""
    tensor = tensor.detach()
    if tensor.device.type == "cuda":
        host = torch.empty_like(tensor, device="cpu", pin_memory=True)
        host.copy_(tensor, non_blocking=True)
        return host
    return tensor.clone() if tensor.device.type == "cpu" else tensor.cpu()


def copies_landed(device: torch.device):
    """A function that waits until every host_copy from `device` queued so
    far has arrived: the writer thread calls it before writing them."""
    if device.type != "cuda":
        return lambda: None
    event = torch.cuda.Event()
    event.record(torch.cuda.current_stream(device))
    return event.synchronize


class CheckpointCopies:
    """The model part of checkpoints (best.pt and last.pt), copying only what
    can have changed since the last one.

    A block that does not train keeps its tensors, BatchNorm statistics
    included (frozen blocks stay in eval mode, core.models): they are copied
    off a GPU once, when the block is first seen frozen (the one wait for the
    GPU a checkpoint costs the training thread), and every later
    checkpoint shares that copy; on a CPU the checkpoint shares the tensors
    themselves (the loop flushes the writer before a block unfreezes). What
    trains, parameters and buffers such as a trained block's BatchNorm
    statistics, is copied every epoch (host_copy: on a GPU only queued by
    the training thread). Every checkpoint is still the whole state dict:
    best.pt loads as it is (core.evaluation.load_run_model), and last.pt
    resumes exactly."""

    def __init__(self, model):
        self.model = model
        self._fixed: dict[str, dict[str, torch.Tensor]] = {}  # a frozen block's name: its copied entries

    def model_state(self, trained: dict[str, bool]) -> dict[str, torch.Tensor]:
        # Block by block, so that a frozen block's entries are collected once,
        # not walked again every epoch (a warm linear probe's epochs take
        # milliseconds; MobileNetV2's state dict has over 300 entries).
        state = {}
        blocks = self.model.blocks  # a core.models.TransferModel's
        for name, child in self.model.named_children():
            if child is not blocks:  # outside the blocks: copied as if it trained
                state.update({key: host_copy(t) for key, t in child.state_dict(prefix=f"{name}.").items()})
        for name, block in blocks.items():
            prefix = f"blocks.{name}."
            if trained.get(name) is not False:
                self._fixed.pop(name, None)  # unfrozen: its old copy is no longer what it holds
                state.update({key: host_copy(tensor) for key, tensor in block.state_dict(prefix=prefix).items()})
                continue
            if name not in self._fixed:
                # Once per run (per stage of gradual unfreezing): a plain copy, not
                # pinned memory, which would stay locked for the whole run.
                self._fixed[name] = {
                    key: tensor.detach() if tensor.device.type == "cpu" else tensor.detach().cpu()
                    for key, tensor in block.state_dict(prefix=prefix).items()
                }
            state.update(self._fixed[name])
        return state

    def payload(self, config: TrainConfig, classes: list[str], epoch: int, trained: dict[str, bool]) -> dict:
        return {
            "model": self.model_state(trained),
            "config": config.to_dict(),
            "classes": list(classes),
            "epoch": epoch,
            "backbone": config.backbone,
        }


def snapshot(obj):
    """A copy of a (nested) state dict whose tensors training may change in place."""
    if isinstance(obj, torch.Tensor):
        return host_copy(obj)
    if isinstance(obj, dict):
        return {k: snapshot(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(snapshot(v) for v in obj)
    return copy.deepcopy(obj)


def resume_payload(
    payload: dict, optimizer, scheduler, scaler, best: dict, epochs_without_gain: int, device: torch.device
) -> dict:
    """last.pt: the model part plus everything `core.training` needs to go on
    from this epoch as if it had never stopped, the GPU's random state
    included (dropout on a GPU draws from it)."""
    out = {
        **payload,
        "optimizer": snapshot(optimizer.state_dict()),
        "scheduler": copy.deepcopy(scheduler.state_dict()),
        "scaler": scaler.state_dict(),
        "best": dict(best),
        "epochs_without_gain": epochs_without_gain,
        "rng": torch.get_rng_state(),
    }
    if device.type == "cuda":
        out["cuda_rng"] = torch.cuda.get_rng_state(device)
    return out


def restore_scaler(scaler, state: dict | None) -> bool:
    """Load a GradScaler's saved state where it applies: the scaler is on
    (fp16 here) and the run saved a state of one that was on. A run that
    trained on a CPU or in bf16 saved an empty state, which load_state_dict
    refuses; then the scaler starts fresh (it settles within a few
    batches). Returns whether it was loaded."""
    if not scaler.is_enabled() or not state or "scale" not in state:
        return False
    scaler.load_state_dict(state)
    return True


def restore_random_state(ckpt: dict, device: torch.device) -> None:
    """The CPU's random state, and the GPU's when the run trained on one and goes on on one."""
    torch.set_rng_state(ckpt["rng"])
    if device.type == "cuda" and ckpt.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(ckpt["cuda_rng"], device)


@dataclass
class EpochFiles:
    """An epoch's files, written in this order: its checkpoints (best.pt when
    it is the best epoch so far, then last.pt), then its line in
    metrics.jsonl, so every epoch there can be resumed from, then the loss
    curve of the batches so far (`losses`: a file's name and its JSON), then status.json.
    `landed`: waits for the payloads' copies off a GPU (copies_landed)."""

    run: object  # the Run (core.runs), or a PeerRun that writes nothing
    landed: Callable[[], None]
    best: dict | None
    last: dict
    history: list[dict]
    status: dict
    losses: tuple[str, dict] | None = None

    def absorb(self, later: EpochFiles) -> None:
        """Become a later epoch's files, these not being written yet: its
        last.pt, metrics and status; its best.pt, or else still this one's."""
        self.landed, self.last, self.history, self.status = later.landed, later.last, later.history, later.status
        self.losses = later.losses or self.losses
        self.best = later.best if later.best is not None else self.best

    def write(self) -> None:
        self.landed()  # copies recorded later on the same stream landed after the earlier ones
        if self.best is not None:
            self.run.save_checkpoint("best.pt", self.best)
        self.run.save_checkpoint("last.pt", self.last)
        self.run.write_metrics(self.history)
        if self.losses is not None:
            self.run.write_json(*self.losses)
        self.run.update_status(**self.status)


class RunWriter:
    """Writes a run's files in a background thread, one after another in the
    order given, so training goes on while a checkpoint reaches the disk (a
    MobileNetV2 checkpoint and its fsync take tens of milliseconds, longer
    than a whole epoch of a linear probe).

    An epoch's files (submit_files) that are still waiting when the next
    epoch's come are replaced by them: a disk slower than the epochs writes
    fewer checkpoints, only ever the newest, instead of making every epoch
    wait. Rounds of epoch files start at most every `every` seconds (flush
    and close write at once): epochs quicker than that (a linear probe on
    stored features runs ten in half a second) are written once at the end
    instead of after nearly every epoch, and a killed run loses at most that
    long of training. At most `backlog` other writes wait; submit blocks
    beyond that. A write that fails is raised in the training thread at the
    next submit or flush."""

    def __init__(self, backlog: int = 64, every: float = 1.0):
        self._queue: queue.Queue = queue.Queue(maxsize=backlog)
        self._error: BaseException | None = None
        self._waiting: EpochFiles | None = None  # an epoch's files queued, not yet being written
        self._waiting_lock = threading.Lock()
        self._every = every
        self._next_round = time.monotonic() + every
        self._hurry = threading.Event()  # set by flush and close: write what waits now
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
        if self._queue.full():  # never wait on a writer that waits for its next round
            self._hurry.set()
        self._queue.put((fn, args, kwargs))

    def submit_files(self, files: EpochFiles) -> None:
        """Queue an epoch's files, or put them in the place of the previous
        epoch's when those are still waiting (so whatever was queued after
        those, such as the progress hearing of that epoch, still runs after
        files at least as new)."""
        self._raise()
        with self._waiting_lock:
            if self._waiting is not None:
                self._waiting.absorb(files)
                return
            self._waiting = files
        self._queue.put((self._write_waiting, (), {}))

    def _write_waiting(self) -> None:
        self._hurry.wait(max(0.0, self._next_round - time.monotonic()))
        self._next_round = time.monotonic() + self._every
        with self._waiting_lock:
            files, self._waiting = self._waiting, None
        files.write()

    def flush(self) -> None:
        """Wait until everything submitted is on disk."""
        self._hurry.set()
        self._queue.join()
        self._hurry.clear()  # the queue is empty: later epochs wait their turn again
        self._raise()

    def close(self) -> None:
        """Finish the writes and stop the thread (raises a write's error)."""
        self._hurry.set()
        self._queue.put(None)
        self._thread.join()
        self._raise()

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:  # already failing or stopping: finish the writes, keep that first reason
            with contextlib.suppress(BaseException):
                self.close()
