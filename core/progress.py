"""What a training reports to whoever watches it: a small protocol.

The training loop (core.training) is written against `Progress`, not against
a concrete class, so it never imports the job machinery: `core.jobs.Job`
implements it (thread-safe, read by the pages), and anything else with these
methods would do. Every method is called from the training thread (or its
file-writer thread), never from a page.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

LOSS_FILE = "batch_losses.json"  # a run's per-batch losses: LossCurve.to_json()
MAX_LOSS_POINTS = 2000  # per-batch losses kept for a run's chart, in memory and in LOSS_FILE (even)


class LossCurve:
    """The loss every few batches over a whole run, in fewer than `limit`
    points however long the run: at the limit each two neighbours become
    their mean, and from then on as many new losses are averaged into one
    point, so that the curve has the same resolution from its start to its end."""

    def __init__(self, points=(), per_point: int = 1, steps_per_epoch: int | None = None):
        self.points = [[float(step), float(loss)] for step, loss in points]
        self.per_point = max(1, int(per_point))  # losses averaged into each point
        self.steps_per_epoch = steps_per_epoch
        self._waiting: list[tuple[float, float]] = []

    def add(self, step: float, loss: float, limit: int = MAX_LOSS_POINTS) -> bool:
        """Take one loss; True when `points` changed."""
        self._waiting.append((step, loss))
        if len(self._waiting) < self.per_point:
            return False
        self.points.append([sum(v[0] for v in self._waiting) / len(self._waiting), _mean(self._waiting)])
        self._waiting = []
        if len(self.points) >= limit:
            self.points = [[(a[0] + b[0]) / 2, (a[1] + b[1]) / 2] for a, b in zip(self.points[::2], self.points[1::2])]
            self.per_point *= 2
        return True

    def to_json(self) -> dict:
        return {"steps_per_epoch": self.steps_per_epoch, "per_point": self.per_point, "points": self.points}


def _mean(pairs: list[tuple[float, float]]) -> float:
    return sum(v[1] for v in pairs) / len(pairs)


class Progress(Protocol):
    def update(self, **changes) -> None:
        """Set status fields: state, phase, epoch, batch, batches, speed, ..."""

    def phase(self, name: str, done: int, total: int) -> None:
        """A step before or after the epochs (the feature pass, the final
        evaluation) has handled `done` of its `total` pictures; called with 0
        when it begins, then after every batch, so a watcher can show the
        count, the rate and the time left from the first batch on."""

    def add_epoch(self, row: dict) -> None:
        """One finished epoch's metrics row (as written to metrics.jsonl)."""

    def set_history(self, rows: list[dict]) -> None:
        """The epochs already done (a resumed run starts from these)."""

    def add_batch_loss(self, step: int, loss: float) -> None:
        """One point of the live loss curve."""

    def set_batch_losses(self, points: list[list[float]], per_point: int) -> None:
        """The loss curve's points already recorded (a resumed run's earlier
        epochs, LossCurve's points and per_point)."""

    def add_skipped(self, paths: list[str]) -> None:
        """Files that could not be read and were left out."""

    @property
    def stop_requested(self) -> bool:
        """True once someone asked the training to stop before its next batch."""


def _pictures(batch) -> int:
    """Pictures in a loader's (inputs, labels, indices, broken) batch, broken ones included."""
    return len(batch[2]) + len(batch[3])


def counted(
    batches: Iterable, progress: Progress, name: str, total: int, size: Callable[[object], int] = _pictures
) -> Iterator:
    """`batches`, reporting the phase `name` to `progress` as each one is
    handled (when the next one is asked for, and at the end)."""
    done = 0
    progress.phase(name, 0, total)
    for batch in batches:
        yield batch
        done += size(batch)
        progress.phase(name, min(done, total), total)


class Quiet:
    """A `Progress` that reports nowhere and stops when `should_stop()` says
    so: for work that runs the loop's pieces without a watcher (the
    learning-rate finder, scripts). Kept beside the protocol so a method added
    to one is added to the other."""

    def __init__(self, should_stop: Callable[[], bool] | None = None):
        self._should_stop = should_stop or (lambda: False)

    def update(self, **changes) -> None:
        pass

    def phase(self, name: str, done: int, total: int) -> None:
        pass

    def add_epoch(self, row: dict) -> None:
        pass

    def set_history(self, rows: list[dict]) -> None:
        pass

    def add_batch_loss(self, step: int, loss: float) -> None:
        pass

    def set_batch_losses(self, points: list[list[float]], per_point: int) -> None:
        pass

    def add_skipped(self, paths: list[str]) -> None:
        pass

    @property
    def stop_requested(self) -> bool:
        return self._should_stop()
