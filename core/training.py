"""The training loop: a config in, a run folder filled epoch by epoch.

`train(config, run, progress)` scans the data, builds the model and its
freeze plan, makes the run's decisions once (core.decisions), assembles the
batches (core.training_data), trains, and writes every epoch's metrics and a
checkpoint to the run folder (core.checkpoints), reporting to a `Progress`
(core.progress; in the app, a core.jobs.Job), never to a page. It raises
TrainingError (and the data/weights errors) for problems a person can fix,
InterruptedError when asked to stop; core.jobs.run_job turns either into the
run's end state.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from . import distributed, progressive
from .augmented_views import stored_bytes_per_picture
from .backbones import get_backbone
from .checkpoints import (
    CheckpointCopies,
    EpochFiles,
    RunWriter,
    copies_landed,
    restore_random_state,
    restore_scaler,
    resume_payload,
)
from .config import TrainConfig
from .decisions import Decisions, decide, reads_pictures_every_epoch
from .devices import describe_device, pick_device, seed_everything, use_in_this_thread
from .errors import TrainingError
from .features import PrefixRunner, default_cache_dir
from .final_evaluation import evaluate_best, evaluate_test_split, summarise_test_split
from .freeze import apply_freeze_plan, count_parameters, freeze_plan_for, learned_parameters, parameter_groups
from .fusion import record_stage_weights
from .models import HeadConfig, build_model
from .progress import LOSS_FILE, LossCurve, Progress
from .resume import kept_split, move_schedule, schedule_settings
from .runs import Run, checkpoint_problem, owner
from .scan import scan_and_decode
from .scan_cache import CHECKED_BEFORE, decode_pictures
from .schedules import build_optimizer, build_schedule, frozen_batchnorm
from .sliced_steps import batch_total, can_slice, sliced_forward_backward, summed_twin
from .train_folding import folded_for_training
from .training_data import TrainingData, build_data
from .validation import to_device, validate

_LOSS_BLEW_UP = "The loss became infinite or NaN: the learning rate is probably too high. Try a smaller one."


def class_weights(labels: list[int], num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights, mean 1, so rare classes count as much."""
    counts = torch.bincount(torch.tensor(labels, dtype=torch.long), minlength=num_classes).float()
    weights = counts.sum() / (num_classes * counts.clamp(min=1))
    return weights / weights.mean()


# --- setting up -----------------------------------------------------------------


@dataclass
class _Setup:
    """Everything the epochs work with, made once before the first one."""

    config: TrainConfig
    run: Run
    progress: Progress
    report: object  # the ScanReport
    model: nn.Module
    plan: object  # the FreezePlan
    decisions: Decisions
    data: TrainingData
    criterion: nn.Module
    eval_criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler
    batches: int
    copies: CheckpointCopies
    frozen_runner: PrefixRunner
    forward: object = None  # model.forward_from, or it through DDP (core.distributed.wrap_model)
    summed_criterion: nn.Module = None  # the criterion summed over pictures, for slices (core.sliced_steps)


@dataclass
class _State:
    """What changes from epoch to epoch (and what last.pt keeps of it)."""

    history: list[dict] = field(default_factory=list)
    start_epoch: int = 1
    best: dict = field(default_factory=lambda: {"epoch": None, "val_accuracy": -1.0, "val_loss": math.inf})
    epochs_without_gain: int = 0
    step: int = 0
    losses: LossCurve = field(default_factory=LossCurve)  # every few batches' loss, the whole run's (LOSS_FILE)
    images_done: int = 0
    train_started: float = 0.0
    # When the blocks that learn last changed, and the work done since: the
    # time left is paced by those batches only, as a head-only first epoch
    # runs far faster than the fine-tuning epochs after it.
    pace_since: float = 0.0
    pace_work: float = 0.0  # batches since then, each weighed as _batch_work says
    best_weights: dict | None = None
    trained_now: dict | None = None
    trainable_now: int = 0  # parameters that learn in this epoch (counted when the plan changes)
    slice_now: int = 0  # this epoch's training batches run in slices of this many (0: whole)
    stopped_early: bool = False
    skipped: set = field(default_factory=set)


