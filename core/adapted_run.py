"""An adapted model kept as a run of its own, so that everything that takes a
run (the Playground, the Results page, the export, Compare, `predict`) takes
it too, with nothing of theirs changed.

`keep_as_run(run_dir)` reads the run's adapted.pt (core.adapt) and makes a
new folder beside the run, in the same runs folder (RunStore, named
`<time>-<backbone>-adapted`), laid out as a finished training's:

    config.json  classes.json  scan.json   the source run's (same network, classes, split)
    best.pt                                the adapted model, in a trained run's layout
    eval.json                              the adapted model on the run's validation pictures
    status.json                            finished, with "adapted_from" (run, folder, method, accuracies,
                                           the epochs the source trained), and its own time and device
    adapted_from.json                      the same, with adapt.json's whole record

It has no metrics.jsonl: it did not train, so it has no training curves of its
own (how its network learned is in the source run, which the pages link to),
and its status keeps none of the source's notes on how that training went
(the feature cache's, the picture loading's, the test split's, the resume's),
nor its epochs, time or device: it has no epochs, its time is the
adaptation's and its device the one it adapted on (core.runs.adapted_facts,
which reads runs kept before this as honestly).

Self-training puts a FeatureAlign (a per-feature scale and shift) in front of
the head. It is folded into the head's first Linear layer: W(x*s + b) + c =
(W*s)x + (Wb + c), so best.pt has exactly a trained run's state dict, and
load_run_model, TorchScript and ONNX export need nothing new. AdaBN changes
only BatchNorm statistics, which are already in that layout.

The source's adapt.json gets "kept_as" (the new run's name), so the Results
page offers to keep an adaptation once. It has no last.pt: there is nothing
to resume.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .adapt import ADAPTED_FILE, RECORD_FILE, FeatureAlign, read_record, with_alignment
from .config import ADAPT_DONE
from .counts import how_many
from .errors import UserError
from .evaluation import evaluate_loader, load_run_model
from .loading import BatchNormalizer, ImageDataset, NormalizedBatches, threaded_batches
from .models import HeadConfig, build_model
from .run_checks import clean_origin
from .run_lock import RunLock
from .runs import ORIGIN_FILE, Run, RunStore, checkpoint_problem, open_run, owner, read_json
from .scan_report import ScanReport

SOURCE = "the run it was adapted from"  # what its blocks table, strategy and trained numbers describe
STRATEGY_SLUG = "adapted"  # the new folder's name ends with it: the runs list shows where it came from
# The source's status.json entries that describe a training this run did not do again.
_NOT_COPIED = ("test_", "resume", "seconds_before_resume", "started", "ended", "updated", "reason", "pid", "host")
# Notes on how that training went ("Fast path: …", "No pictures are read during the epochs …"): not this run's.
_NOT_COPIED += ("feature_cache", "decisions", "decoded_images")
# How long it trained, its epochs and where: the source's (kept in "adapted_from": its epochs), not this run's.
_NOT_COPIED += ("seconds", "epochs_done", "best_epoch", "device", "cpu_threads", "world_size")


# --- the model ---------------------------------------------------------------------------


@torch.no_grad()
def fold_alignment(model: nn.Module) -> nn.Module:
    """The model with its head's FeatureAlign (if any) folded into the first
    Linear layer after it: the same answers, the plain head's layout. In place."""
    head = model.blocks["head"]
    if not (isinstance(head, nn.Sequential) and len(head) == 2 and isinstance(head[0], FeatureAlign)):
        return model
    align, inner = head
    layers = list(inner) if isinstance(inner, nn.Sequential) else [inner]
    first = next((m for m in layers if not isinstance(m, nn.Dropout)), None)  # dropout does nothing when predicting
    if not isinstance(first, nn.Linear) or first.in_features != align.scale.numel():
        raise UserError("This model's head does not start with a plain layer, so the adaptation cannot be kept in it.")
    if first.bias is None:
        first.bias = nn.Parameter(torch.zeros(first.out_features, device=first.weight.device))
    first.bias += first.weight @ align.shift
    first.weight *= align.scale
    model.blocks["head"] = inner
    return model


def adapted_model(run_dir: str | Path) -> tuple[nn.Module, dict]:
    """The run's adapted model (adapted.pt) in a trained run's layout, on the
    CPU in eval mode, and adapted.pt's payload (config, classes, record)."""
    path = Path(run_dir) / ADAPTED_FILE
    if not path.exists():
        raise UserError(f"The run {Path(run_dir).name} has no adapted model: adapt it to new pictures first.")
    problem = checkpoint_problem(path)
    if problem:
        raise UserError(f"The adapted model cannot be used: {problem}. Adapt the run again.")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    config, classes, state = payload["config"], payload["classes"], payload["model"]
    model = build_model(config["backbone"], len(classes), init="random", head=HeadConfig.from_settings(config))
    if "blocks.head.0.scale" in state and "blocks.head.0.shift" in state:
        with_alignment(model)
    model.load_state_dict(state)
    return fold_alignment(model).eval(), payload


