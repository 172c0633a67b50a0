"""What is wrong inside a run's files that read as whole JSON: values of the
wrong kind, put there by a hand edit or another program ("epochs": "ten",
"lr": null, a list where the network's name goes, "adapted_from": "x"), and a
classes.json that does not name the classes the run trained on.

core.runs.Run.problems adds these to the files it cannot read at all, so such
a run is listed as damaged, with the reason in words, instead of breaking a
page that reads the value (a list as a dictionary key, a number as a path).
"""

from __future__ import annotations

import json
from dataclasses import fields

from .config import TrainConfig
from .counts import first_few, how_many

# The kinds of value a saved setting may hold, from TrainConfig's annotations ("int | None").
_KINDS = {"int": "a whole number", "float": "a number", "str": "text", "bool": "true/false", "dict": "an object"}
_KINDS["list"] = "a list"
_SETTING_KINDS = {f.name: [k.strip() for k in str(f.type).split("|")] for f in fields(TrainConfig)}

# status.json's entries that pages read, and the kinds they may hold (None: null allowed).
_STATUS_KINDS = {
    "state": ["str"],
    **dict.fromkeys(("created", "started", "ended", "updated", "seconds"), ["float", "None"]),
    **dict.fromkeys(("best_val_accuracy", "macro_f1"), ["float", "None"]),
    **dict.fromkeys(("epochs_done", "best_epoch", "trainable_params", "total_params"), ["int", "None"]),
    **dict.fromkeys(("reason", "device", "device_name", "freeze_plan"), ["str", "None"]),
    "adapted_from": ["dict"],
}


def _fits(value, kind: str) -> bool:
    if kind == "None":
        return value is None
    if kind == "bool":
        return isinstance(value, bool)
    if isinstance(value, bool):  # true is no number
        return False
    if kind == "int":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if kind == "float":
        return isinstance(value, (int, float))
    return isinstance(value, {"str": str, "dict": dict, "list": list}.get(kind, object))


def _shown(value) -> str:
    """A saved value in a few characters, for the reason."""
    text = json.dumps(value, default=str)
    return text if len(text) <= 24 else text[:21] + "…"


def _kind_problem(file: str, name: str, value, kinds: list[str]) -> str | None:
    if any(_fits(value, kind) for kind in kinds):
        return None
    wanted = " or ".join(_KINDS.get(k, k) for k in kinds if k != "None")
    return f"{file}'s {name} is {_shown(value)}, not {wanted}"


def config_problems(config: dict) -> list[str]:
    """The settings in a config.json (an object) that hold the wrong kind of
    value, in words: "config.json's epochs is "ten", not a whole number".
    Settings it lacks are not problems (a run made before a setting existed
    trained without it); ones outside today's limits neither (the limits may
    have changed since)."""
    found = [
        _kind_problem("config.json", name, config[name], _SETTING_KINDS[name])
        for name in config
        if name in _SETTING_KINDS
    ]
    return _at_most(found)


def status_problems(status: dict) -> list[str]:
    """What is wrong inside a status.json (an object), in words: no state, or
    an entry the pages read holding the wrong kind of value; a kept adapted
    model's "adapted_from" that does not name the run it came from."""
    if "state" not in status:
        return ["status.json does not say the run's state"]
    found = [
        _kind_problem("status.json", name, status[name], _STATUS_KINDS[name])
        for name in status
        if name in _STATUS_KINDS
    ]
    accuracy = status.get("best_val_accuracy")
    if _fits(accuracy, "float") and accuracy > 1:
        found.append(f"status.json's best_val_accuracy is {accuracy:g}, more than 1 (all pictures right)")
    came = status.get("adapted_from")
    if isinstance(came, dict) and not (isinstance(came.get("run"), str) and came["run"]):
        found.append("status.json's adapted_from does not name the run it was adapted from")
    elif isinstance(came, dict):
        found += origin_problems(came)
    return _at_most(found)


def _at_most(found: list, shown: int = 3) -> list[str]:
    """The problems found: the first `shown` of them and how many more, so that a reason stays readable."""
    found = [p for p in found if p]
    if len(found) <= shown:
        return found
    return [*found[:shown], f"and {len(found) - shown} more like these"]


def classes_problems(classes: list, scan: dict | None) -> list[str]:
    """What is wrong with a classes.json (a list): names that are not text,
    none at all, or other classes than the ones the run trained on (its
    scan.json's, where that is readable)."""
    if not classes:
        return ["classes.json names no classes"]
    if not all(isinstance(c, str) for c in classes):
        return ["classes.json holds something other than class names"]
    trained = (scan or {}).get("classes")
    if isinstance(trained, list) and trained and list(classes) != trained:
        return [
            f"classes.json names {how_many(len(classes), 'class', 'classes')} ({first_few(classes, 4)}), "
            "but the run trained on "
            f"{len(trained)} ({first_few(trained, 4)})"
        ]
    return []