READING = "Reading the image folder"  # the scan, counted picture by picture


def _start(config: TrainConfig, run: Run, progress: Progress, started: float) -> tuple[torch.device, dict]:
    """Seed, pick the device, and say so: (device, its description)."""
    seed_everything(config.seed)
    device = distributed.place(pick_device(config.device))  # distributed: this rank's GPU
    use_in_this_thread(device)
    described = describe_device(device)
    progress.update(state="running", phase=READING, started=started, **described)
    run.update_status(state="running", started=started, reason=None, **described, **owner())
    return device, described


def _scan(
    config: TrainConfig, info, sizes: tuple[int, int], run: Run, progress: Progress, skipped: set, resume: bool = False
):
    """The scan decodes every image to check it; it keeps them, at the size
    training needs, so that training does not decode them again. When no
    picture changed since an earlier run's scan, it decodes none (its
    verdicts are kept with the stored features; see _decode_for_epochs). A
    resumed run keeps its own split (scan.json): the scan only says which of
    its pictures are still there, and what was added."""
    report, decoded, why_not_decoded = scan_and_decode(
        config.data_dir,
        sizes[1],
        val_fraction=config.val_fraction,
        seed=config.seed,
        interpolation=info.interpolation,
        on_file=lambda done, total: progress.phase(READING, done, total),
        reuse_checks_from=config.cache_dir or default_cache_dir(),
    )
    if resume:
        report, note = kept_split(run, report)
        progress.update(resume_note=note)
        run.update_status(resume_note=note)
    elif not report.can_train:
        raise TrainingError(" ".join(report.errors))
    else:
        run.write_json("scan.json", report.to_dict())
        run.write_json("classes.json", report.classes)
    _skip(progress, skipped, [s.path for s in report.skipped])
    return report, decoded, why_not_decoded


def _decode_for_epochs(info, sizes, report, progress: Progress):
    """The pictures the epochs read, decoded into memory now, once, as the
    scan would have kept them: a scan that reused earlier verdicts decoded
    none (a linear probe on stored features never needs them)."""
    return decode_pictures(
        [p for p, _ in report.train + report.val],
        sizes[1],
        interpolation=info.interpolation,
        on_file=lambda done, total: progress.phase(READING, done, total),
    )


def _skip(progress: Progress, skipped: set, paths: list[str]) -> None:
    skipped.update(paths)
    progress.add_skipped(paths)


def _build_model(config: TrainConfig, info, num_classes: int, progress: Progress):
    progress.update(phase=f"Loading {info.title}")

    def download_progress(done: int, total: int) -> None:
        progress.update(
            phase=f"Downloading {info.title} weights",
            download={"file": info.weights_file, "done": done, "total": total},
        )

    model = build_model(
        config.backbone,
        num_classes,
        init=config.init,
        head=HeadConfig.from_settings(config.to_dict()),
        progress=download_progress,
    )
    progress.update(download=None)
    plan = freeze_plan_for(model, config)
    apply_freeze_plan(model, plan, epoch=0)
    return model, plan


def _place_model(model: nn.Module, decisions: Decisions) -> None:
    model.to(decisions.device)
    if decisions.channels_last:
        model.to(memory_format=torch.channels_last)
    if decisions.device.type == "cuda":  # set both ways: a run before this one in the process may have turned it on
        torch.backends.cudnn.benchmark = decisions.cudnn_benchmark


def _optimisation(config: TrainConfig, report, model, plan, decisions: Decisions, batches: int):
    """(criterion, eval criterion, optimiser, schedule, grad scaler)."""
    weights = None
    if config.class_weighted:
        weights = class_weights([label for _, label in report.train], len(report.classes)).to(decisions.device)
    criterion = nn.CrossEntropyLoss(weight=weights, label_smoothing=config.label_smoothing)
    optimizer = build_optimizer(config.optimizer, parameter_groups(model, plan, config.lr, config.weight_decay), config)
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    scheduler = build_schedule(config, optimizer, plan, batches)
    scaler = torch.amp.GradScaler("cuda", enabled=decisions.grad_scaling)
    return criterion, nn.CrossEntropyLoss(), optimizer, scheduler, scaler


