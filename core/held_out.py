"""How well a trained model does on pictures it never saw, and how sure we
can be of that number.

`evaluate_folder(run, folder)` predicts every picture of a labelled folder
(one subfolder per class, named like the run's classes) and scores it like
validation: accuracy with its 95% interval, per-class precision / recall /
F1, the confusion matrix and one row per picture for the gallery of mistakes.
Pictures of a class the model does not know are listed apart, never counted
as wrong answers.

The interval is Wilson's score interval for a proportion: unlike "accuracy
plus or minus two standard errors" it stays inside [0, 1] and is honest for
small counts and accuracies near 100 %, which is what a class of 30 pictures
gives.
"""

from __future__ import annotations

import math
from pathlib import Path

from .errors import UserError

Z_95 = 1.959963984540054  # the standard normal's 97.5th percentile


def wilson_interval(correct: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """(low, high) of the 95% Wilson score interval for correct / n."""
    if n <= 0:
        return 0.0, 1.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def interval_in_words(accuracy: float, n: int, low: float, high: float) -> str:
    """The sentence a teacher reads under an accuracy."""
    return f"95% sure the true accuracy is between {low:.0%} and {high:.0%} ({n} picture{'s' if n != 1 else ''})."


def labelled_pictures(folder, classes: list[str]) -> tuple[list[tuple[Path, int]], dict[str, int]]:
    """(path, label) for every picture in a class folder the model knows, and
    the picture count of each folder it does not know."""
    from .evaluation import list_images

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder. Choose a folder with one subfolder per class.")
    index = {name: i for i, name in enumerate(classes)}
    known, unknown = [], {}
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        pictures = list_images(class_dir)
        if class_dir.name in index:
            known += [(p, index[class_dir.name]) for p in pictures]
        elif pictures:
            unknown[class_dir.name] = len(pictures)
    if not known:
        names = ", ".join(classes)
        raise UserError(f"No pictures in {folder} are in a folder named like one of the model's classes ({names}).")
    return known, unknown


def evaluate_folder(run_dir, folder, *, device: str = "cpu", batch_size: int = 32, on_progress=None) -> dict:
    """Score the run's best model on a labelled folder (see the module doc)."""
    from .evaluation import load_run_model, metrics_from_predictions, predict_batch

    loaded = load_run_model(run_dir, device=device)
    pictures, unknown = labelled_pictures(folder, loaded.classes)
    rows = predict_batch(
        loaded, [p for p, _ in pictures], k=3, batch_size=batch_size, root=Path(folder), on_progress=on_progress
    )
    index = {name: i for i, name in enumerate(loaded.classes)}
    scored, unreadable = [], []
    for (path, label), row in zip(pictures, rows):
        if row["error"]:
            unreadable.append({"path": row["file"], "error": row["error"]})
            continue
        pred = index[row["top_class"]]
        scored.append(
            {
                "path": str(path),
                "file": row["file"],
                "label": label,
                "true": loaded.classes[label],
                "pred": pred,
                "predicted": row["top_class"],
                "confidence": row["confidence"],
                "correct": pred == label,
                "top": row["top"],
            }
        )
    result = metrics_from_predictions([r["label"] for r in scored], [r["pred"] for r in scored], loaded.classes)
    correct = sum(r["correct"] for r in scored)
    low, high = wilson_interval(correct, len(scored))
    result.update(
        n=len(scored),
        ci95=[low, high],
        predictions=scored,
        unknown_classes=unknown,
        unreadable=unreadable,
        folder=str(Path(folder).resolve()),
        words=interval_in_words(result["accuracy"], len(scored), low, high),
    )
    return result
