"""Domain adaptation: a trained run meets pictures of another kind (darker,
another camera, another school) and adapts to them without their labels.

Two methods, each giving an adapted model in the run folder (`adapted.pt`,
with `adapt.json`: source and target accuracy before and after, side by side):

- "adabn": re-estimate every BatchNorm layer's statistics on the new pictures
  (AdaBN, Li et al. 2016). Nothing is learned; often not enough on a strong shift.
- "tent": AdaBN, then learn the BatchNorm layers' scales and shifts on the new
  pictures for a few passes: predictions that are confident (TENT's entropy
  minimisation, Wang et al. 2021) but not all the same class (SHOT's
  diversity term, Liang et al. 2020), plus self-training on the pictures the
  model is already sure of (pseudo-labels). Then AdaBN once more.

The source accuracy is on the run's own validation pictures; the target
accuracy on labelled target pictures when there are any (`labelled_dir`, or
class subfolders of the target folder named like the run's classes: their
names are only used to score, never to adapt).

No Streamlit here: `python -m core adapt`, `train --adapt-to` and the Results
page call `adapt_run`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .errors import UserError
from .evaluation import list_images, load_run_model
from .files import atomic_torch_save
from .loading import BatchNormalizer, ImageDataset, threaded_batches
from .runs import open_run
from .scan_report import ScanReport

METHODS = {
    "adabn": "Re-measure the network's internal averages on the new pictures (AdaBN). Quick; nothing is learned.",
    "tent": (
        "AdaBN, then a few passes that tune the network's normalisation layers on the new pictures "
        "so its answers become sure and varied (TENT), learning from the answers it is already sure of."
    ),
}
DEFAULT_METHOD = "tent"
MAX_TARGET_PICTURES = 1000  # decoded once and kept in memory as uint8
ADAPTED_FILE = "adapted.pt"
RECORD_FILE = "adapt.json"


# --- pictures ---------------------------------------------------------------------------


def _labelled_samples(folder: Path, classes: list[str]) -> list[tuple[str, int]]:
    """(path, label) for the pictures in `folder`'s subfolders named like the classes."""
    samples = []
    for label, name in enumerate(classes):
        sub = folder / name
        if sub.is_dir():
            samples += [(str(p), label) for p in list_images(sub)]
    return samples