def _setup(
    config: TrainConfig, run: Run, progress: Progress, device: torch.device, skipped: set, resume: bool = False
) -> _Setup:
    """Scan, model, decisions, batches, optimiser: everything before the first epoch."""
    info = get_backbone(config.backbone)
    sizes = info.sizes(config.image_size)
    report, decoded, why_not_decoded = _scan(config, info, sizes, run, progress, skipped, resume)
    model, plan = _build_model(config, info, len(report.classes), progress)
    if why_not_decoded == CHECKED_BEFORE and reads_pictures_every_epoch(config, plan, report):
        decoded, why_not_decoded = _decode_for_epochs(info, sizes, report, progress)
    decisions = decide(
        config,
        device,
        sizes,
        plan,
        report,
        decoded_in_memory=decoded is not None,
        decoded_bytes=decoded.nbytes if decoded is not None else 0,
        stored_bytes_per_picture=lambda: stored_bytes_per_picture(
            model, plan.frozen_prefix(None, config.epochs), sizes[0]
        ),
    )
    decisions = distributed.per_rank_decisions(decisions)  # distributed: the batch split between ranks
    _place_model(model, decisions)
    model.frozen_batchnorm = frozen_batchnorm(config.batchnorm, decisions.batch_size)
    data = build_data(config, report, model, decisions, progress, decoded, why_not_decoded)
    del decoded  # what the epochs still need, the loaders hold
    distributed.shard_loaders(data, config.seed)  # a DistributedSampler per split (one process too)
    resizing = progressive.describe(decisions.epoch_image_sizes)
    progress.update(feature_cache=data.cache, decoded_images=data.decoded, resizing_note=resizing)
    batches = len(data.train_loader)
    parts = _optimisation(config, report, model, plan, decisions, batches)
    return _Setup(
        config,
        run,
        progress,
        report,
        model,
        plan,
        decisions,
        data,
        *parts,
        batches,
        CheckpointCopies(model),
        PrefixRunner(model, decisions.channels_last),
        summed_criterion=summed_twin(parts[0]),
    )


def _resume(s: _Setup, state: _State) -> None:
    """Go on from last.pt: weights, optimiser, schedule, the best so far and
    the random state, as if the run had never stopped. The schedule is the
    one built for the run's total now (a resume may have raised it), moved
    on to where the run stopped, not the saved one."""
    ckpt = torch.load(s.run.last_checkpoint, map_location="cpu", weights_only=True)
    s.model.load_state_dict(ckpt["model"])
    fresh = schedule_settings(s.optimizer)
    s.optimizer.load_state_dict(ckpt["optimizer"])
    move_schedule(s.scheduler, s.optimizer, fresh, ckpt["epoch"] * s.batches)
    restore_scaler(s.scaler, ckpt.get("scaler"))
    state.history = [r for r in s.run.metrics if r["epoch"] <= ckpt["epoch"]]
    state.start_epoch = ckpt["epoch"] + 1
    state.best = ckpt.get("best", state.best)
    if checkpoint_problem(s.run.best_checkpoint):  # a damaged best.pt: the next epoch makes a new one
        state.best = _State().best
    state.epochs_without_gain = ckpt.get("epochs_without_gain", 0)
    # The loss curve of the epochs kept (a run made before the file was kept has none).
    saved = s.run.batch_losses
    if saved.steps_per_epoch == s.batches:
        state.losses = LossCurve([p for p in saved.points if p[0] <= ckpt["epoch"] * s.batches], saved.per_point)
    restore_random_state(ckpt, s.decisions.device)


# --- the loop ---------------------------------------------------------------------


