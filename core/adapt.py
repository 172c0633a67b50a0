"""Domain adaptation: a trained run meets pictures of another kind (darker,
another camera, another school) and adapts to them without their labels.

Two methods, each giving an adapted model in the run folder (`adapted.pt`,
with `adapt.json`: source and target accuracy before and after, side by side):

- "adabn": re-estimate every BatchNorm layer's statistics on the new pictures
  (AdaBN, Li et al. 2016). Nothing is learned; with a frozen backbone it can
  even hurt, since the head learned ImageNet-normalised features.
- "self-training": learns from the new pictures. Their features (what the
  head reads) are aligned to the source pictures' mean and spread (AdaBN's
  idea where the head reads, `FeatureAlign`, fitted once and then fixed),
  then the head trains on them without labels: sure answers (TENT's entropy minimisation,
  Wang et al. 2021), varied answers (SHOT's diversity term, Liang et al.
  2020) and confident pseudo-labels, with the labelled source features as an
  anchor. It runs on stored feature vectors, so it takes seconds.

The source accuracy is on the run's own validation pictures; the target
accuracy on labelled target pictures when there are any (`labelled_dir`, or
class subfolders of the target folder named like the run's classes: their
names are only used to score, never to adapt).

No Streamlit here: `python -m core adapt`, `train --adapt-to` and the Results
page call `adapt_run`.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .config import ADAPT_METHODS, DEFAULT_ADAPT_METHOD
from .devices import describe_device
from .errors import UserError
from .evaluation import list_images, load_run_model
from .files import atomic_torch_save
from .loading import BatchNormalizer, ImageDataset, threaded_batches
from .runs import open_run
from .scan_report import ScanReport

METHODS, DEFAULT_METHOD = ADAPT_METHODS, DEFAULT_ADAPT_METHOD  # named once, in core.config
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


class FeatureAlign(nn.Module):
    """Before the head: each feature of a target picture moved and scaled so
    that over the target pictures it has the mean and spread it had over the
    source (training) pictures: AdaBN's idea, on the features the head reads."""

    def __init__(self, width: int):
        super().__init__()
        self.register_buffer("scale", torch.ones(width))
        self.register_buffer("shift", torch.zeros(width))

    def fit(self, source: torch.Tensor, target: torch.Tensor) -> FeatureAlign:
        eps = 1e-3 * float(source.std(0).mean()) + 1e-8
        scale = ((source.std(0) + eps) / (target.std(0) + eps)).clamp(0.2, 5.0)
        self.scale.copy_(scale)
        self.shift.copy_(source.mean(0) - target.mean(0) * scale)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


def with_alignment(model) -> nn.Module:
    """The model with a FeatureAlign in front of its head (adapted.pt's layout)."""
    head = model.blocks["head"]
    if not (isinstance(head, nn.Sequential) and isinstance(head[0], FeatureAlign)):
        model.blocks["head"] = nn.Sequential(FeatureAlign(model.feature_dim), head)
    return model


@torch.no_grad()
def head_inputs(model, images: torch.Tensor, normalize, batch: int = 64) -> torch.Tensor:
    """What the head reads for each picture (the pooled features), frozen model in eval mode."""
    model.eval()
    k = model.block_names.index("head")
    parts = [model.forward_to(k, normalize(images[rows])).float() for rows in _batches(len(images), batch)]
    return torch.cat(parts) if parts else torch.empty(0)


def self_train(
    head: nn.Module,
    source: tuple[torch.Tensor, torch.Tensor],
    target: torch.Tensor,
    *,
    steps: int = 300,
    lr: float = 1e-3,
    sure: float = 0.9,
    seed: int = 0,
) -> list[float]:
    """Train `head` (a fitted FeatureAlign, whose scale and shift are buffers
    and stay as fitted, then the run's head, which learns) on the target
    pictures' features without their labels: answers that are sure (entropy
    down, as TENT) and varied (the mean answer's entropy up, as SHOT), plus
    cross-entropy on the pictures it is already sure of (pseudo-labels,
    refreshed every 50 steps), while the labelled source features keep it
    from forgetting the classes. Returns the loss every 50 steps."""
    torch.manual_seed(seed)
    source_x, source_y = source
    params = [p for p in head.parameters()]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=lr)
    losses = []
    pseudo = confident = None
    head.train()
    for step in range(steps):
        if step % 50 == 0:
            with torch.no_grad():
                head.eval()
                confidence, pseudo = head(target).softmax(1).max(1)
                confident = confidence >= sure
                head.train()
        p = head(target).softmax(1)
        loss = _entropy(p).mean() - _entropy(p.mean(0)) + F.cross_entropy(head(source_x), source_y)
        if confident.any():
            loss = loss + F.nll_loss(torch.log(p[confident].clamp_min(1e-8)), pseudo[confident])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 50 == 49:
            losses.append(float(loss.detach()))
    head.eval()
    head.requires_grad_(False)
    return losses