def _decode(samples: list[tuple[str, int]], transform, max_side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every readable picture as uint8 (pictures, 3, H, W), and its label."""
    images, labels = [], []
    for x, y, _idx, _bad in threaded_batches(ImageDataset(samples, transform, max_side=max_side), 64, threads=2):
        if len(y):
            images.append(x)
            labels.append(y)
    if not images:
        return torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.long)
    return torch.cat(images), torch.cat(labels)


def _batches(n: int, size: int, generator: torch.Generator | None = None):
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, n, size):
        yield order[start : start + size]


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, normalize, batch: int = 64) -> float | None:
    """Share of `images` the model (in eval mode) gets right; None without pictures."""
    if not len(labels):
        return None
    model.eval()
    correct = 0
    for rows in _batches(len(labels), batch):
        correct += int((model(normalize(images[rows])).argmax(1).cpu() == labels[rows]).sum())
    return correct / len(labels)


# --- the methods ------------------------------------------------------------------------


def _batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def adabn(model: nn.Module, images: torch.Tensor, normalize, batch: int = 64) -> int:
    """Re-estimate every BatchNorm layer's running mean and variance on
    `images` (a plain average over all of them). Returns the number of layers."""
    layers = _batchnorms(model)
    model.eval()
    saved = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over every batch
        m.train()
    try:
        for rows in _batches(len(images), batch):
            model(normalize(images[rows]))
    finally:
        for m, momentum in zip(layers, saved):
            m.momentum = momentum
        model.eval()
    return len(layers)


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * torch.log(p.clamp_min(1e-8))).sum(-1)


def tent(
    model: nn.Module,
    images: torch.Tensor,
    normalize,
    *,
    epochs: int = 3,
    lr: float = 1e-3,
    batch: int = 32,
    sure: float = 0.8,
    seed: int = 0,
    on_epoch: Callable[[int, int], None] | None = None,
) -> list[float]:
    """Learn the BatchNorm scales and shifts on unlabelled `images`: entropy
    down, diversity of the mean prediction up, cross-entropy on the pictures
    predicted with probability >= `sure` at the start of each pass. Returns
    the loss of each pass."""
    layers = _batchnorms(model)
    if not layers:
        raise UserError("This network has no BatchNorm layers, so TENT cannot adapt it; try another backbone.")
    model.requires_grad_(False)
    params = []
    for m in layers:
        if m.affine:
            m.weight.requires_grad_(True)
            m.bias.requires_grad_(True)
            params += [m.weight, m.bias]
    optimizer = torch.optim.Adam(params, lr=lr)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    try:
        for epoch in range(epochs):
            pseudo, confident = _pseudo_labels(model, images, normalize, sure)
            model.eval()
            for m in layers:
                m.train()  # batch statistics, as TENT does
            total, seen = 0.0, 0
            for rows in _batches(len(images), batch, generator):
                if len(rows) < 2:
                    continue
                p = model(normalize(images[rows])).softmax(1)
                loss = _entropy(p).mean() - _entropy(p.mean(0))
                keep = confident[rows]
                if keep.any():
                    loss = loss + F.nll_loss(torch.log(p[keep].clamp_min(1e-8)), pseudo[rows][keep])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss) * len(rows)
                seen += len(rows)
            losses.append(total / max(seen, 1))
            if on_epoch:
                on_epoch(epoch + 1, epochs)
    finally:
        model.requires_grad_(False)
        model.eval()
    return losses


@torch.no_grad()
def _pseudo_labels(model, images, normalize, sure: float) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    probs = torch.cat([model(normalize(images[rows])).softmax(1).cpu() for rows in _batches(len(images), 64)])
    confidence, labels = probs.max(1)
    return labels.to(_device(model)), (confidence >= sure).to(_device(model))


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


# --- a run ------------------------------------------------------------------------------


def _target_samples(target_dir: Path, limit: int) -> list[tuple[str, int]]:
    if not target_dir.is_dir():
        raise UserError(f"{target_dir} is not a folder: choose the folder of new pictures to adapt to.")
    paths = list_images(target_dir)[:limit]
    if not paths:
        raise UserError(f"{target_dir} holds no pictures (jpg, png, ...): nothing to adapt to.")
    return [(str(p), -1) for p in paths]


def _pictures(run, loaded, target_dir: Path, labelled_dir: Path | None, limit: int):
    """Decoded (target, source val, labelled target) pictures, uint8."""
    transform = loaded.model.info.transforms(loaded.config.get("image_size"), normalize=False)
    target, _ = _decode(_target_samples(target_dir, limit), transform, loaded.resize_size)
    if not len(target):
        raise UserError(f"None of the pictures in {target_dir} could be read.")
    source = _decode(ScanReport.from_dict(run.scan).val, transform, loaded.resize_size)
    labelled_folder = labelled_dir or target_dir
    labelled = _labelled_samples(labelled_folder, loaded.classes)
    if labelled_dir is not None and not labelled:
        raise UserError(
            f"{labelled_dir} has no subfolders named like this run's classes ({', '.join(loaded.classes)}), "
            "so its pictures cannot be scored."
        )
    scored = _decode(labelled[:limit], transform, loaded.resize_size) if labelled else None
    return target, source, scored


def adapt_run(
    run_dir: str | Path,
    target_dir: str | Path,
    labelled_dir: str | Path | None = None,
    *,
    method: str = DEFAULT_METHOD,
    epochs: int = 3,
    lr: float = 1e-3,
    device: str = "cpu",
    limit: int = MAX_TARGET_PICTURES,
    on_phase: Callable[[str], None] | None = None,
) -> dict:
    """Adapt a finished run's best model to the pictures in `target_dir`.
    Writes adapted.pt and adapt.json into the run folder and returns the record."""
    if method not in METHODS:
        raise UserError(f"Unknown adaptation method {method!r}; choose one of: {', '.join(METHODS)}.")
    began = time.time()
    say = on_phase or (lambda _text: None)
    run = open_run(run_dir)
    loaded = load_run_model(run.path, device=device)
    model = loaded.model
    info = model.info
    normalize = BatchNormalizer(info.mean, info.std, loaded.device)
    target_dir = Path(target_dir)
    say("Reading the pictures")
    target, (source_x, source_y), scored = _pictures(
        run, loaded, target_dir, Path(labelled_dir) if labelled_dir else None, limit
    )
    before_source = accuracy(model, source_x, source_y, normalize)
    before_target = accuracy(model, *scored, normalize) if scored else None
    say("Re-measuring the network's averages on the new pictures (AdaBN)")
    layers = adabn(model, target, normalize)
    if not layers:
        raise UserError(f"{info.title} has no BatchNorm layers, so it cannot be adapted this way.")
    adabn_target = accuracy(model, *scored, normalize) if scored else None
    losses = []
    if method == "tent":
        say("Tuning the normalisation layers on the new pictures (TENT)")
        losses = tent(model, target, normalize, epochs=epochs, lr=lr, seed=int(loaded.config.get("seed", 0)))
        adabn(model, target, normalize)
    record = {
        "method": method,
        "method_words": METHODS[method],
        "target_dir": str(target_dir.resolve()),
        "target_pictures": len(target),
        "labelled_dir": str(Path(labelled_dir).resolve())
        if labelled_dir
        else (str(target_dir.resolve()) if scored else None),
        "scored_pictures": len(scored[1]) if scored else 0,
        "source": {
            "before": before_source,
            "after": accuracy(model, source_x, source_y, normalize),
            "n": len(source_y),
        },
        "target": {
            "before": before_target,
            "adabn": adabn_target,
            "after": accuracy(model, *scored, normalize) if scored else None,
        },
        "epochs": epochs if method == "tent" else 0,
        "losses": [round(v, 4) for v in losses],
        "batchnorm_layers": layers,
        "seconds": round(time.time() - began, 1),
        "created": time.time(),
    }
    payload = {"model": model.state_dict(), "config": loaded.config, "classes": loaded.classes, "adapt": record}
    atomic_torch_save(run.path / ADAPTED_FILE, payload)
    run.write_json(RECORD_FILE, record)
    return record


def read_record(run_dir: str | Path) -> dict | None:
    """The run's adapt.json, or None when it was never adapted."""
    from .runs import read_json

    record = read_json(Path(run_dir) / RECORD_FILE, None, dict)
    return record or None