def train(config: TrainConfig, run: Run, progress: Progress, resume: bool = False) -> dict:
    """Train `config` into `run`, reporting to `progress`. Returns the result dict.

    Raises TrainingError (and the data/weights errors) for problems a user can
    fix, InterruptedError when stopped."""
    started = time.time()
    state = _State()
    device, described = _start(config, run, progress, started)
    s = _setup(config, run, progress, device, state.skipped, resume=resume)
    trainable, total = learned_parameters(s.model, s.plan, config.epochs), count_parameters(s.model)[1]
    if resume and run.last_checkpoint.exists():
        _resume(s, state)
    progress.set_history(state.history)
    progress.set_batch_losses(state.losses.points, state.losses.per_point)
    run.update_status(
        trainable_params=trainable,
        total_params=total,
        feature_cache=s.data.cache,
        decoded_images=s.data.decoded,
        decisions=s.decisions.to_dict(),
        freeze_plan=s.plan.describe(config.epochs),
        blocks=s.model.block_names,
        resumed_from=state.start_epoch - 1 if resume else None,
    )

    # Per-epoch files are written by a background thread (RunWriter). On
    # every way out of here it finishes them: a stopped run keeps its last
    # finished epoch.
    with RunWriter() as writer:
        try:
            _run_epochs(s, state, writer)
        finally:
            s.frozen_runner.release()
        progress.update(phase="Evaluating the best model on the validation images", eta_seconds=0)
        writer.flush()
        # distributed: rank 0 alone evaluates the best model and writes the files
        main_rank = distributed.current().main
        result_eval = evaluate_best(s, state.best_weights) if main_rank else {"macro_f1": None}
        if main_rank:
            record_stage_weights(
                s.model, distributed.final_val_loader(s.data), s.data.val_start, s.run, s.decisions.device
            )
    test_eval = evaluate_test_split(s) if distributed.current().main else None
    seconds = time.time() - started + (run.status.get("seconds_before_resume") or 0)
    return {
        "run_dir": str(run.path),
        "val_accuracy": state.best["val_accuracy"],
        "best_epoch": state.best["epoch"],
        "macro_f1": result_eval["macro_f1"],
        "seconds": round(seconds, 2),
        "device": described["device_name"],
        "epochs_done": state.history[-1]["epoch"] if state.history else 0,
        "stopped_early": state.stopped_early,
        "feature_cache": s.data.cache.get("used", False),
        "decoded_images": s.data.decoded.get("used", False),
        "trainable_params": trainable,
        "total_params": total,
        "skipped_files": len(state.skipped),
        "world_size": distributed.current().world_size,
        **summarise_test_split(test_eval),
    }  # the model, optimiser and data go with this frame; run_job then frees the GPU's cache


def _run_epochs(s: _Setup, state: _State, writer: RunWriter) -> None:
    state.step = (state.start_epoch - 1) * s.batches
    state.train_started = time.time()
    for epoch in range(state.start_epoch, s.config.epochs + 1):
        frozen = _prepare_epoch(s, state, writer, epoch)
        s.progress.update(
            epoch=epoch,
            epochs=s.config.epochs,
            batch=0,
            batches=s.batches,
            phase="Training",
            learning_now=s.plan.learning_words(epoch, s.config.epochs),
        )
        epoch_start, lr_start = time.time(), s.optimizer.param_groups[-1]["lr"]
        # Frozen BatchNorm statistics: the same numbers, less work. Only the
        # blocks this epoch runs through the model (the frozen prefix runs as
        # a folded copy of its own, PrefixRunner).
        with folded_for_training(*s.model.blocks_from(frozen)):
            epoch_loss, epoch_correct, epoch_seen = _train_epoch(s, state, epoch, frozen)
        val_loss, val_acc = validate(s)
        row = {
            "epoch": epoch,
            "train_loss": epoch_loss / max(epoch_seen, 1),
            "train_accuracy": epoch_correct / max(epoch_seen, 1),
            "val_loss": val_loss,
            "val_accuracy": val_acc,
            "lr_start": lr_start,  # the new head's rate at the epoch's first step
            "lr": s.optimizer.param_groups[-1]["lr"],  # and after its last (a cosine ends at 0)
            "trainable_params": state.trainable_now,
            "seconds": time.time() - epoch_start,
        }
        state.history.append(row)
        _save_epoch(s, state, writer, row)
        if s.config.early_stopping and state.epochs_without_gain >= s.config.early_stopping:
            state.stopped_early = True
            break


