"""Freeze plans: which blocks of a TransferModel train, and at what learning rate.

* `FreezePlan` with the usual presets (linear probe, last-N, full fine-tuning,
  gradual unfreezing, discriminative learning rates) or the user's own choice
  of blocks (`make_freeze_plan`);
* `freeze_plan_for`: the one place a training config (a TrainConfig or its
  dict, as saved in a run) becomes its plan, so training, the pages and the
  model card always agree on what a run trained;
* switching gradients per block (`apply_freeze_plan`) and optimiser parameter
  groups that follow a plan.

No Streamlit here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields

import torch
from torch import nn

from .blocks import block_title
from .config import STRATEGY_WORDS, TrainConfig, defaults
from .counts import how_many
from .fusion import fused_span
from .models import TransferModel

# The strategies `make_freeze_plan` knows, each with its help (core.config's words).
STRATEGIES: dict[str, str] = {
    k: STRATEGY_WORDS[k][2] for k in ("linear", "last-N", "full", "gradual", "discriminative")
}

_LAST_N = re.compile(r"last-(\d+)")
_FOREVER = 10**9  # an epoch by which gradual unfreezing has opened every block


@dataclass
class FreezePlan:
    strategy: str  # "linear" | "last-N" | "full" | "gradual" | "discriminative" | "custom"
    trained: dict[str, bool]  # per block, at epoch 0
    lr_mult: dict[str, float]  # per block learning-rate multiplier
    unfreeze_every: int = 0  # gradual: one more block unfreezes every K epochs
    head_epochs: int = 0  # the first epochs train only the head (the other blocks join in after)
    # Blocks without parameters (e.g. "pool"): never trained, and counted as
    # frozen by frozen_prefix. Added so a plan knows this without the model.
    param_free: list[str] = field(default_factory=list)
    # Fusion (core.fusion.fused_span): [first fused block, head]; a stored
    # prefix may not end between them, or the fused stages' outputs are lost.
    fused_span: list[int] = field(default_factory=list)

    def __post_init__(self):
        # A plan written by hand (or saved without this field) still knows that
        # "pool" has no parameters: it is param-free by design.
        if not self.param_free and "pool" in self.trained:
            self.param_free = ["pool"]

    @property
    def block_names(self) -> list[str]:
        return list(self.trained)

    def _backbone_blocks(self) -> list[str]:
        """Blocks with parameters other than the head, bottom to top."""
        return [n for n in self.trained if n != "head" and n not in self.param_free]

    def trained_at(self, epoch: int) -> dict[str, bool]:
        if epoch < self.head_epochs:
            return {name: name == "head" for name in self.trained}
        state = dict(self.trained)
        if self.strategy == "gradual" and self.unfreeze_every > 0:
            still_frozen_top_down = [n for n in reversed(self._backbone_blocks()) if not state[n]]
            for name in still_frozen_top_down[: max(epoch, 0) // self.unfreeze_every]:
                state[name] = True
        return state

    def frozen_prefix(self, epoch: int | None = None, epochs: int | None = None) -> int:
        """How many leading blocks are frozen: their output can be cached.

        With `epoch`, at that epoch. Without it, frozen for the whole of `epochs`
        epochs, which is the prefix still frozen at the last epoch because
        blocks only ever unfreeze (with neither: however long training runs).
        """
        if epoch is None:
            epoch = epochs - 1 if epochs else _FOREVER
        state = self.trained_at(epoch)
        k = 0
        for name in self.trained:
            if state[name]:
                break
            k += 1
        if self.fused_span and self.fused_span[0] < k < self.fused_span[1]:
            k = self.fused_span[0]
        return k

    def frozen_blocks(self, epoch: int | None = None, upto: int | None = None) -> list[str]:
        """The blocks with weights that stay frozen at `epoch` (among the first
        `upto` blocks when given): see frozen_with_weights. Without an epoch:
        once the head-only epochs are over, the plan a person chose (during
        them every block is frozen, which is not what the picture shows)."""
        at = self.head_epochs if epoch is None else epoch
        return frozen_with_weights(self.block_names, self.param_free, self.trained_at(at), upto)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> FreezePlan:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def joins(self, epochs: int) -> list[tuple[str, int]]:
        """Gradual unfreezing, or the blocks joining after the head-only
        epochs: (block, the epoch it starts learning, counted from 1) for each
        pretrained block that starts learning within `epochs` epochs, top down.
        The one schedule the sentence and the picture give."""
        joined, before = [], self.trained_at(0)
        for epoch in range(1, max(int(epochs), 0)):
            now = self.trained_at(epoch)
            joined += [(n, epoch + 1) for n in reversed(self._backbone_blocks()) if now[n] and not before[n]]
            before = now
        return joined

    def trains_blocks(self, epochs: int) -> bool:
        """Whether any pretrained block learns within `epochs` epochs (blocks
        only ever start learning, so: whether any learns in the last one)."""
        last = self.trained_at(max(int(epochs) - 1, 0))
        return any(last[b] for b in self._backbone_blocks())

    def learning_steps(self, counts: Mapping[str, int], epochs: int) -> list[tuple[int, int]]:
        """How many numbers learn, and from when: (epoch counted from 1, the
        parameters that learn from it on), first (1, the count of the first
        epoch), then one step each time blocks join within `epochs` epochs
        (after the head-only epochs, or as gradual unfreezing opens them).
        `counts`: parameters per block (TransferModel.block_param_counts)."""
        steps = []
        for epoch in [1, *sorted({e for _, e in self.joins(epochs)})]:
            trained = self.trained_at(epoch - 1)
            steps.append((epoch, sum(c for n, c in counts.items() if trained.get(n))))
        return steps

    def describe(self, epochs: int | None = None) -> str:
        """One plain sentence about what this plan trains (blocks named as people read them).
        With `epochs`, gradual unfreezing says which blocks start learning within them, and when."""
        blocks = self._describe_blocks(epochs)
        if self.head_epochs <= 0:
            return blocks
        if epochs is not None and epochs <= self.head_epochs:
            all_of = "it trains" if epochs == 1 else "all of them train"
            return (
                f"{_with_epochs(epochs)}, {all_of} only the new head: the pretrained blocks never start learning. "
                f"Train for at least {self.head_epochs + 1} epochs (or the head alone for fewer) to let them learn."
            )
        return head_first_words(self.head_epochs) + " Then " + blocks[0].lower() + blocks[1:]

    def _describe_blocks(self, epochs: int | None) -> str:
        backbone = self._backbone_blocks()
        n = len(backbone)
        on = [b for b in backbone if self.trained[b]]
        off = len(self.frozen_blocks())
        if self.strategy == "gradual":
            return self._gradual_words(epochs)
        if self.strategy == "discriminative":
            lowest = min((self.lr_mult[b] for b in backbone), default=1.0)
            return (
                f"{_all_blocks(n)} and the new head are trained, earlier blocks more "
                f"gently: the first block learns at the head's rate ×{lowest:.2g}."
            )
        if not on:
            return f"Only the new head is trained; {_the_blocks(n)} {_stay(n)} frozen."
        gentler = _gentler_words(self.lr_mult, on)
        if off == 0:
            return f"Every block is trained: {_the_blocks(n)} and the new head{gentler}."
        return (
            f"The new head and {how_many(len(on), 'pretrained block')} "
            f"({', '.join(block_title(b) for b in on)}) are trained{gentler}; {_others_stay(off)} frozen."
        )

    def _gradual_words(self, epochs: int | None) -> str:
        n, k = len(self._backbone_blocks()), self.unfreeze_every
        every = "epoch" if k == 1 else f"{k} epochs"
        start = "Training starts with only the new head; then, from the top down, one more pretrained block starts "
        if epochs is None:
            return start + f"learning every {every}, until all {n} learn."
        joined = self.joins(epochs)
        start += f"learning every {every}{_gentler_words(self.lr_mult, [b for b, _ in joined])}."
        with_epochs = _with_epochs(epochs)
        if not joined:
            return (
                f"{start} {with_epochs}, training ends before that happens: only the new head learns, and "
                f"{_the_blocks(n)} {_stay(n)} frozen. Train for at least {k + 1} epochs to let the first one learn."
            )
        when = ", ".join(f"{block_title(b)} at epoch {e}" for b, e in joined)
        if len(joined) == n:
            return f"{start} {with_epochs}, all {n} start learning: {when}."
        left = n - len(joined)
        starts = f"only 1 of the {n} starts" if len(joined) == 1 else f"only {len(joined)} of the {n} start"
        return f"{start} {with_epochs}, {starts} learning: {when}; {_others_stay(left)} frozen."

    def learning_words(self, epoch: int, epochs: int) -> str | None:
        """During epoch `epoch` (counted from 1) of `epochs`: which blocks
        learn now and which start next, for the Train page. None when no
        block starts learning during the run (nothing will change)."""
        joined = self.joins(epochs)
        if not joined:
            return None
        now = self.trained_at(epoch - 1)
        backbone = self._backbone_blocks()
        learning = [b for b in reversed(backbone) if now[b]]
        said = "Learning now: " + (
            _some_blocks(learning, len(backbone), "the new head") if learning else "the new head only"
        )
        upcoming = [(b, e) for b, e in joined if e > epoch]
        if not upcoming:
            return said + ". No more blocks start learning before the end."
        first = upcoming[0][1]
        names = [b for b, e in upcoming if e == first]
        verb = "starts" if len(names) == 1 else "start"
        return f"{said}. Next, {_some_blocks(names, len(backbone))} {verb} learning at epoch {first}."


def _some_blocks(names: list[str], of: int, first: str | None = None) -> str:
    """Blocks (top down) as a sentence names them, after `first` when given:
    a few by name, all of the network's `of` as all, others by number and
    the lowest one."""
    if len(names) == of and of > 1:
        said = [f"all {of} pretrained blocks"]
    elif len(names) > 3:
        said = [f"{len(names)} pretrained blocks, down to {block_title(names[-1])}"]
    else:
        said = [block_title(b) for b in names]
    said = [first, *said] if first else said
    return said[0] if len(said) == 1 else f"{', '.join(said[:-1])} and {said[-1]}"


def frozen_with_weights(
    block_names: Sequence[str], param_free: Sequence[str], trained: Mapping[str, bool], upto: int | None = None
) -> list[str]:
    """The frozen blocks a person sees in the picture of the network: blocks
    with weights (never the head, never a block without parameters such as
    "pool") that `trained` leaves frozen, among the first `upto` blocks when
    given. The one count behind the Model page's picture, `FreezePlan.describe`
    and the fast-path note ("the 6 frozen blocks ran once"), so they agree."""
    names = list(block_names)[:upto] if upto is not None else list(block_names)
    return [n for n in names if n != "head" and n not in param_free and not trained.get(n, False)]


def _with_epochs(epochs: int) -> str:
    return f"With {how_many(epochs, 'epoch')}"


def _others_stay(n: int) -> str:
    return "the other block stays" if n == 1 else f"the other {n} stay"


def _the_blocks(n: int) -> str:
    return "the pretrained block" if n == 1 else f"the {n} pretrained blocks"


def _all_blocks(n: int) -> str:
    return "The pretrained block" if n == 1 else f"All {n} pretrained blocks"


def _stay(n: int) -> str:
    return "stays" if n == 1 else "stay"


def head_first_words(head_epochs: int) -> str:
    if head_epochs <= 0:
        return ""
    first = "epoch trains" if head_epochs == 1 else f"{head_epochs} epochs train"
    return f"The first {first} only the new head."


def _gentler_words(lr_mult: dict[str, float], on: list[str]) -> str:
    lowest = min((lr_mult.get(b, 1.0) for b in on), default=1.0)
    # "rate ×0.062", as the picture's blocks say it
    return f", earlier blocks more gently (down to the head's rate ×{lowest:.2g})" if lowest < 1 else ""


def _blocks_and_param_free(block_names_or_model) -> tuple[list[str], list[str]]:
    """Block names, and which of them have no parameters."""
    if isinstance(block_names_or_model, TransferModel):
        counts = block_names_or_model.block_param_counts()
    elif isinstance(block_names_or_model, Mapping):  # e.g. block_param_counts()
        counts = dict(block_names_or_model)
    else:
        names = list(block_names_or_model)
        # Given names only, "pool" is the block without parameters, by design.
        counts = {n: (0 if n == "pool" else 1) for n in names}
    names = list(counts)
    if not names or names[-1] != "head":
        raise ValueError(f"The last block must be 'head'; got {names}.")
    return names, [n for n, c in counts.items() if c == 0 and n != "head"]


def make_freeze_plan(
    block_names_or_model,
    strategy: str,
    *,
    unfreeze_every: int = 1,
    lr_factor: float = 0.5,
    trained: Mapping[str, bool] | None = None,
    head_epochs: int = 0,
    discriminative_lr: bool = False,
) -> FreezePlan:
    """Build the plan for a preset (see STRATEGIES) or "custom" with `trained`.

    `block_names_or_model`: a TransferModel, its block_param_counts(), or a list
    of block names (then "pool" is taken as the only block without parameters).
    """
    names, param_free = _blocks_and_param_free(block_names_or_model)
    backbone = [n for n in names if n != "head" and n not in param_free]
    strategy = str(strategy).strip().lower()
    on = {n: False for n in names}
    on["head"] = True
    lr_mult = {n: 1.0 for n in names}
    every = 0

    if trained is not None and strategy != "custom":
        raise ValueError("`trained` is only used with strategy 'custom'.")

    if strategy == "linear":
        pass
    elif strategy == "full":
        on.update({n: True for n in backbone})
    elif match := _LAST_N.fullmatch(strategy):
        count = int(match.group(1))  # counts blocks with parameters, from the top
        on.update({n: True for n in backbone[len(backbone) - min(count, len(backbone)) :]})
    elif strategy == "gradual":
        if unfreeze_every < 1:
            raise ValueError(f"unfreeze_every must be at least 1, not {unfreeze_every}.")
        every = int(unfreeze_every)
    elif strategy == "discriminative":
        if not 0 < lr_factor <= 1:
            raise ValueError(f"lr_factor must be in (0, 1], not {lr_factor}.")
        on.update({n: True for n in backbone})
        # The head learns at the full rate; each block further down at lr_factor
        # times the one above it (earlier layers hold more general features).
        for distance, name in enumerate(reversed(backbone), start=1):
            lr_mult[name] = lr_factor**distance
    elif strategy == "custom":
        if trained is None:
            raise ValueError("Strategy 'custom' needs `trained`: a dict of block name -> bool.")
        unknown = [n for n in trained if n not in on]
        if unknown:
            raise ValueError(f"Unknown blocks {unknown}; the blocks are {names}.")
        on.update({n: bool(trained[n]) for n in backbone if n in trained})
    else:
        raise ValueError(
            f"Unknown strategy {strategy!r}. Choose one of: linear, last-N (e.g. last-2), "
            "full, gradual, discriminative, or custom."
        )
    fine_tunes = strategy == "gradual" or any(on[n] for n in backbone)
    if discriminative_lr and fine_tunes and strategy != "discriminative":
        if not 0 < lr_factor <= 1:
            raise ValueError(f"lr_factor must be in (0, 1], not {lr_factor}.")
        for distance, name in enumerate(reversed(backbone), start=1):
            lr_mult[name] = lr_factor**distance
    # Gradual unfreezing starts with the head alone anyway.
    head_first = max(0, int(head_epochs)) if fine_tunes and strategy != "gradual" else 0
    return FreezePlan(
        strategy=strategy,
        trained=on,
        lr_mult=lr_mult,
        unfreeze_every=every,
        head_epochs=head_first,
        param_free=param_free,
    )


def freeze_plan_for(block_names_or_model, config: TrainConfig | Mapping) -> FreezePlan:
    """The freeze plan that a training config asks for: its strategy, with
    `unfreeze_every`, `lr_factor` and (strategy "custom" only) `trained_blocks`.

    `config`: a TrainConfig or its dict (a run's saved config, or the pages'
    choices); a setting it lacks (or holds as None) takes TrainConfig's default.
    With `head_epochs` and `discriminative_lr` the fine-tuning presets train
    the head alone first and give earlier blocks smaller rates.
    `block_names_or_model`: as for make_freeze_plan.
    """
    if isinstance(config, TrainConfig):
        config = config.to_dict()
    settings = {**defaults(), **{k: v for k, v in config.items() if v is not None}}
    strategy = settings["strategy"]
    plan = make_freeze_plan(
        block_names_or_model,
        strategy,
        unfreeze_every=int(settings["unfreeze_every"]),
        lr_factor=float(settings["lr_factor"]),
        trained=config.get("trained_blocks") if str(strategy).strip().lower() == "custom" else None,
        head_epochs=int(settings["head_epochs"]),
        discriminative_lr=bool(settings["discriminative_lr"]),
    )
    plan.fused_span = fused_span(plan.block_names, settings["fusion"], int(settings["fusion_stages"]))
    return plan


def apply_freeze_plan(model: TransferModel, plan: FreezePlan, epoch: int = 0) -> None:
    """Switch gradients on/off per block as the plan says for `epoch`."""
    if plan.block_names != model.block_names:
        raise ValueError(f"The plan is for blocks {plan.block_names}, the model has {model.block_names}.")
    for name, on in plan.trained_at(epoch).items():
        model.blocks[name].requires_grad_(on)
    # Re-apply the current mode so newly frozen blocks drop to eval mode (and
    # newly unfrozen ones follow the model again).
    model.train(model.training)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def learned_parameters(model: TransferModel, plan: FreezePlan, epochs: int) -> int:
    """How many parameters learn by the last of `epochs` epochs (after a
    head-first epoch, or gradual unfreezing, more than at the start)."""
    trained = plan.trained_at(max(epochs - 1, 0))
    return sum(p.numel() for name, block in model.blocks.items() if trained[name] for p in block.parameters())


def _no_weight_decay(param_name: str, param: torch.Tensor) -> bool:
    # Biases and norm scales are 1-D; decaying them only hurts. ViT's class token
    # and position embedding are likewise left alone (as timm and others do).
    return param.ndim <= 1 or param_name.endswith(("class_token", "pos_embedding"))


def parameter_groups(model: TransferModel, plan: FreezePlan, lr: float, weight_decay: float) -> list[dict]:
    """Optimiser parameter groups following the plan's per-block learning rates.

    Every block with parameters is included, frozen ones too: gradual unfreezing
    turns them on later, and optimisers skip parameters whose grad is None. Each
    block gives up to two groups, because weight decay is set per group: "<block>"
    with weight decay and "<block>/no_decay" for biases and norm weights. Both
    carry "block": the block's name.
    """
    groups = []
    for name, block in model.blocks.items():
        decay, no_decay = [], []
        for param_name, param in block.named_parameters():
            (no_decay if _no_weight_decay(param_name, param) else decay).append(param)
        block_lr = lr * plan.lr_mult.get(name, 1.0)
        if decay:
            groups.append({"name": name, "block": name, "params": decay, "lr": block_lr, "weight_decay": weight_decay})
        if no_decay:
            groups.append(
                {"name": f"{name}/no_decay", "block": name, "params": no_decay, "lr": block_lr, "weight_decay": 0.0}
            )
    return groups
