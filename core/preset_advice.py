"""Which preset to try first for a number of training pictures, from what was
measured (README, "Fine-tuning"): one line for the Model page."""

from __future__ import annotations

# Below this many training pictures a linear probe matched a fine-tune in the
# measurements (245 pictures of ants and bees: full fine-tune 0.948, probe
# 0.948); above it fine-tuning the last blocks paid (400 pictures of 10 kinds
# of clothes: last-2 beat the probe's 0.818).
FEW_PICTURES = 300


def advised_strategy(train_pictures: int | None) -> str | None:
    """The strategy to try first for `train_pictures` (None: unknown)."""
    if not train_pictures:
        return None
    return "linear" if train_pictures < FEW_PICTURES else "last-2"


def strategy_in_effect(plan, epochs: int) -> str:
    """What a freeze plan (core.freeze.FreezePlan) chosen for `epochs` epochs
    amounts to, as `preset_advice` reads it: "linear" where no pretrained block
    learns within them (no block switched on, or head-only epochs that take
    the whole run), else the plan's strategy ("last-2", "custom", …)."""
    return plan.strategy if plan.trains_blocks(epochs) else "linear"


def preset_advice(train_pictures: int | None, chosen: str | None = None) -> str | None:
    """One line: the preset to try first for `train_pictures` (None: unknown).
    None where it would only tell a person what they chose: `chosen` (a
    strategy as a config names it, "last-2") is the advised one, or, with the
    count unknown, one of the two the line names."""
    advised = advised_strategy(train_pictures)
    if chosen is not None and (chosen == advised or (advised is None and chosen in ("linear", "last-2"))):
        return None
    if not train_pictures:
        return (
            "Try the linear probe first when you have a few hundred pictures or fewer (seconds, and as good as a "
            "fine-tune in our tests); with more, fine-tune the last 2 blocks."
        )
    if advised == "linear":
        return (
            f"With {train_pictures} training pictures, try the linear probe first: in our tests a full fine-tune "
            "on 245 pictures only matched it, and took minutes instead of seconds."
        )
    return (
        f"With {train_pictures} training pictures, try fine-tuning the last 2 blocks first: in our tests on 400 "
        "pictures of 10 kinds of clothes it beat the linear probe."
    )