def _prepare_epoch(s: _Setup, state: _State, writer: RunWriter, epoch: int) -> int:
    """Apply this epoch's freeze plan; returns the frozen prefix it runs
    without autograd."""
    if s.plan.trained_at(epoch - 1) != state.trained_now:  # the first epoch, and gradual unfreezing
        # Checkpoints still being written share the frozen blocks' tensors
        # (see CheckpointCopies): let them finish before any block unfreezes.
        writer.flush()
        # On a CPU the best weights kept in memory share those tensors too,
        # and unfrozen blocks will change them: the end reads best.pt instead.
        if state.trained_now is not None:
            state.best_weights = None
        state.trained_now = s.plan.trained_at(epoch - 1)
        apply_freeze_plan(s.model, s.plan, epoch=epoch - 1)
        state.trainable_now = count_parameters(s.model)[0]
        state.pace_since, state.pace_work = time.time(), 0.0
        s.forward = distributed.wrap_model(s.model, s.decisions.device)  # DDP follows what trains
    distributed.set_epoch(s.data, epoch)  # distributed: this epoch's shuffle, the same on every rank
    s.model.train()
    # Blocks frozen in this epoch run without autograd: no graph is built
    # and none of their activations are kept for a backward pass. They are
    # in eval mode (TransferModel.train), so they run as a copy with
    # BatchNorm folded in, made again (and the old one freed) only when the
    # frozen prefix changes (PrefixRunner).
    frozen = max(s.plan.frozen_prefix(epoch - 1), s.data.train_start)
    if frozen > s.data.train_start:
        s.frozen_runner.blocks(s.data.train_start, frozen)
    slices_allowed = s.decisions.train_slice and can_slice(
        s.model.blocks_from(frozen), distributed.current().world_size
    )
    state.slice_now = s.decisions.train_slice if slices_allowed else 0
    return frozen


def _train_epoch(s: _Setup, state: _State, epoch: int, frozen: int) -> tuple[float, int, int]:
    """One pass over the training batches: (summed loss, correct, seen)."""
    d = s.decisions
    # Sums stay on the device, read once per epoch: reading a GPU number
    # waits for the GPU, and doing that every batch would stall it.
    epoch_loss = torch.zeros((), device=d.device)
    epoch_correct = torch.zeros((), dtype=torch.long, device=d.device)
    epoch_seen = 0
    for batch_index, (x, y, _idx, bad) in enumerate(s.data.train_loader, start=1):
        if distributed.any_rank(s.progress.stop_requested):  # distributed: all ranks stop at one batch
            raise InterruptedError
        if bad:
            _skip(s.progress, state.skipped, [s.report.train[i][0] for i in bad])
        if len(y) == 0:
            continue
        x, y = to_device(x, d), y.to(d.device, non_blocking=True)
        if d.epoch_image_sizes:  # progressive resizing: this epoch's smaller pictures
            x = progressive.shrink(x, d.epoch_image_sizes[epoch - 1])
        s.optimizer.zero_grad(set_to_none=True)
        loss, logits = _forward_backward(s, x, y, frozen, state.slice_now)
        s.scaler.step(s.optimizer)
        s.scaler.update()
        s.scheduler.step()
        state.step += 1
        epoch_loss += loss.detach() * len(y)
        epoch_correct += (logits.argmax(1) == y).sum()
        epoch_seen += len(y)
        state.images_done += len(y)
        _report_batch(s, state, epoch, batch_index, loss)
    # distributed: the sums over every rank, so the numbers are one process's
    epoch_loss, epoch_correct, epoch_seen = distributed.sum_over_ranks(
        epoch_loss.item(), epoch_correct.item(), epoch_seen
    )
    if not math.isfinite(epoch_loss):
        raise TrainingError(_LOSS_BLEW_UP)
    return epoch_loss, epoch_correct, epoch_seen