# --- a run ------------------------------------------------------------------------------


def _target_samples(target_dir: Path, limit: int) -> list[tuple[str, int]]:
    if not target_dir.is_dir():
        raise UserError(f"{target_dir} is not a folder: choose the folder of new pictures to adapt to.")
    paths = list_images(target_dir)[:limit]
    if not paths:
        raise UserError(f"{target_dir} holds no pictures (jpg, png, ...): nothing to adapt to.")
    return [(str(p), -1) for p in paths]


def _pictures(run, loaded, target_dir: Path, labelled_dir: Path | None, limit: int, need_train: bool):
    """Decoded (target, source val, source train, labelled target) pictures, uint8."""
    transform = loaded.model.info.transforms(loaded.config.get("image_size"), normalize=False)
    target, _ = _decode(_target_samples(target_dir, limit), transform, loaded.resize_size)
    if not len(target):
        raise UserError(f"None of the pictures in {target_dir} could be read.")
    report = ScanReport.from_dict(run.scan)
    source = _decode(report.val, transform, loaded.resize_size)
    train = _decode(report.train[:limit], transform, loaded.resize_size) if need_train else None
    labelled = _labelled_samples(labelled_dir or target_dir, loaded.classes)
    if labelled_dir is not None and not labelled:
        raise UserError(
            f"{labelled_dir} has no subfolders named like this run's classes ({', '.join(loaded.classes)}), "
            "so its pictures cannot be scored."
        )
    scored = _decode(labelled[:limit], transform, loaded.resize_size) if labelled else None
    return target, source, train, scored


def _self_trained(model, normalize, train, target, seed: int) -> tuple[nn.Module, list[float]]:
    """The model with an aligned, self-trained head (see self_train)."""
    source_z = head_inputs(model, train[0], normalize)
    target_z = head_inputs(model, target, normalize)
    adapted = with_alignment(copy.deepcopy(model))
    head = adapted.blocks["head"]
    head[0].fit(source_z, target_z)
    losses = self_train(head, (source_z, train[1].to(source_z.device)), target_z, seed=seed)
    return adapted, losses


def adapt_run(
    run_dir: str | Path,
    target_dir: str | Path,
    labelled_dir: str | Path | None = None,
    *,
    method: str = DEFAULT_METHOD,
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
    target, (source_x, source_y), train, scored = _pictures(
        run, loaded, target_dir, Path(labelled_dir) if labelled_dir else None, limit, method == "self-training"
    )
    before = accuracy(model, source_x, source_y, normalize), accuracy(model, *scored, normalize) if scored else None
    say("Re-measuring the network's averages on the new pictures (AdaBN)")
    normalised = copy.deepcopy(model)
    layers = adabn(normalised, target, normalize)
    adabn_target = accuracy(normalised, *scored, normalize) if scored else None
    losses = []
    if method == "adabn":
        if not layers:
            raise UserError(f"{info.title} has no BatchNorm layers, so AdaBN cannot adapt it; try self-training.")
        adapted = normalised
    else:
        say("Learning from the new pictures (self-training)")
        adapted, losses = _self_trained(model, normalize, train, target, int(loaded.config.get("seed") or 0))
    labelled = Path(labelled_dir).resolve() if labelled_dir else (target_dir.resolve() if scored else None)
    source_after = accuracy(adapted, source_x, source_y, normalize)
    record = {
        "method": method,
        "method_words": METHODS[method],
        "target_dir": str(target_dir.resolve()),
        "target_pictures": len(target),
        "labelled_dir": str(labelled) if labelled else None,
        "scored_pictures": len(scored[1]) if scored else 0,
        "source": {
            "before": before[0],
            "adabn": source_after if adapted is normalised else accuracy(normalised, source_x, source_y, normalize),
            "after": source_after,
            "n": len(source_y),
        },
        "target": {
            "before": before[1],
            "adabn": adabn_target,
            "after": accuracy(adapted, *scored, normalize) if scored else None,
        },
        "losses": [round(v, 4) for v in losses],
        "batchnorm_layers": layers,
        "seconds": round(time.time() - began, 1),
        "device": str(loaded.device),  # where it adapted (a run kept from it shows it)
        "device_name": describe_device(loaded.device)["device_name"],
        "created": time.time(),
    }
    payload = {"model": adapted.state_dict(), "config": loaded.config, "classes": loaded.classes, "adapt": record}
    atomic_torch_save(run.path / ADAPTED_FILE, payload)
    run.write_json(RECORD_FILE, record)
    return record


def read_record(run_dir: str | Path) -> dict | None:
    """The run's adapt.json, or None when it was never adapted."""
    from .runs import read_json

    record = read_json(Path(run_dir) / RECORD_FILE, None, dict)
    return record or None
