"""One pass over the validation pictures during training, and the move of a
batch to the training device. `s` is the training loop's setup
(core.training._Setup): its model, data, decisions, criterion and progress.
"""

from __future__ import annotations

import torch

from . import distributed
from .decisions import Decisions
from .features import inference_blocks, release_copy


def to_device(x, decisions: Decisions):
    x = x.to(decisions.device, non_blocking=True)
    if decisions.channels_last and x.dim() == 4:
        x = x.to(memory_format=torch.channels_last)
    return x


@torch.no_grad()
def validate(s) -> tuple[float, float]:
    """(mean loss, accuracy) on the validation batches."""
    s.model.eval()
    d = s.decisions
    # Sums stay on the device: one synchronisation per validation, not per batch.
    total_loss = torch.zeros((), device=d.device)
    correct = torch.zeros((), dtype=torch.long, device=d.device)
    seen = 0
    # The blocks run as a copy with BatchNorm folded in (core.features), made
    # for this validation: the same numbers, for a fraction of the work.
    network = inference_blocks(s.model, s.data.val_start, len(s.model.block_names), d.channels_last)
    try:
        total_loss, correct, seen = _validation_sums(s, network, total_loss, correct)
    finally:
        release_copy(network)
    total_loss, correct, seen = distributed.sum_over_ranks(total_loss.item(), correct.item(), seen)
    return total_loss / max(seen, 1), correct / max(seen, 1)


def _validation_sums(s, network, total_loss, correct) -> tuple:
    d, seen = s.decisions, 0
    for x, y, _idx, _bad in s.data.val_loader:
        # distributed: ranks may hold different numbers of validation batches: no per-batch stop there
        if s.progress.stop_requested and not distributed.current().active:
            raise InterruptedError
        if len(y) == 0:
            continue
        x, y = to_device(x, d), y.to(d.device, non_blocking=True)
        with torch.autocast(d.device.type, dtype=d.autocast, enabled=d.autocast is not None):
            logits = network(x)
        total_loss += s.eval_criterion(logits.float(), y) * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
    return total_loss, correct, seen