def _forward_backward(s: _Setup, x, y, frozen: int, slice_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's forward and backward passes, whole or in slices of
    `slice_size` (core.sliced_steps): its (mean loss, logits), detached."""
    d = s.decisions

    def forward(pictures: torch.Tensor) -> torch.Tensor:
        with torch.autocast(d.device.type, dtype=d.autocast, enabled=d.autocast is not None):
            if frozen > s.data.train_start:
                with torch.no_grad():
                    pictures = s.frozen_runner.blocks(s.data.train_start, frozen)(pictures)
            return s.forward(frozen, pictures)

    def backward(loss: torch.Tensor) -> None:
        s.scaler.scale(loss).backward()

    if slice_size and len(y) > slice_size:
        total = batch_total(s.criterion, y)
        return sliced_forward_backward(forward, s.summed_criterion, total, x, y, slice_size, backward)
    logits = forward(x)
    loss = s.criterion(logits.float(), y)
    backward(loss)
    return loss.detach(), logits.detach()


def _batch_work(s: _Setup, epoch: int) -> float:
    """A batch of `epoch` as a share of a full-size one: progressive
    resizing's smaller pictures cost about their share of the pixels."""
    sizes = s.decisions.epoch_image_sizes
    return (sizes[epoch - 1] / sizes[-1]) ** 2 if sizes else 1.0


def _report_batch(s: _Setup, state: _State, epoch: int, batch_index: int, loss: torch.Tensor) -> None:
    """Speed and time left after every batch; the loss (a wait for the GPU)
    only every few batches."""
    elapsed = time.time() - state.train_started
    speed = state.images_done / elapsed if elapsed > 0 else None
    state.pace_work += _batch_work(s, epoch)
    later_epochs = sum(_batch_work(s, later) for later in range(epoch + 1, s.config.epochs + 1))
    remaining_work = (s.batches - batch_index) * _batch_work(s, epoch) + s.batches * later_epochs
    eta = remaining_work * (time.time() - state.pace_since) / state.pace_work
    # While more blocks are still to join in (a head-only first epoch, gradual
    # unfreezing), the later epochs will be slower than this pace: a floor.
    more_learn_later = s.plan.trained_at(s.config.epochs - 1) != state.trained_now
    s.progress.update(batch=batch_index, images_per_second=speed, eta_seconds=eta, eta_at_least=more_learn_later)
    every = max(1, s.config.batch_loss_every)
    first_ones = epoch == state.start_epoch and batch_index <= every  # the chart shows life at once
    if first_ones or state.step % every == 0 or batch_index == s.batches:
        value = loss.item()
        if not math.isfinite(value):
            raise TrainingError(_LOSS_BLEW_UP)
        state.losses.add(state.step, value)
        s.progress.add_batch_loss(state.step, value)


def _save_epoch(s: _Setup, state: _State, writer: RunWriter, row: dict) -> None:
    """The epoch's files go to the writer thread, which writes them while the
    next epoch trains (EpochFiles: the checkpoints, then the metrics line,
    so every epoch in metrics.jsonl can be resumed from), then the progress
    hears of it. When epochs outrun the disk, a later epoch's files take the
    place of those still waiting."""
    epoch, val_acc, val_loss, best = row["epoch"], row["val_accuracy"], row["val_loss"], state.best
    payload = s.copies.payload(s.config, s.report.classes, epoch, state.trained_now)
    new_best = val_acc > best["val_accuracy"] or (val_acc == best["val_accuracy"] and val_loss < best["val_loss"])
    if new_best:
        state.best = best = {"epoch": epoch, "val_accuracy": val_acc, "val_loss": val_loss}
        state.best_weights = payload["model"]
    if val_loss < best.get("lowest_val_loss", math.inf) - 1e-4:
        best["lowest_val_loss"] = val_loss
        state.epochs_without_gain = 0
    else:
        state.epochs_without_gain += 1
    last = resume_payload(
        payload, s.optimizer, s.scheduler, s.scaler, best, state.epochs_without_gain, s.decisions.device
    )
    # Copies off a GPU were only queued above: the writer waits for them
    # (copies_landed) before it writes, so the training thread never does.
    status = {"epochs_done": epoch, "best_epoch": best["epoch"], "best_val_accuracy": best["val_accuracy"]}
    state.losses.steps_per_epoch = s.batches
    losses = copy.deepcopy(state.losses.to_json())
    files = EpochFiles(
        s.run,
        copies_landed(s.decisions.device),
        payload if new_best else None,
        last,
        list(state.history),
        status,
        (LOSS_FILE, losses),
    )
    writer.submit_files(files)
    writer.submit(s.progress.add_epoch, row)