# A metrics.jsonl row's numbers the charts draw, and an eval.json's entries the pages read, with their kinds.
_EPOCH_NUMBERS = ("train_loss", "val_loss", "train_accuracy", "val_accuracy")
_EVAL_KINDS = {
    "accuracy": "float",
    "macro_f1": "float",
    "count": "int",
    "classes": "list",
    "per_class": "list",
    "confusion": "list",
    "predictions": "list",
}
_CLASS_ROW = {"class": "str", "precision": "float", "recall": "float", "f1": "float", "support": "int"}
_PREDICTION_ROW = {
    **dict.fromkeys(("path", "true", "predicted"), "str"),
    **dict.fromkeys(("label", "pred"), "int"),
    **dict.fromkeys(("confidence", "loss"), "float"),
    "correct": "bool",
}


def metrics_row_problem(row: dict) -> str | None:
    """What is wrong with one epoch's row of metrics.jsonl (an object), in
    words, or None: the epoch's number and the losses and accuracies the
    charts draw must be numbers."""
    if not _fits(row.get("epoch"), "int") or isinstance(row.get("epoch"), float):
        return "is cut off or not an epoch's metrics"
    wrong = [name for name in _EPOCH_NUMBERS if not _fits(row.get(name), "float")]
    return f"has no number for {', '.join(wrong)}" if wrong else None


def eval_problems(evaluation: dict) -> list[str]:
    """What is wrong inside an eval.json (an object), in words: an entry the
    Results page reads that is missing or of the wrong kind, or a row of its
    per-class table or of its predictions that is not whole."""
    missing = [name for name in _EVAL_KINDS if name not in evaluation]
    found = [f"eval.json has no {', '.join(missing)}" if missing else None]
    found += [
        _kind_problem("eval.json", name, evaluation[name], [k])
        for name, k in _EVAL_KINDS.items()
        if name not in missing
    ]
    for name, row_kinds in (("per_class", _CLASS_ROW), ("predictions", _PREDICTION_ROW)):
        rows = evaluation.get(name)
        if isinstance(rows, list) and not all(_whole_row(row, row_kinds) for row in rows):
            found.append(f"eval.json's {name} holds rows that are not whole")
    if isinstance(evaluation.get("classes"), list) and not all(isinstance(c, str) for c in evaluation["classes"]):
        found.append("eval.json's classes are not all names")
    confusion = evaluation.get("confusion")
    if isinstance(confusion, list) and not all(
        isinstance(row, list) and all(_fits(v, "int") for v in row) for row in confusion
    ):
        found.append("eval.json's confusion holds something other than counts")
    if not any(found):  # each entry of its kind: do they fit together, as the Results page reads them?
        found += _eval_shape_problems(evaluation)
    return _at_most(found)


def _eval_shape_problems(evaluation: dict) -> list[str]:
    """What keeps a whole-looking eval.json from being shown: entries that do
    not fit its classes (a confusion matrix of another size, a prediction of
    a class it does not have), or scores that are not shares."""
    n = len(evaluation["classes"])
    if not n:
        return ["eval.json names no classes"]
    found = [
        f"eval.json's {name} is {_shown(evaluation[name])}, not a share between 0 and 1"
        for name in ("accuracy", "macro_f1")
        if not 0 <= evaluation[name] <= 1  # NaN too
    ]
    confusion = evaluation["confusion"]
    if len(confusion) != n or any(len(row) != n for row in confusion):
        found.append(f"eval.json's confusion is not {n} by {n}, a row and a column for each of its {n} classes")
    if len(evaluation["per_class"]) != n:
        found.append(f"eval.json's per_class has {len(evaluation['per_class'])} rows for its {n} classes")
    if any(not 0 <= row[key] < n for row in evaluation["predictions"] for key in ("label", "pred")):
        found.append(f"eval.json's predictions name class numbers outside its {n} classes")
    return found


def _whole_row(row, kinds: dict) -> bool:
    return isinstance(row, dict) and all(_fits(row.get(name), kind) for name, kind in kinds.items())


# A kept adapted model's "adapted_from" (core.adapted_run.origin): what each entry the pages read holds.
_ORIGIN_KINDS = {
    **dict.fromkeys(("run", "run_path", "method", "method_words", "target_dir", "labelled_dir"), ["str", "None"]),
    **dict.fromkeys(("target_pictures", "scored_pictures", "source_epochs", "source_best_epoch"), ["int", "None"]),
    **dict.fromkeys(("source", "target"), ["dict", "None"]),
    "adapted": ["float", "None"],
}


def origin_problems(came: dict) -> list[str]:
    """The entries of a kept adapted model's "adapted_from" (an object) that hold the wrong kind of value."""
    found = [
        _kind_problem("status.json", f"adapted_from's {name}", came[name], kinds)
        for name, kinds in _ORIGIN_KINDS.items()
        if name in came
    ]
    for side in ("source", "target"):
        scores = came.get(side)
        if isinstance(scores, dict) and not all(_fits(v, "float") or v is None for v in scores.values()):
            found.append(f"status.json's adapted_from's {side} holds something other than accuracies")
    return found


def clean_origin(came: dict) -> dict:
    """A kept adapted model's "adapted_from" with only the entries of the right
    kind (the others left out, read as unknown), so that a hand-edited one
    never breaks the sentence every page says about it (Run.problems says what)."""
    kept = {k: v for k, v in came.items() if k not in _ORIGIN_KINDS or any(_fits(v, t) for t in _ORIGIN_KINDS[k])}
    for side in ("source", "target"):
        if isinstance(kept.get(side), dict):
            kept[side] = {k: v for k, v in kept[side].items() if v is None or _fits(v, "float")}
    return kept
