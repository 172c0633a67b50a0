"""One training batch in slices whose gradients add up to the batch's.

On a CPU, a batch of 32 full-size pictures makes activation maps of tens of
megabytes per layer, which go through main memory; slices of a few pictures
keep them in the processor's cache. A MobileNetV2 training step with every
block learning measured about 1.25x faster on a 2-core CPU in slices of 8
than as one batch of 32 (README, Speed). Where the batch enters the network
after stored features, the maps are small and slices only add overhead, so
only batches of pictures are sliced (core.decisions: `train_slice`).

The step stays the same: each slice's loss is its part of the batch's mean
loss (its pictures' losses summed, divided by the whole batch's count, or
total weight with class weights), so the slices' gradients add up to the
batch's, up to rounding, and the optimiser steps once per batch. That holds
only while nothing in the forward pass looks at the batch as a whole:
BatchNorm that keeps its statistics (every BatchNorm the batch runs through
in eval mode: the "auto" setting for batches under 64) and one process
(DistributedDataParallel would average the gradients after every slice).
`can_slice` says when. Dropout draws its own masks per slice, as it would
for another batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn


def can_slice(blocks: Iterable[nn.Module], processes: int) -> bool:
    """Whether a batch through `blocks` (those a training step runs through
    the model) may be sliced: one process, and no BatchNorm there that uses
    the batch's own statistics."""
    if processes > 1:
        return False
    return not any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for block in blocks for m in block.modules()
    )


def summed_twin(criterion: nn.CrossEntropyLoss) -> nn.CrossEntropyLoss:
    """The same loss (class weights, label smoothing), summed instead of
    averaged over the pictures, for a slice's share of a batch's loss."""
    return nn.CrossEntropyLoss(
        weight=criterion.weight,
        ignore_index=criterion.ignore_index,
        label_smoothing=criterion.label_smoothing,
        reduction="sum",
    )


def batch_total(criterion: nn.CrossEntropyLoss, y: torch.Tensor) -> torch.Tensor:
    """What `criterion` divides its summed loss by for batch labels `y`: the
    count, or the labels' total class weight."""
    if criterion.weight is None:
        return torch.tensor(float(len(y)), device=y.device)
    return criterion.weight[y].sum()


def sliced_forward_backward(
    forward: Callable[[torch.Tensor], torch.Tensor],
    summed: nn.CrossEntropyLoss,
    total: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    size: int,
    backward: Callable[[torch.Tensor], None],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run `forward` (pictures to logits, autocast included) and
    `backward(loss)` slice by slice; returns the batch's (mean loss, logits),
    both detached, as one pass over the whole batch would have given them."""
    loss = torch.zeros((), device=y.device)
    logits = []
    for xs, ys in zip(x.split(size), y.split(size), strict=True):
        out = forward(xs)
        part = summed(out.float(), ys) / total
        backward(part)
        loss += part.detach()
        logits.append(out.detach())
    return loss, torch.cat(logits)
