"""After the epochs: the best epoch's weights scored on the validation
pictures (eval.json) and, when the folder has a test/ split, once on those
(test_eval.json, with the interval around its accuracy).

The functions take the training's setup `s` (core.training's _Setup: the
model, the run, the data, the decisions and the progress; not imported, as
core.training imports this module) as it stands when the epochs are over.
"""

from __future__ import annotations

import torch

from . import distributed, evaluation
from .held_out import interval_in_words, wilson_interval
from .progress import counted
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
