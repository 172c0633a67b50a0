"""What a trained model gets right and wrong, and predictions with it.

`evaluate_loader` turns a model's outputs on the validation images into
accuracy, per-class precision / recall / F1, the confusion matrix and one row
per image (prediction, confidence, loss) for a gallery of mistakes.
`load_run_model` and `predict_paths` use a run's best checkpoint.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .data import IMAGE_EXTENSIONS, make_transform, open_rgb
from .models import HeadConfig, build_model
from .runs import open_run


def metrics_from_predictions(labels: list[int], preds: list[int], classes: list[str]) -> dict:
    n = len(classes)
    confusion = torch.zeros(n, n, dtype=torch.long)  # rows: true class, columns: predicted
    for t, p in zip(labels, preds):
        confusion[t, p] += 1
    per_class = []
    for i, name in enumerate(classes):
        tp = confusion[i, i].item()
        predicted = confusion[:, i].sum().item()
        actual = confusion[i, :].sum().item()
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class.append({"class": name, "precision": precision, "recall": recall, "f1": f1, "support": actual})
    total = confusion.sum().item()
    with_support = [c for c in per_class if c["support"]]
    return {
        "accuracy": confusion.diag().sum().item() / total if total else 0.0,
        "macro_f1": sum(c["f1"] for c in with_support) / len(with_support) if with_support else 0.0,
        "per_class": per_class,
        "confusion": confusion.tolist(),
        "classes": list(classes),
        "count": total,
    }


@torch.no_grad()
def evaluate_loader(model, loader, start_block: int, classes: list[str], paths: list[str],
                    device, dtype=None, channels_last: bool = False, top_k: int = 3) -> dict:
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
        logits = logits.float().cpu()
        probs = logits.softmax(1)
        losses = F.cross_entropy(logits, y, reduction="none")
        k = min(top_k, probs.shape[1])
        top_p, top_i = probs.topk(k, dim=1)
        for j in range(len(y)):
            pred = int(top_i[j, 0])
            rows.append({
                "path": paths[int(idx[j])], "label": int(y[j]), "true": classes[int(y[j])],
                "pred": pred, "predicted": classes[pred], "confidence": float(top_p[j, 0]),
                "loss": float(losses[j]), "correct": pred == int(y[j]),
                "top": [[classes[int(c)], float(p)] for p, c in zip(top_p[j], top_i[j])],
            })
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
        raise FileNotFoundError(f"The run {run.name} has no saved model yet ({path.name} is missing): it has not finished an epoch.")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    config = ckpt.get("config") or run.config
    classes = ckpt.get("classes") or run.classes
    # The architecture comes from the config; the weights from the checkpoint, so
    # no download is needed to use a trained model.
    model = build_model(config["backbone"], len(classes), init="random",
                        head=HeadConfig(hidden=config.get("head_hidden", 0), dropout=config.get("head_dropout", 0.0)))
    model.load_state_dict(ckpt["model"])
    device = torch.device(device)
    model.to(device).eval()
    info = model.info
    image_size = info.image_size if (not config.get("image_size") or info.fixed_image_size) else int(config["image_size"])
    resize_size = max(image_size, round(image_size * info.resize_size / info.image_size))
    transform = make_transform(image_size, resize_size, info.mean, info.std, augment="none", train=False)
    return LoadedModel(model, list(classes), transform, config, resize_size, device)


def list_images(path: str | Path) -> list[Path]:
    path = Path(path)
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
    if path.exists():
        return [path]
    raise FileNotFoundError(f"{path} does not exist.")


@torch.no_grad()
def predict_images(loaded: LoadedModel, images, k: int = 3) -> list[dict]:
    """Top-k for each image (a path or a PIL image). A file that cannot be read
    gets an "error" instead of predictions; the others go on."""
    out = []
    for item in images:
        name = str(item) if isinstance(item, (str, Path)) else getattr(item, "filename", "image")
        try:
            image = open_rgb(item, max_side=loaded.resize_size) if isinstance(item, (str, Path)) else item.convert("RGB")
        except Exception as exc:  # noqa: BLE001 - a bad file is reported, not fatal
            out.append({"path": name, "error": f"could not read this image ({exc.__class__.__name__})", "top": []})
            continue
        x = loaded.transform(image).unsqueeze(0).to(loaded.device)
        probs = loaded.model(x).float().softmax(1)[0].cpu()
        top_p, top_i = probs.topk(min(k, len(loaded.classes)))
        out.append({"path": name, "top": [[loaded.classes[int(i)], float(p)] for p, i in zip(top_p, top_i)]})
    return out


def predict_paths(run_dir: str | Path, path: str | Path, k: int = 3, device: str = "cpu") -> list[dict]:
    loaded = load_run_model(run_dir, device=device)
    return predict_images(loaded, list_images(path), k=k)
