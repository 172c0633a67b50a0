"""What a training reports to whoever watches it: a small protocol.

The training loop (core.training) is written against `Progress`, not against
a concrete class, so it never imports the job machinery: `core.jobs.Job`
implements it (thread-safe, read by the pages), and anything else with these
methods would do. Every method is called from the training thread (or its
file-writer thread), never from a page.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def update(self, **changes) -> None:
        """Set status fields: state, phase, epoch, batch, batches, speed, ..."""

    def add_epoch(self, row: dict) -> None:
        """One finished epoch's metrics row (as written to metrics.jsonl)."""

    def set_history(self, rows: list[dict]) -> None:
        """The epochs already done (a resumed run starts from these)."""

    def add_batch_loss(self, step: int, loss: float) -> None:
        """One point of the live loss curve."""

    def add_skipped(self, paths: list[str]) -> None:
        """Files that could not be read and were left out."""

    @property
    def stop_requested(self) -> bool:
        """True once someone asked the training to stop before its next batch."""
