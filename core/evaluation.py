"""What a trained model gets right and wrong, and predictions with it.

`evaluate_loader` turns a model's outputs on the validation images into
accuracy, per-class precision / recall / F1, the confusion matrix and one row
per image (prediction, confidence, loss) for a gallery of mistakes.
`load_run_model` and `predict_paths` use a run's best checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .errors import UserError
from .images import HEIC_EXTENSIONS, IMAGE_EXTENSIONS, bounded_rgb, open_rgb, unreadable_reason
from .models import HeadConfig, build_model
from .runs import checkpoint_problem, open_run
from .scan import is_hidden_or_system, is_link_loop


def metrics_from_predictions(labels: list[int], preds: list[int], classes: list[str]) -> dict:
    """Accuracy, per-class precision / recall / F1 and the confusion matrix
    (rows: true class, columns: predicted). The same numbers as
    scikit-learn's confusion_matrix and precision_recall_fscore_support
    (zero_division=0), counted here: importing scikit-learn would take longer
    than a warm linear probe's whole training."""
    n = len(classes)
    pairs = [(t, p) for t, p in zip(labels, preds) if 0 <= t < n and 0 <= p < n]
    confusion = [[0] * n for _ in range(n)]
    for t, p in pairs:
        confusion[t][p] += 1
    support = [sum(row) for row in confusion]
    predicted = [sum(column) for column in zip(*confusion)] if n else []
    hits = [confusion[i][i] for i in range(n)]
    precision = [hits[i] / predicted[i] if predicted[i] else 0.0 for i in range(n)]
    recall = [hits[i] / support[i] if support[i] else 0.0 for i in range(n)]
    # scikit-learn's F-score: 2·TP / (2·TP + FP + FN), 0 when there is neither
    f1 = [2 * hits[i] / (predicted[i] + support[i]) if predicted[i] + support[i] else 0.0 for i in range(n)]
    per_class = [
        {
            "class": name,
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(classes)
    ]
    total = len(labels)
    with_support = [c for c in per_class if c["support"]]
    correct = sum(int(t == p) for t, p in zip(labels, preds))
    return {
        "accuracy": correct / total if total else 0.0,
        "macro_f1": sum(c["f1"] for c in with_support) / len(with_support) if with_support else 0.0,
        "per_class": per_class,
        "confusion": [[int(v) for v in row] for row in confusion],
        "classes": list(classes),
        "count": total,
    }


@torch.no_grad()
def evaluate_loader(
    model,
    loader,
    start_block: int,
    classes: list[str],
    paths: list[str],
    device,
    dtype=None,
    channels_last: bool = False,
    top_k: int = 3,
) -> dict:
    """Run model.forward_from(start_block) over loader's (inputs, labels,
    indices, failed) batches; `paths[index]` names each image."""
    model.eval()
    rows, labels, preds = [], [], []
    for x, y, idx, _bad in loader:
        if len(y) == 0:
            continue
        x = x.to(device)
        if x.dtype == torch.float16 and device.type == "cpu":
            x = x.float()
        if channels_last and x.dim() == 4:
            x = x.to(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model.forward_from(start_block, x)
        # Everything per batch is computed where the logits are, then comes to
        # the CPU in one go: labels from stored features already live on the
        # GPU, labels from an image loader on the CPU.
        logits = logits.float()
        y = y.to(logits.device)
        losses = F.cross_entropy(logits, y, reduction="none")
        top_p, top_i = logits.softmax(1).topk(min(top_k, logits.shape[1]), dim=1)
        y, losses, top_p, top_i = (t.cpu() for t in (y, losses, top_p, top_i))
        for j in range(len(y)):
            pred = int(top_i[j, 0])
            rows.append(
                {
                    "path": paths[int(idx[j])],
                    "label": int(y[j]),
                    "true": classes[int(y[j])],
                    "pred": pred,
                    "predicted": classes[pred],
                    "confidence": float(top_p[j, 0]),
                    "loss": float(losses[j]),
                    "correct": pred == int(y[j]),
                    "top": [[classes[int(c)], float(p)] for p, c in zip(top_p[j], top_i[j])],
                }
            )
            labels.append(int(y[j]))
            preds.append(pred)
    result = metrics_from_predictions(labels, preds, classes)
    result["predictions"] = rows
    return result


@dataclass
class LoadedModel:
    """A run's model ready to predict: the network, its classes and the eval
    transform it was trained with."""

    model: torch.nn.Module
    classes: list[str]
    transform: object
    config: dict
    resize_size: int
    device: torch.device


def load_run_model(run_dir: str | Path, which: str = "best", device: str | torch.device = "cpu") -> LoadedModel:
    run = open_run(run_dir)
    path = run.best_checkpoint if which == "best" else run.last_checkpoint
    if not path.exists():
        raise FileNotFoundError(
            f"The run {run.name} has no saved model yet ({path.name} is missing): it has not finished an epoch."
        )
    damaged = f"The run {run.name} has no usable model"
    problem = checkpoint_problem(path)
    if problem:
        advice = (  # resuming makes a new best.pt only with a new epoch (core.resume refuses it without)
            "Only a new epoch can make a new best model: resume the run (with more epochs, if it did all it "
            "planned) if its last.pt is whole, or delete it."
            if which == "best"
            else "Delete the run, or start a new one."
        )
        raise UserError(f"{damaged}: {problem}. {advice}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        config = ckpt.get("config") or run.config
        classes = ckpt.get("classes") or run.classes
        # The architecture comes from the config; the weights from the checkpoint, so
        # no download is needed to use a trained model.
        model = build_model(
            config["backbone"],
            len(classes),
            init="random",
            head=HeadConfig.from_settings(config),
        )
        model.load_state_dict(ckpt["model"])
    except (UserError, MemoryError):
        raise
    except Exception as exc:  # a damaged file fails in many ways; each reads the same
        raise UserError(f"{damaged}: {path.name} cannot be read ({type(exc).__name__}: {exc}).") from exc
    device = torch.device(device)
    model.to(device).eval()
    info = model.info
    resize_size = info.sizes(config.get("image_size"))[1]
    transform = info.transforms(config.get("image_size"))
    return LoadedModel(model, list(classes), transform, config, resize_size, device)


def _walk_into(dirpath: str, name: str, visited: set[str]) -> bool:
    """Whether list_images goes into the folder `name` of `dirpath`: not a
    hidden one, not one walked already (a second link to it), not a link back
    up to a folder above (which would walk round again)."""
    if is_hidden_or_system(name):
        return False
    real = os.path.realpath(os.path.join(dirpath, name))
    if is_link_loop(real, os.path.realpath(dirpath), visited):  # as the scan walks a class folder
        return False
    visited.add(real)
    return True


def list_images(path: str | Path, with_heic: bool = False) -> list[Path]:
    """The pictures in a folder and its subfolders (or the one file named), as
    the scan finds them: hidden and system files and folders (.DS_Store,
    ._photo.jpg from a Mac, __MACOSX/, the app's own .set-aside/) are left
    out, linked folders are followed once (a link loop is not walked round),
    and only regular files count, so a pipe named .jpg is never opened.
    with_heic: phones' .heic pictures are listed too, so that whoever asked
    can be told why they cannot be read rather than find them missing."""
    path = Path(path)
    if not path.is_dir():
        if path.exists():
            return [path]
        raise FileNotFoundError(f"{path} does not exist.")
    endings = IMAGE_EXTENSIONS | HEIC_EXTENSIONS if with_heic else IMAGE_EXTENSIONS
    found: list[Path] = []
    visited: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(path, followlinks=True):
        visited.add(os.path.realpath(dirpath))
        dirnames[:] = [
            name for name in sorted(dirnames) if _walk_into(dirpath, name, visited)
        ]  # sorted: the same each time
        for name in filenames:
            file = Path(dirpath, name)
            if os.path.splitext(name)[1].lower() in endings and not is_hidden_or_system(name) and file.is_file():
                found.append(file)
    return sorted(found)


@torch.no_grad()
def predict_images(loaded: LoadedModel, images, k: int = 3) -> list[dict]:
    """Top-k for each image (a path or a PIL image). A file that cannot be read
    gets an "error" instead of predictions; the others go on."""
    out = []
    for item in images:
        name = str(item) if isinstance(item, (str, Path)) else getattr(item, "filename", "image")
        try:
            image = open_rgb(item, max_side=loaded.resize_size) if isinstance(item, (str, Path)) else bounded_rgb(item)
        except Exception as exc:  # noqa: BLE001 - a bad file is reported, not fatal
            out.append(
                {"path": name, "error": f"could not read this picture: {unreadable_reason(name, exc)}", "top": []}
            )
            continue
        x = loaded.transform(image).unsqueeze(0).to(loaded.device)
        probs = loaded.model(x).float().softmax(1)[0].cpu()
        top_p, top_i = probs.topk(min(k, len(loaded.classes)))
        out.append({"path": name, "top": [[loaded.classes[int(i)], float(p)] for p, i in zip(top_p, top_i)]})
    return out


def predict_paths(run_dir: str | Path, path: str | Path, k: int = 3, device: str = "cpu") -> list[dict]:
    loaded = load_run_model(run_dir, device=device)
    return predict_images(loaded, list_images(path, with_heic=True), k=k)


# --------------------------------------------------------------------------------------
# Reading a run's eval.json: mistakes, confusion-matrix cells, tables
# --------------------------------------------------------------------------------------


def per_class_table(eval_dict: dict) -> list[dict]:
    """One row per class: class, precision, recall, F1 and support (val images)."""
    return [
        {
            "class": c["class"],
            "precision": c["precision"],
            "recall": c["recall"],
            "f1": c["f1"],
            "support": c["support"],
        }
        for c in eval_dict.get("per_class", [])
    ]


def mistakes(eval_dict: dict, n: int = 12, wrong_only: bool = False) -> list[dict]:
    """The n validation images with the highest loss (the model was most
    surprised by their true class), highest first. With wrong_only, only
    misclassified images."""
    rows = [r for r in eval_dict.get("predictions", []) if not wrong_only or not r["correct"]]
    return sorted(rows, key=lambda r: r["loss"], reverse=True)[: max(0, int(n))]


def cell_images(eval_dict: dict, true_idx: int | str, pred_idx: int | str) -> list[dict]:
    """The validation images in one cell of the confusion matrix (row: true
    class, column: predicted class; indices or class names), most confident first.
    Each is an eval.json prediction row: path, true, predicted, confidence, loss, top."""
    classes = eval_dict.get("classes", [])

    def index(value) -> int:
        if isinstance(value, str):
            if value not in classes:
                raise ValueError(f"Unknown class {value!r}; the classes are {', '.join(classes)}.")
            return classes.index(value)
        return int(value)

    t, p = index(true_idx), index(pred_idx)
    rows = [r for r in eval_dict.get("predictions", []) if r["label"] == t and r["pred"] == p]
    return sorted(rows, key=lambda r: r["confidence"], reverse=True)


# --------------------------------------------------------------------------------------
# Batch prediction on a folder, to a CSV
# --------------------------------------------------------------------------------------

CSV_COLUMNS = ["file", "top_class", "confidence", "top_k", "error"]


@torch.no_grad()
def predict_batch(
    loaded: LoadedModel, paths, k: int = 3, batch_size: int = 32, root: str | Path | None = None, on_progress=None
) -> list[dict]:
    """Predict many image files in batches. One row per file, in order:
    {"file", "path", "top_class", "confidence", "top": [[class, p], ...], "error"}.
    "file" is the path relative to `root` when given. A file that cannot be
    read gets an error and no prediction; the rest go on.
    on_progress(done, total) is called after each batch."""
    paths = [Path(p) for p in paths]
    k = max(1, min(int(k), len(loaded.classes)))
    rows: list[dict] = []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        tensors, good = [], []
        batch_rows = []
        for path in chunk:
            try:
                name = path.relative_to(root).as_posix() if root is not None else str(path)
            except ValueError:
                name = str(path)
            row = {"file": name, "path": str(path), "top_class": None, "confidence": None, "top": [], "error": ""}
            try:
                tensors.append(loaded.transform(open_rgb(path, max_side=loaded.resize_size)))
                good.append(row)
            except Exception as exc:  # noqa: BLE001 - a bad file is reported, not fatal
                row["error"] = f"could not read this picture: {unreadable_reason(str(path), exc)}"
            batch_rows.append(row)
        if tensors:
            probs = loaded.model(torch.stack(tensors).to(loaded.device)).float().softmax(1).cpu()
            top_p, top_i = probs.topk(k, dim=1)
            for row, ps, ids in zip(good, top_p, top_i):
                row["top"] = [[loaded.classes[int(i)], float(p)] for p, i in zip(ps, ids)]
                row["top_class"], row["confidence"] = row["top"][0]
        rows.extend(batch_rows)
        if on_progress is not None:
            on_progress(min(start + batch_size, len(paths)), len(paths))
    return rows


def predictions_csv(rows: list[dict]) -> str:
    """CSV text for predict_batch rows: file, top_class, confidence, top_k
    ("bees 0.9312; ants 0.0688"), error."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        writer.writerow(
            [
                r["file"],
                r["top_class"] or "",
                "" if r["confidence"] is None else f"{r['confidence']:.4f}",
                "; ".join(f"{c} {p:.4f}" for c, p in r["top"]),
                r.get("error") or "",
            ]
        )
    return buffer.getvalue()


def predict_folder_csv(
    run_dir: str | Path, folder: str | Path, out_csv: str | Path, k: int = 3, device: str = "cpu", batch_size: int = 32
) -> Path:
    """Predict every image in `folder` (recursively) with the run's best model
    and write a CSV with one row per image (see predictions_csv). Returns the
    CSV's path."""
    from .files import atomic_write_bytes

    loaded = load_run_model(run_dir, device=device)
    folder = Path(folder)
    paths = list_images(folder, with_heic=True)
    rows = predict_batch(loaded, paths, k=k, batch_size=batch_size, root=folder if folder.is_dir() else folder.parent)
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_csv, predictions_csv(rows).encode("utf-8"))
    return out_csv
