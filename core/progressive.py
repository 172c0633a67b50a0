"""Progressive resizing (fastai's, from its course): the first epochs train on
smaller pictures, growing to full size.

When the training pictures go through the whole network every epoch (a `full`
or `gradual` fine-tune, nothing frozen for the whole run), an epoch's cost
grows with the pixels: half the side is a quarter of the work. Early epochs
only need the coarse picture to move the weights the right way; the last ones,
at full size, tune them to what validation and use will see. Validation is
always at full size.

A batch is shrunk on the device, after normalisation, with antialiasing (one
call per batch, the same for every way of reading the pictures).
"""

from __future__ import annotations

import torch
from torch.nn import functional

SMALLEST_SHARE = 0.5  # the first small epoch sees pictures at half the side
MULTIPLE = 16  # sides rounded to this, as the networks' strides like


def epoch_image_sizes(full: int, epochs: int, share: float, head_epochs: int = 0) -> list[int]:
    """The picture side of each epoch (1..epochs). `share` counts the epochs
    in which the pretrained blocks learn (after `head_epochs` that train only
    the head): the first round(share x those) grow from half of `full`
    towards it, the rest are `full`. The head-only epochs before them take the
    first small size, so the head meets the blocks at the size they start at
    (and the saving lands where the blocks learn, where the work is)."""
    head_epochs = max(0, min(int(head_epochs), epochs))
    learning = epochs - head_epochs
    small = min(learning - 1, round(max(0.0, share) * learning))  # the last epoch is always at full size
    if small <= 0:
        return [full] * epochs
    sizes = []
    for epoch in range(1, learning + 1):
        if epoch > small:
            sizes.append(full)
            continue
        fraction = SMALLEST_SHARE + (1 - SMALLEST_SHARE) * (epoch - 1) / small
        sizes.append(max(MULTIPLE, int(round(full * fraction / MULTIPLE)) * MULTIPLE))
    return [sizes[0]] * head_epochs + sizes


def shrink(batch: torch.Tensor, side: int) -> torch.Tensor:
    """A batch of pictures (N, C, H, W) brought to side x side."""
    if batch.shape[-1] == side and batch.shape[-2] == side:
        return batch
    out = functional.interpolate(batch, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
    return (
        out.contiguous(memory_format=torch.channels_last)
        if batch.is_contiguous(memory_format=torch.channels_last)
        else out
    )


def describe(sizes: list[int] | None) -> str | None:
    """The sizes in words for the run's page and the command line (None: no resizing)."""
    if not sizes:
        return None
    full = sizes[-1]
    small = [s for s in sizes if s != full]
    if not small:
        return None
    epochs = "epoch 1 learns" if len(small) == 1 else f"epochs 1 to {len(small)} learn"
    grow = f"{small[0]} px" if len(set(small)) == 1 else f"{small[0]} px growing to {small[-1]} px"
    # Worded so it reads true before, during and after those epochs.
    return (
        f"Smaller pictures first: {epochs} from smaller pictures ({grow}), the later epochs from {full} px "
        f"ones (checking always at {full} px). Small pictures take a fraction of the time."
    )