# --- the record ---------------------------------------------------------------------------


def origin(source: Run, record: dict) -> dict:
    """Where an adapted run came from: the run and the epochs it trained, the
    pictures, the method and the accuracies before and after (status.json's
    "adapted_from")."""
    return {
        "run": source.name,
        "source_epochs": source.status.get("epochs_done"),
        "source_best_epoch": source.status.get("best_epoch"),
        "run_path": str(source.path.resolve()),
        "method": record["method"],
        "method_words": record.get("method_words"),
        "target_dir": record["target_dir"],
        "target_pictures": record["target_pictures"],
        "labelled_dir": record.get("labelled_dir"),
        "scored_pictures": record.get("scored_pictures", 0),
        "source": record["source"],
        "target": record["target"],
        "adapted": record.get("created"),
    }


def source_words(came: dict, name: Callable[[str], str] = str) -> str:
    """The run it was adapted from and what that run trained: "the run X,
    which trained 2 epochs" (`name` marks the run's name up)."""
    epochs = came.get("source_epochs")
    trained = f", which trained {how_many(epochs, 'epoch')}" if isinstance(epochs, int) else ""
    return f"the run {name(str(came.get('run') or '?'))}{trained}"


def origin_words(came: dict, name: Callable[[str], str] = str, folder: Callable[[str], str] = str) -> str:
    """One sentence, the one every page and the model card say: the run and
    what it trained, the folder of pictures and the method (`name` and
    `folder` mark the run's name and the folder up, for markdown)."""
    method = came.get("method")
    how = ADAPT_DONE.get(method, f" by {method}") if isinstance(method, str) else ""  # none: a damaged record
    how = f" {how.strip()}" if how else ""
    pictures = f"the {came.get('target_pictures', '?')} pictures in {folder(str(came.get('target_dir') or '?'))}"
    return f"Adapted from {source_words(came, name)}, to {pictures}{how}."


def changed_numbers(model: nn.Module) -> dict:
    """What adapting can change in a kept adapted model (a trained run's
    layout): how many BatchNorm layers it has and the statistics they keep
    (AdaBN re-measures those), and the head's numbers and how many features
    it reads (self-training changes those). Stored in "adapted_from"."""
    norms = [
        m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None
    ]
    return {
        "batchnorm_layers": len(norms),
        "batchnorm_statistics": sum(m.running_mean.numel() + m.running_var.numel() for m in norms),
        "head_numbers": sum(p.numel() for p in model.blocks["head"].parameters()),
        "features": model.feature_dim,
    }


def changes_words(came: dict, numbers: dict | None = None) -> str:
    """What adapting changed in the model, in words: for AdaBN the averages
    its BatchNorm layers keep, for self-training only the head (a feature
    scale and shift folded into it, then learning without labels); the rest
    is as the source trained it. `numbers` (changed_numbers) where a run kept
    before they were stored has its model at hand; "" for an unknown method."""
    numbers = numbers or came.get("changed")
    # Counts only where they are whole numbers (a hand-edited status.json may hold anything).
    numbers = {k: v for k, v in numbers.items() if type(v) is int} if isinstance(numbers, dict) else {}
    method = came.get("method")
    if method == "adabn":
        layers, stats = numbers.get("batchnorm_layers"), numbers.get("batchnorm_statistics")
        counted = (
            f" of its {layers} BatchNorm layers, {stats:,} numbers" if layers and stats else " of its BatchNorm layers"
        )
        return (
            "It learned nothing: it re-measured on the new pictures the averages the network keeps of what it sees "
            f"(the running mean and variance{counted}). Every weight is as {SOURCE} trained it."
        )
    if method == "self-training":
        head, width = numbers.get("head_numbers"), numbers.get("features")
        return (
            f"Only the new head changed{f' ({head:,} numbers)' if head else ''}: a scale and a shift for each of "
            f"the {f'{width:,} ' if width else ''}features it reads lined the new pictures' features up with those of "
            "the training pictures, then it learned from the new pictures without their labels; the scale and shift "
            f"are folded into its first layer. The rest of the network is as {SOURCE} trained it."
        )
    return ""


def epochs_words(came: dict) -> str:
    """A kept adapted model's epochs, where a trained run's are counted: none of its own."""
    best = came.get("source_best_epoch")
    return f"none: adapted from {source_words(came)}" + (f" (best: epoch {best})" if best else "")


def read_origin(run_dir: str | Path) -> dict | None:
    """A kept adapted run's adapted_from.json, or None for any other run."""
    return read_json(Path(run_dir) / ORIGIN_FILE, None, dict) or None


