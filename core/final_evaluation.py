"""After the epochs: the best epoch's weights scored on the validation
pictures (eval.json) and, when the folder has a test/ split, once on those
(test_eval.json, with the interval around its accuracy). `check_again` does
the first once more for a finished run whose eval.json or classes.json was
deleted or broken, from its best.pt, without training.

The functions take the training's setup `s` (core.training's _Setup: the
model, the run, the data, the decisions and the progress; not imported, as
core.training imports this module) as it stands when the epochs are over.
"""

from __future__ import annotations

import torch

from . import distributed, evaluation
from .devices import inference_batch_size, pick_device, release_device_memory
from .errors import UserError
from .held_out import interval_in_words, wilson_interval
from .images import open_rgb
from .progress import counted
from .runs import open_run
from .training_data import loader_for_test_split


def evaluate_best(s, best_weights: dict | None) -> dict:
    """Load the best epoch's weights (`best_weights`, or best.pt when this
    process did not see that epoch), evaluate them on val, write eval.json."""
    if best_weights is None:  # resumed, and no epoch since beat the best before
        best_weights = torch.load(s.run.best_checkpoint, map_location="cpu", weights_only=True)["model"]
    s.model.load_state_dict(best_weights)
    d = s.decisions
    result_eval = evaluation.evaluate_loader(
        s.model,
        counted(
            distributed.final_val_loader(s.data),
            s.progress,
            "Evaluating the best model on the validation images",
            len(s.report.val),
        ),
        s.data.val_start,
        s.report.classes,
        [p for p, _ in s.report.val],
        d.device,
        d.autocast,
        d.channels_last,
    )
    s.run.write_json("eval.json", result_eval)
    return result_eval


def evaluate_test_split(s) -> dict | None:
    """Score the best model, once, on the test/ pictures (if the folder has
    them) into test_eval.json: the first and only time they are read after
    the scan. Runs after evaluate_best, so the model holds the best epoch's
    weights and the choice of that epoch is already made."""
    if not s.report.test:
        return None
    d = s.decisions
    loader = counted(
        loader_for_test_split(s.config, s.report, s.model, d),
        s.progress,
        "Evaluating the best model on the test pictures",
        len(s.report.test),
    )
    paths = [p for p, _ in s.report.test]
    result = evaluation.evaluate_loader(
        s.model, loader, 0, s.report.classes, paths, d.device, d.autocast, d.channels_last
    )
    seen = {row["path"] for row in result["predictions"]}
    correct = sum(row["correct"] for row in result["predictions"])
    n = len(result["predictions"])
    low, high = wilson_interval(correct, n)
    result.update(
        n=n,
        ci95=[low, high],
        words=interval_in_words(result["accuracy"], n, low, high),
        unreadable=[p for p in paths if p not in seen],
    )
    s.run.write_json("test_eval.json", result)
    return result


def summarise_test_split(test_eval: dict | None) -> dict:
    """The test split's numbers for train's result line and status.json."""
    if test_eval is None:
        return {}
    return {
        "test_accuracy": test_eval["accuracy"],
        "test_ci95": test_eval["ci95"],
        "test_n": test_eval["n"],
        "test_macro_f1": test_eval["macro_f1"],
    }


def check_again(run_dir, device: str = "auto", batch_size: int | None = None, on_progress=None) -> dict:
    """Score a finished run's best model (best.pt) again on its own validation
    pictures (scan.json's split) and write eval.json anew, and classes.json
    from the model where it is missing or broken: what a deleted or broken
    eval.json or classes.json needs, without training. Pictures that cannot
    be read now are left out (the result's "unreadable"). Raises a UserError
    saying why it cannot (Run.can_check_again says whether it should).

    It runs where a training would ("auto": a GPU when there is one; the
    result's "device"), in batches that device's memory holds, and calls
    on_progress(done, total) with the pictures done: 0 before the first batch,
    then after each one."""
    run, where = open_run(run_dir), pick_device(device)
    try:
        result = _score_again(run, where, batch_size or inference_batch_size(where), on_progress)
    finally:
        release_device_memory(where)  # the model is gone with _score_again's frame
    return {**result, "device": str(where)}


def _score_again(run, device: torch.device, batch_size: int, on_progress) -> dict:
    loaded = evaluation.load_run_model(run.path, device=device)  # its classes from best.pt itself
    scan = run.scan
    val = [v for v in scan.get("val") or [] if isinstance(v, list) and len(v) == 2]
    if not val:
        raise UserError(f"The run {run.name} cannot be checked again: scan.json does not list its validation pictures.")
    if scan.get("classes") != loaded.classes:
        raise UserError(f"The run {run.name} cannot be checked again: its model and scan.json name other classes.")
    paths = [str(path) for path, _ in val]
    report = on_progress or (lambda done, total: None)

    def batches():
        report(0, len(val))
        for start in range(0, len(val), batch_size):
            images, labels, indices = [], [], []
            for index in range(start, min(start + batch_size, len(val))):
                try:
                    images.append(loaded.transform(open_rgb(paths[index], max_side=loaded.resize_size)))
                except Exception:  # noqa: BLE001 - a picture gone or broken since: left out, and counted
                    continue
                labels.append(int(val[index][1]))
                indices.append(index)
            if images:
                yield torch.stack(images), torch.tensor(labels), torch.tensor(indices), []
            report(min(start + batch_size, len(val)), len(val))  # once the batch is scored

    result = evaluation.evaluate_loader(loaded.model, batches(), 0, loaded.classes, paths, loaded.device)
    if not result["predictions"]:
        raise UserError(
            f"The run {run.name} cannot be checked again: none of its {len(val)} validation pictures can be read now."
        )
    if run.model_problem or not (run.path / "classes.json").exists():
        run.write_json("classes.json", loaded.classes)
    run.write_json("eval.json", result)
    seen = {row["path"] for row in result["predictions"]}
    return {**result, "unreadable": [p for p in paths if p not in seen]}
