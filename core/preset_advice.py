"""Which preset to try first for a number of training pictures, from what was
measured (README, "Fine-tuning"): one line for the Model page."""

from __future__ import annotations

# Below this many training pictures a linear probe matched every fine-tune
# in the measurements; from there on, fine-tuning the last blocks paid.
FEW_PICTURES = 300


def preset_advice(train_pictures: int | None) -> str:
    """One line: the preset to try first for `train_pictures` (None: unknown)."""
    if not train_pictures:
        return (
            "Try the linear probe first (seconds, and as good as any fine-tune with a few hundred pictures); "
            "fine-tune the last blocks when you have more."
        )
    if train_pictures < FEW_PICTURES:
        return (
            f"With {train_pictures} training pictures, try the linear probe first: in our measurements fine-tuning "
            "matched it at best with this few, and took minutes instead of seconds."
        )
    return (
        f"With {train_pictures} training pictures, try the last 2 blocks first (with its head-first epoch and "
        "gentler rates for earlier blocks), and compare it with the linear probe."
    )