def kept_run(run_dir: str | Path) -> Run | None:
    """The run the run's latest adaptation was kept as, while it is still there."""
    record = read_record(run_dir)
    name = (record or {}).get("kept_as")
    if not name or "/" in name or "\\" in name:
        return None
    path = Path(run_dir).parent / name
    came = read_origin(path)
    return Run(path) if came and came.get("adapted") == record.get("created") else None


# --- the new run --------------------------------------------------------------------------


def _evaluate(run: Run) -> dict:
    """The kept model (loaded back from best.pt, as every page will) on the run's validation pictures."""
    loaded = load_run_model(run.path, device="cpu")
    report = ScanReport.from_dict(run.scan)
    info = loaded.model.info
    transform = info.transforms(loaded.config.get("image_size"), normalize=False)
    batches = threaded_batches(ImageDataset(report.val, transform, max_side=loaded.resize_size), 64, threads=2)
    loader = NormalizedBatches(batches, BatchNormalizer(info.mean, info.std, loaded.device))
    paths = [p for p, _ in report.val]
    return evaluate_loader(loaded.model, loader, 0, loaded.classes, paths, loaded.device)


def _status(source: Run, came: dict, record: dict, result: dict) -> dict:
    kept = {k: v for k, v in source.status.items() if not k.startswith(_NOT_COPIED)}
    return {
        **kept,
        "state": "finished",
        "reason": None,
        "created": time.time(),
        "ended": time.time(),
        "epochs_done": 0,  # it did not train
        "seconds": record.get("seconds"),  # the adaptation's
        "device": record.get("device"),  # where it adapted (not in an adapt.json made before that was kept)
        "device_name": record.get("device_name"),
        "best_val_accuracy": result.get("accuracy"),
        "macro_f1": result.get("macro_f1"),
        "adapted_from": came,
        **owner(),
    }


def keep_as_run(run_dir: str | Path, on_phase: Callable[[str], None] | None = None) -> Run:
    """Keep the run's adapted model (adapted.pt) as a new finished run in the
    same runs folder (see the module doc). Returns the new run; the run the
    adaptation was already kept as, when it still exists."""
    say = on_phase or (lambda _text: None)
    source = open_run(run_dir)
    already = kept_run(source.path)
    if already is not None:
        return already
    record = read_record(source.path)
    if not record:
        raise UserError(f"The run {source.name} was never adapted: adapt it to new pictures first.")
    say("Reading the adapted model")
    model, payload = adapted_model(source.path)  # every refusal comes before a folder is made
    config, classes = source.config or payload["config"], payload["classes"]
    came = {**origin(source, payload.get("adapt") or record), "changed": changed_numbers(model)}
    run = RunStore(source.path.parent).create(config.get("backbone") or "model", STRATEGY_SLUG)
    lock = RunLock(run.path).acquire()
    try:
        run.write_json("config.json", config)
        run.write_json("classes.json", classes)
        run.write_json("scan.json", source.scan)
        run.update_status(state="queued", created=time.time(), epochs_done=0, adapted_from=came, **owner())
        best = {
            "model": model.state_dict(),
            "config": config,
            "classes": list(classes),
            "epoch": source.status.get("best_epoch"),
            "backbone": config.get("backbone"),
            "adapted_from": came,
        }
        run.save_checkpoint("best.pt", best)
        say("Checking the adapted model on your validation pictures")
        result = _evaluate(run)
        run.write_json("eval.json", result)
        run.write_json(ORIGIN_FILE, {**came, "record": record})
        run.update_status(**_status(source, came, record, result))
        source.write_json(RECORD_FILE, {**record, "kept_as": run.name})
    except BaseException as exc:
        with contextlib.suppress(Exception):  # the first reason is the one to raise
            run.update_status(state="failed", reason=f"Keeping the adapted model did not finish: {exc}")
        raise
    finally:
        lock.release()
    return run


def card_lines(status: dict) -> list[str]:
    """The model card's section on an adapted run ([] for any other run)."""
    came = status.get("adapted_from")
    if not isinstance(came, dict):
        return []
    came = clean_origin(came)  # a hand-edited entry reads as unknown

    def pct(value) -> str:
        return "-" if value is None else f"{value:.1%}"

    s, t = came.get("source") or {}, came.get("target") or {}
    lines = ["", "## Adapted to new pictures", "", origin_words(came), ""]
    if came.get("method_words"):
        lines += [f"Method: {came['method_words']}", ""]
    lines.append(f"- On the run's validation pictures: {pct(s.get('before'))} before, {pct(s.get('after'))} after.")
    if t.get("after") is not None:
        lines.append(
            f"- On {came.get('scored_pictures')} labelled new pictures: {pct(t.get('before'))} before, "
            f"{pct(t.get('after'))} after."
        )
    else:
        lines.append("- The new pictures had no labels, so how well it does on them was not measured.")
    return lines
