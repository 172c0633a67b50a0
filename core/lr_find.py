"""The learning-rate finder (fastai's `lr_find`, after L. Smith's range test).

A short run whose rate grows exponentially, from `start_lr` to `end_lr`, one
step per batch; the loss of each step, smoothed, against the rate. It stops
when the loss explodes (four times its lowest, and above its start). Where
the run warms up its pretrained blocks (the rates climb from zero once they
join in, as by default), the suggestion is the rate at the curve's lowest
point, where the loss stops falling; where only the head learns, or the run
has no warm-up, a tenth of it (fastai's "minimum/10"). fastai's "valley"
(the middle of the longest stretch where the loss keeps falling, a little
towards its end) is kept in the result, and "steepest" (where it falls
fastest) is shown.

Why (mobilenet_v2, AdamW, the defaults, seed 0, a CPU; 5-epoch runs, best
val accuracy, val loss at the end; the sweep's lowest point, valley, where
it stopped):
- linear, the head alone (no warm-up): lowest 0.045 / 0.038 (hymenoptera /
  clothing10), valley 0.00091 / 0.00063, stopped at 2.3 / 1.1. Runs: 1e-4
  0.824 / 0.317, 3e-4 0.928 / 0.633, 1e-3 0.948 / 0.809, 3e-3 0.954 / 0.833
  (loss 0.129 / 0.643, the best), 1e-2 0.941 / 0.815, 3e-2 0.948 / 0.818
  (loss 0.48 / 1.04). A tenth of the lowest, 0.0045 / 0.0038, lands on the
  best; the lowest itself is far past it: a head on fixed features fits its
  pictures (loss 0.01) at rates no run should keep;
- last-2 (head first for an epoch, then 2 blocks at ×0.5 and ×0.25, warm-up
  0.5 epoch, cosine): lowest 0.0013 / 0.0028, valley 0.000098 / 0.00017,
  a tenth 0.00013 / 0.00028, stopped at 0.066 / 0.14. Runs: 1e-4 0.935 /
  0.475, 3e-4 0.928 / 0.748, 1e-3 0.954 / 0.850, 3e-3 0.941 / 0.850, 1e-2
  0.928 then 0.49 / 0.158 (the blocks spoilt, as the sweep's loss, back to
  its start by 0.01, foretold);
- full (the same phases, every block): lowest 0.0016 / 0.0049, valley
  0.000081 / 0.00036. Runs: 1e-4 0.922 / -, 3e-4 0.954 / 0.739, 1e-3 0.941 /
  0.839 (loss 0.158, hymenoptera's lowest), 3e-3 0.935 / 0.833.
  A second seed (1) of the last-2 sweep on hymenoptera: lowest 0.0016, the
  valley 0.0016 too (it jumps: 0.000098 for seed 0).
The valley, and fastai's minimum/10, sat 4-10 times below the best rates of
every fine-tune (and a tenth of a 10-epoch grid's best: 0.954 and 0.865 at
0.001 against 0.935 and 0.710 at 1e-4). A fine-tune's lowest point is where
its blocks start to be spoilt, and its warm-up lets the run climb to it:
without warm-up (last-2), 3e-3 fell to 0.915 / 0.804 while 1e-3 held 0.954
/ 0.850, so such a run keeps minimum/10 (safe, if low).

Three choices differ from fastai's:
- the curve drawn, and read for the suggestion, is each step's loss smoothed
  without lag: the median of the steps within a third of a decade of rates
  either side (9 at fastai's density; `centred`). fastai's exponential
  average (0.98), even at 0.9 and debiased, runs behind the loss it follows:
  on hymenoptera (mobilenet_v2, the head alone, AdamW) 86 % of the steps'
  losses lay below it while the loss fell, and the stretch where it fell,
  the suggestion's, ran on to 0.11 (with SGD to 110) where theirs ended at
  0.045 (1). A centred median goes through their middle (45 % below; the
  suggestions 0.0013 and 0.01, were 0.00091 and 0.03) and, unlike a centred
  average, is not pulled up by the blow-up's huge losses before they happen.
  The average (0.9, debiased) still decides when to stop: it needs no later
  steps;
- an SGD sweep of the head alone goes on to 1000, not 10: a new head on
  frozen features takes far bigger rates than a whole network, and with SGD
  its loss only blew up at about 300 (AdamW's at about 0.7, RMSprop's at
  0.006: theirs end at 10, as fastai's do). The steps keep fastai's density (100 over
  the 8 decades from 1e-7 to 10);
- it sweeps what the run trains once every block it lets learn has joined
  in (`swept_plan`), at their own rates (earlier blocks more gently), since
  the rate found becomes the one "Learning rate" of the whole run: the head
  learns at it, alone in the head-first epochs and beside the blocks after,
  and the blocks at their fractions of it. A sweep of the head alone (what
  fastai's lr_find of a frozen learner does) reaches its lowest loss at
  0.045 on hymenoptera with AdamW, where a last-2 sweep had blown up
  (0.066; lowest 0.0013): applied to a fine-tune, the head's rates are far
  too big for the blocks. A linear probe, or a run too short for any block
  to join, sweeps the head alone on the stored outputs of the frozen blocks (made
  once, as a training makes them, and kept for the runs after): seconds.
  Blocks that learn need pictures: a minute or more on a CPU.
The sweep's model is thrown away; nothing is written but the feature cache.

Tried and left out: starting a sweep that trains blocks from a head first
trained alone (one pass at the run's rate, on stored features, as the run's
head-first epoch does; fastai advises as much), since the run's blocks join
a fitted head, not a random one. Measured with mobilenet_v2 and AdamW on a
CPU: the sweep did start from a fitted head (its first losses 0.36-0.45
instead of 0.68-0.73 on hymenoptera, 1.58-1.66 instead of 2.35-2.39 on
clothing10), but the valley (then the suggestion) moved either way and more from seed to
seed: last-2 on hymenoptera, seeds 0-2, 4.6e-5, 3.6e-4 and 1.7e-4 where the
sweep from a random head gave 9.8e-5 each time; on clothing10, seeds 0-1,
7.6e-4 and 1.4e-4 against 1.7e-4 and 2.5e-4; full, seed 0, 4.3e-4 against
8.1e-5 (hymenoptera) and 1.7e-4 against 3.6e-4 (clothing10). Runs of 3
epochs did better at the new rate in 2 of those 5 pairs and worse in 3,
whichever rate was bigger winning (10-epoch last-2 runs scored best at
0.001, above both). A fitted head's loss starts low and falls little before
it blows up, so the longest fall, the valley, is less sure.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .augmented_views import stored_bytes_per_picture
from .backbones import get_backbone
from .config import TrainConfig
from .counts import how_many, rate_text
from .decisions import decide
from .devices import pick_device, seed_everything
from .errors import TrainingError
from .features import PrefixRunner
from .freeze import FreezePlan, apply_freeze_plan, freeze_plan_for, parameter_groups
from .models import HeadConfig, build_model
from .progress import Quiet
from .scan import scan_and_decode
from .schedules import build_optimizer, frozen_batchnorm
from .training_data import build_data

SMOOTHING = 0.9  # the average that stops the sweep: exponential, debiased (fastai's is 0.98: see above)
EXPLODES = 4.0  # stop once that average is this many times its lowest (fastai's)
HALF_WINDOW = 4  # the curve: the median of this many steps either side of each, at fastai's density (a third
# of a decade; a sweep with fewer steps a decade takes fewer, so the window spans the same rates)
END_LR = 10.0  # where a sweep that trains pretrained blocks ends (fastai's)
END_LR_HEAD = 1000.0  # where a sweep of the new head alone ends: it takes far bigger rates
STEPS_PER_DECADE = 12.5  # fastai's 100 steps from 1e-7 to 10


@dataclass
class LrFindResult:
    lrs: list[float]
    losses: list[float]  # smoothed without lag (centred), the curve drawn and read
    raw_losses: list[float]
    suggestion: float  # `lowest` where the run warms up, else a tenth of it (see the module's doc)
    lowest: float  # the rate at the curve's lowest point (not the last five steps)
    valley: float  # fastai's valley, the suggestion before
    steepest: float
    falling: tuple[float, float]  # the rates of the stretch where the loss keeps falling (the suggestion's)
    start_lr: float
    end_lr: float
    exploded: bool  # stopped because the loss blew up
    warms_up: bool  # the run's pretrained blocks join in at rates that climb from zero
    trains: str  # what the sweep trained, in words
    used_for: str  # what the rate is used for in the run, in words
    seconds: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def words(self) -> str:
        """The suggestion and how it was chosen, in words."""
        low, lowest = rate_text(self.falling[0]), rate_text(self.lowest)
        end = (
            f"it blew up at {rate_text(self.lrs[-1])}"
            if self.exploded
            else f"it had not blown up by {rate_text(self.lrs[-1])}, where the sweep ended"
        )
        why = (
            "the rate where the loss stopped falling: in the run the rates "
            "climb to it slowly once the pretrained blocks join in, then fall, so it can be the biggest rate "
            "that still helped in the sweep; much bigger ones spoil the pretrained blocks"
            if self.warms_up
            else f"a tenth of {lowest}, where the loss stopped falling: the run "
            "starts at its full rate, so it keeps well short of the edge"
        )
        return (
            f"Suggested learning rate: {rate_text(self.suggestion)}, {why}. The loss falls from {low} to "
            f"{lowest}; {end}. It falls fastest at {rate_text(self.steepest)}, but that one point of a noisy "
            f"curve moves from sweep to sweep. Swept {len(self.lrs)} steps, training {self.trains}. {self.used_for}"
        )


def centred(losses: list[float], half: int = HALF_WINDOW) -> list[float]:
    """Each step's loss smoothed without lag: the median of the steps
    around it, `half` on each side (fewer near the ends, as many on each
    side, so the middle stays the step itself). Not an average: the blow-up's
    huge losses would pull it up before they happen."""
    n = len(losses)
    return [statistics.median(losses[i - k : i + k + 1]) for i in range(n) for k in [min(half, i, n - 1 - i)]]


def valley(losses: list[float]) -> int:
    """fastai's valley: the index a little past the middle of the longest
    run of (not necessarily consecutive) falling losses."""
    return falling_stretch(losses)[2]


def falling_stretch(losses: list[float]) -> tuple[int, int, int]:
    """(start, end, valley): fastai's longest run of (not necessarily
    consecutive) falling losses, and the index a little past its middle."""
    n = len(losses)
    if n < 2:
        return 0, 0, 0
    longest = [1] * n
    start = end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and longest[i] < longest[j] + 1:
                longest[i] = longest[j] + 1
        if longest[end] < longest[i]:
            end, start = i, i - longest[i]
    sections = (end - start) / 3
    start = max(0, start)
    return start, end, min(n - 1, max(0, start + int(sections) + int(sections / 2)))


def steepest(lrs: list[float], losses: list[float]) -> int:
    """Where the smoothed loss falls fastest against the log of the rate."""
    if len(losses) < 3:
        return 0
    slopes = [
        (losses[i + 1] - losses[i - 1]) / (math.log(lrs[i + 1]) - math.log(lrs[i - 1])) for i in range(1, len(lrs) - 1)
    ]
    return 1 + min(range(len(slopes)), key=slopes.__getitem__)


def swept_plan(plan: FreezePlan, epochs: int) -> FreezePlan:
    """What the sweep trains, for all its steps: the blocks that learn in
    the run's last epoch (every block the run lets learn has joined by then;
    blocks only ever start learning), each at its own share of the rate.
    The head alone for a linear probe, or a run that ends before any block
    joins."""
    return FreezePlan(
        strategy="custom",
        trained=plan.trained_at(max(int(epochs) - 1, 0)),
        lr_mult=dict(plan.lr_mult),
        param_free=list(plan.param_free),
        fused_span=list(plan.fused_span),
    )


def _trains_words(plan: FreezePlan, stored: bool) -> str:
    on = [n for n, t in plan.trained.items() if t and n != "head"]
    what = "the new head" if not on else f"the new head and {how_many(len(on), 'pretrained block')}"
    if on and min(plan.lr_mult.get(n, 1.0) for n in on) < 1:
        what += " (earlier blocks more gently, as the run trains them)"
    return what + (", on stored features of the frozen blocks" if stored else ", on pictures")


def rate_use_words(plan: FreezePlan, epochs: int) -> str:
    """What the rate found becomes in a run with `plan` over `epochs`
    epochs, in words: the one "Learning rate", and who learns at it."""
    swept = swept_plan(plan, epochs).trained
    on = [n for n, t in swept.items() if t and n != "head"]
    start = "Used, it becomes the learning rate of the whole run"
    if not on:
        return f"{start}: the rate of the new head, the only part that learns."
    lowest = min(plan.lr_mult.get(n, 1.0) for n in on)
    blocks = how_many(len(on), "pretrained block")
    rates = "at it too" if lowest >= 1 else f"at fractions of it (down to ×{lowest:.2g}), as in the sweep"
    if plan.head_epochs > 0:
        first = "epoch" if plan.head_epochs == 1 else f"{plan.head_epochs} epochs"
        return f"{start}: the new head learns at it, alone in the first {first}; then the {blocks} join in {rates}."
    if plan.strategy == "gradual":
        return f"{start}: the new head learns at it from the start; the {blocks} join in one by one {rates}."
    return f"{start}: the new head learns at it, and the {blocks} {rates}."


def lr_find(
    config: TrainConfig,
    start_lr: float = 1e-7,
    end_lr: float | None = None,
    steps: int | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> LrFindResult:
    """Sweep the learning rate for `config` (its data, backbone, strategy,
    optimiser, batch size). `end_lr` None: END_LR_HEAD when only the new head
    learns, with SGD, else END_LR; `steps` None: STEPS_PER_DECADE over the range.
    Raises TrainingError for settings it cannot use."""
    if not 0 < start_lr < (end_lr or math.inf):
        raise TrainingError(f"The sweep needs 0 < start rate < end rate, not {start_lr:g} and {end_lr}.")
    began = time.time()
    seed_everything(config.seed)
    device = pick_device(config.device)
    info = get_backbone(config.backbone)
    sizes = info.sizes(config.image_size)
    report, decoded, why_not = scan_and_decode(
        config.data_dir, sizes[1], val_fraction=config.val_fraction, seed=config.seed, interpolation=info.interpolation
    )
    if not report.can_train:
        raise TrainingError(" ".join(report.errors))
    head = HeadConfig.from_settings(config.to_dict())
    model = build_model(config.backbone, len(report.classes), init=config.init, head=head)
    run_plan = freeze_plan_for(model, config)
    plan = swept_plan(run_plan, config.epochs)
    head_only = not any(on for name, on in plan.trained.items() if name != "head")
    if head_only:
        # Only the head learns: fixed pictures, so every one goes through the
        # frozen blocks once (as a linear probe's training does).
        config = dataclasses.replace(config, augment="none")
    # Only SGD needs the longer sweep to blow up; Adam-like optimisers blow up below 10, and a
    # sweep to 1000 drew a chart to rates that mean nothing to a person (a QA pass).
    long_sweep = head_only and config.optimizer == "sgd"
    end_lr = end_lr or max(END_LR_HEAD if long_sweep else END_LR, start_lr * 10)
    steps = max(6, int(steps or round(STEPS_PER_DECADE * math.log10(end_lr / start_lr))))
    apply_freeze_plan(model, plan, epoch=0)
    decisions = decide(
        config,
        device,
        sizes,
        plan,
        report,
        decoded is not None,
        decoded.nbytes if decoded is not None else 0,
        lambda: stored_bytes_per_picture(model, plan.frozen_prefix(None, config.epochs), sizes[0]),
    )
    model.to(device)
    if decisions.channels_last:
        model.to(memory_format=torch.channels_last)
    model.frozen_batchnorm = frozen_batchnorm(config.batchnorm, decisions.batch_size)
    progress = Quiet(should_stop)
    data = build_data(config, report, model, decisions, progress, decoded, why_not)
    del decoded
    optimizer = build_optimizer(config.optimizer, parameter_groups(model, plan, 1.0, config.weight_decay), config)
    lrs, raw, exploded = _sweep(model, plan, data, decisions, optimizer, (start_lr, end_lr, steps), progress)
    if not lrs:
        raise TrainingError("The sweep made no step: the training pictures could not be read.")
    per_decade = (steps - 1) / math.log10(end_lr / start_lr)
    smooth = centred(raw, max(1, round(HALF_WINDOW * per_decade / STEPS_PER_DECADE)))
    # As fastai's suggestions do: not the last few steps (the blow-up), nor the first tenth, where nothing
    # learns yet and the noise of a flat curve could pass for its steepest fall.
    first, end = (len(smooth) // 10, len(smooth) - 5) if len(smooth) > 10 else (0, len(smooth))
    low, high, valley_at = falling_stretch(smooth[first:end])
    lowest = min(range(first, end), key=smooth.__getitem__)
    warms_up = not head_only and (config.warmup_epochs > 0 or config.schedule == "onecycle")
    # Without a warm-up, fastai's "minimum/10": the swept rate nearest a tenth of the lowest point's.
    tenth = max(first, min(range(first, lowest + 1), key=lambda i: abs(math.log(lrs[i] * 10 / lrs[lowest]))))
    return LrFindResult(
        lrs=lrs,
        losses=smooth,
        raw_losses=raw,
        suggestion=lrs[lowest if warms_up else tenth],
        lowest=lrs[lowest],
        valley=lrs[first + valley_at],
        steepest=lrs[first + steepest(lrs[first:end], smooth[first:end])],
        falling=(lrs[first + low], lrs[first + high]),
        start_lr=start_lr,
        end_lr=end_lr,
        exploded=exploded,
        warms_up=warms_up,
        trains=_trains_words(plan, data.train_start > 0),
        used_for=rate_use_words(run_plan, config.epochs),
        seconds=round(time.time() - began, 2),
    )


def _sweep(model: nn.Module, plan: FreezePlan, data, decisions, optimizer, sweep: tuple, progress: Quiet):
    """The steps: (rates, their losses, exploded); stopped once the losses'
    average (SMOOTHING, debiased) is EXPLODES times its lowest and above
    where it started. fastai stops at the first alone, which a loss that
    falls near 0 (a head that fits its pictures: 0.0002 at its lowest on
    hymenoptera) meets with a blip long before it blows up (at 1.25
    instead of about 300, with SGD); worse than the untrained start is
    blown up whatever the lowest was."""
    start_lr, end_lr, steps = sweep
    multipliers = [group["lr"] for group in optimizer.param_groups]  # built at rate 1: each block's own factor
    criterion = nn.CrossEntropyLoss()
    frozen = max(plan.frozen_prefix(0), data.train_start)
    runner = PrefixRunner(model, decisions.channels_last)
    lrs, raw = [], []
    average, best, first = 0.0, math.inf, None
    model.train()
    try:
        while len(lrs) < steps:
            for x, y, _idx, _bad in data.train_loader:
                if progress.stop_requested:
                    raise InterruptedError
                if len(y) == 0:
                    continue
                lr = start_lr * (end_lr / start_lr) ** (len(lrs) / (steps - 1))
                for group, mult in zip(optimizer.param_groups, multipliers):
                    group["lr"] = lr * mult
                loss = _step(model, runner, data.train_start, frozen, x, y, decisions, optimizer, criterion)
                average = SMOOTHING * average + (1 - SMOOTHING) * loss
                smoothed = average / (1 - SMOOTHING ** (len(lrs) + 1))
                lrs.append(lr)
                raw.append(loss)
                best, first = min(best, smoothed), smoothed if first is None else first
                if not math.isfinite(smoothed) or smoothed > max(EXPLODES * best, first):
                    return lrs, raw, True
                if len(lrs) >= steps:
                    break
            else:
                if not lrs:  # a whole pass without a usable batch
                    break
    finally:
        runner.release()
    return lrs, raw, False


def _step(model, runner, start: int, frozen: int, x, y, decisions, optimizer, criterion) -> float:
    device = decisions.device
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    if decisions.channels_last and x.dim() == 4:
        x = x.to(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=decisions.autocast, enabled=decisions.autocast is not None):
        if frozen > start:
            with torch.no_grad():
                x = runner.blocks(start, frozen)(x)
        loss = criterion(model.forward_from(frozen, x).float(), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())
