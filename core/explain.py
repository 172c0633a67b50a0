"""Where a model looked (Grad-CAM) and how its features group the classes.

* `grad_cam(model_or_run, image)` gives a heatmap over the picture the model saw:
  which parts pushed its score for a class up. `overlay` paints it on the
  picture. It works on every backbone in the list: for the convolutional ones
  it uses the last block that still has a spatial map (the one before the
  pooling); for the Vision Transformer it uses the patch tokens that go into
  the last encoder layer, laid back out on the 14x14 grid of patches.
* `embeddings` and `project_2d` turn images into 2-D points for a teaching
  picture: the same validation images through the backbone before fine-tuning
  and after, coloured by class. `embedding_view` does both for a run.

No Streamlit here; pages, the command line and the tests call this.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .evaluation import LoadedModel, load_run_model
from .features import weights_identity
from .images import bounded_rgb, open_rgb
from .models import HeadConfig, TransferModel, build_model
from .runs import open_run

# --------------------------------------------------------------------------------------
# What to explain: a run, a LoadedModel or a bare TransferModel
# --------------------------------------------------------------------------------------


def _resolve(source) -> LoadedModel:
    """A LoadedModel for a run folder, a LoadedModel, or a bare TransferModel
    (then with the backbone's own evaluation transform and numbered classes)."""
    if isinstance(source, LoadedModel):
        return source
    if isinstance(source, TransferModel):
        info = source.info
        transform = info.transforms()
        device = next(source.parameters()).device
        classes = [str(i) for i in range(source.num_classes)]
        return LoadedModel(source, classes, transform, {"backbone": source.backbone}, info.resize_size, device)
    if isinstance(source, (str, Path)):
        return load_run_model(source)
    raise TypeError(f"Expected a run folder, a LoadedModel or a TransferModel, not {type(source).__name__}.")


def _as_image(image, max_side: int | None = None) -> Image.Image:
    if isinstance(image, Image.Image):
        return bounded_rgb(image)
    return open_rgb(image, max_side=max_side)


def model_view(source, image) -> Image.Image:
    """The picture the model actually sees: `image` resized and centre-cropped
    exactly as the run's transform does, before normalisation. A Grad-CAM
    heatmap lines up with this picture."""
    loaded = _resolve(source)
    picture = _as_image(image, loaded.resize_size)
    # The backbone's own evaluation transform, stopped before normalising: the
    # resized and cropped pixels as a uint8 (3, H, W) tensor.
    pixels = loaded.model.info.transforms(loaded.config.get("image_size"), normalize=False)(picture)
    return Image.fromarray(pixels.permute(1, 2, 0).contiguous().numpy())


# --------------------------------------------------------------------------------------
# Grad-CAM
# --------------------------------------------------------------------------------------


def _is_vit(model: TransferModel) -> bool:
    return model.info.family == "ViT"


def cam_layers(model_or_run) -> list[str]:
    """The layers Grad-CAM can use, earliest first (block names). The last one
    is the default: the most "semantic" map that still knows where things are."""
    model = _resolve(model_or_run).model if not isinstance(model_or_run, TransferModel) else model_or_run
    return model.info.cam_layers(model.block_names)


def default_cam_layer(model_or_run) -> str:
    return cam_layers(model_or_run)[-1]


def _target(model: TransferModel, layer: str) -> tuple[torch.nn.Module, str]:
    """The module to hook for `layer`, and whether its input or output is the map.

    `layer` is a block name ("final_conv", "stage4"), a module path inside the
    blocks ("stage4.1"), either with ":input" to take what goes into it. For the
    ViT's last token block, its plain name means the input of its last encoder
    layer: only the class token of that layer's output reaches the head, so the
    patch tokens of the output carry no gradient, while the tokens going into it
    are what its attention reads (the usual choice for ViT Grad-CAM).
    """
    path, _, where = str(layer).partition(":")
    where = where or "output"
    if where not in ("input", "output"):
        raise ValueError(f"Layer {layer!r}: the part after ':' must be 'input' or 'output'.")
    try:
        module = model.blocks.get_submodule(path)
    except AttributeError:
        raise ValueError(
            f"{layer!r} is not a layer of this {model.info.title}; its blocks are {', '.join(model.block_names)}."
        ) from None
    if (
        _is_vit(model)
        and ":" not in str(layer)
        and path == cam_layers(model)[-1]
        and isinstance(module, torch.nn.Sequential)
        and len(module) > 0
    ):
        return module[len(module) - 1], "input"
    return module, where


def grad_cam(
    source, image, target_class: int | str | None = None, layer: str | None = None
) -> tuple[np.ndarray, int, float]:
    """Grad-CAM for one image.

    source: a run folder, a LoadedModel (load_run_model) or a TransferModel.
    image: a PIL image or a path. target_class: an index or class name; None
    explains the predicted class. layer: see cam_layers (None: the default).

    Returns (heatmap, class index, probability of that class). The heatmap is a
    float32 array of the model's input size (e.g. 224x224) in 0..1 over the
    picture `model_view` returns: 1 where the evidence for the class is
    strongest. It is all zeros when nothing in the picture speaks for the class.
    """
    loaded = _resolve(source)
    model = loaded.model
    if isinstance(target_class, str):
        if target_class not in loaded.classes:
            raise ValueError(f"Unknown class {target_class!r}; the classes are {', '.join(loaded.classes)}.")
        target_class = loaded.classes.index(target_class)
    picture = _as_image(image, loaded.resize_size)
    x = loaded.transform(picture).unsqueeze(0).to(loaded.device)
    module, where = _target(model, layer or default_cam_layer(model))

    captured: dict[str, torch.Tensor] = {}
    me = threading.get_ident()

    def hook(_module, inputs, output):
        # A page may share one model between sessions: take only our own forward's map.
        if threading.get_ident() == me:
            captured["map"] = inputs[0] if where == "input" else output

    handle = module.register_forward_hook(hook)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            # The input asks for gradients, so the map does even when every
            # parameter is frozen; autograd.grad leaves the parameters' .grad alone.
            x.requires_grad_(True)
            logits = model(x).float()
            probs = logits.detach().softmax(1)[0]
            index = int(probs.argmax()) if target_class is None else int(target_class)
            if not 0 <= index < probs.numel():
                raise ValueError(f"target_class {index} is out of range for {probs.numel()} classes.")
            activation = captured["map"]
            (gradient,) = torch.autograd.grad(logits[0, index], activation)
    finally:
        handle.remove()
        model.train(was_training)

    cam = _cam_from(activation.detach()[0].float(), gradient[0].float())
    cam = F.interpolate(cam[None, None], size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)[0, 0]
    cam = cam - cam.min()
    peak = float(cam.max())
    cam = cam / peak if peak > 1e-12 else torch.zeros_like(cam)
    return cam.cpu().numpy().astype(np.float32), index, float(probs[index])


def _cam_from(activation: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """Grad-CAM: weight each channel by its mean gradient, sum, keep the positive part."""
    if activation.dim() == 3:  # (channels, height, width)
        weights = gradient.mean(dim=(1, 2))
        return F.relu(torch.einsum("c,chw->hw", weights, activation))
    if activation.dim() == 2:  # (tokens, width): a transformer
        tokens = activation.shape[0]
        side = math.isqrt(tokens)
        extra = tokens - side * side  # leading class (or register) tokens, dropped
        if side == 0 or extra > 8:
            raise ValueError(f"Cannot lay {tokens} tokens out on a square grid of patches.")
        activation, gradient = activation[extra:], gradient[extra:]
        weights = gradient.mean(dim=0)
        return F.relu(activation @ weights).reshape(side, side)
    raise ValueError(f"Grad-CAM needs a spatial map or tokens, got a tensor of shape {tuple(activation.shape)}.")


# A perceptual colour map (close to "turbo"): dark blue = cold, red = hot.
_TURBO = np.array(
    [
        [48, 18, 59],
        [65, 69, 171],
        [70, 117, 237],
        [57, 162, 252],
        [27, 207, 212],
        [36, 236, 166],
        [97, 252, 108],
        [164, 252, 59],
        [209, 232, 52],
        [243, 198, 58],
        [254, 155, 45],
        [243, 99, 21],
        [217, 56, 6],
        [177, 26, 1],
        [122, 4, 3],
    ],
    dtype=np.float32,
)


def colorize(heatmap: np.ndarray) -> np.ndarray:
    """0..1 heatmap -> uint8 RGB array with the colour map above."""
    h = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float32)), 0.0, 1.0)
    pos = h * (len(_TURBO) - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, len(_TURBO) - 1)
    frac = (pos - lo)[..., None]
    return (_TURBO[lo] * (1 - frac) + _TURBO[hi] * frac).round().astype(np.uint8)


def overlay(image: Image.Image, heatmap: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """The heatmap in colour over `image` (resized to the image when needed).

    For a heatmap from grad_cam, pass `model_view(...)` of the same image so the
    two line up (the model sees a centre crop)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be between 0 and 1, not {alpha}.")
    base = image.convert("RGB")
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.shape != (base.height, base.width):
        heat = np.asarray(Image.fromarray(heat, mode="F").resize(base.size, Image.BILINEAR))
    colour = Image.fromarray(colorize(heat), mode="RGB")
    return Image.blend(base, colour, alpha)


def explain_image(
    source, image, target_class: int | str | None = None, layer: str | None = None, alpha: float = 0.45
) -> dict:
    """Everything a page shows for one image: the picture the model saw, the
    heatmap, the overlay, and which class it explains with what probability."""
    loaded = _resolve(source)
    picture = _as_image(image, loaded.resize_size)
    layer = layer or default_cam_layer(loaded.model)
    heatmap, index, prob = grad_cam(loaded, picture, target_class, layer)
    view = model_view(loaded, picture)
    return {
        "view": view,
        "heatmap": heatmap,
        "overlay": overlay(view, heatmap, alpha),
        "class_index": index,
        "class_name": loaded.classes[index],
        "probability": prob,
        "layer": layer,
    }


# --------------------------------------------------------------------------------------
# Embeddings
# --------------------------------------------------------------------------------------


def _sample_paths(samples) -> list:
    out = []
    for s in samples:
        if isinstance(s, (list, tuple)):
            s = s[0]
        out.append(s)
    return out


def pretrained_model(source) -> LoadedModel:
    """The run's backbone as it was before training (its `init`: ImageNet
    weights, random, or a weights file), with the run's transform. Needs those
    weights on this machine (they are, if the run trained here)."""
    loaded = _resolve(source)
    config = loaded.config
    init = str(config.get("init", "pretrained"))
    key = (config.get("backbone") or loaded.model.backbone, init, weights_identity(init), str(loaded.device))
    with _pretrained_lock:
        model = _pretrained_cache.get(key)
        if model is None:
            # Only the blocks up to `pool` are used, so the head does not matter.
            model = build_model(key[0], len(loaded.classes), init=init, head=HeadConfig())
            model.to(loaded.device).eval().requires_grad_(False)
            _pretrained_cache.clear()  # keep one: a page showing one run at a time reuses it
            _pretrained_cache[key] = model
    return LoadedModel(model, loaded.classes, loaded.transform, config, loaded.resize_size, loaded.device)


_pretrained_cache: dict[tuple, TransferModel] = {}
_pretrained_lock = threading.Lock()


@torch.no_grad()
def embeddings(
    source, samples: Iterable, pretrained: bool = False, batch_size: int = 32, scores: bool = False
) -> np.ndarray:
    """Feature vectors (the output of the `pool` block, what the head reads) for
    `samples`: paths, (path, label) pairs or PIL images.

    source: a run folder or a LoadedModel. pretrained=True uses the backbone
    before fine-tuning (see pretrained_model), False the trained one.
    scores=True gives the head's output instead (one score per class, before
    softmax). Returns a float32 array (N, feature_dim or num_classes) aligned
    with samples; an image that cannot be read gets a row of NaN (project_2d
    keeps it as NaN)."""
    loaded = _resolve(source)
    if pretrained:
        loaded = pretrained_model(loaded)
    model = loaded.model
    was_training = model.training
    model.eval()
    upto = len(model.block_names) if scores else model.block_names.index("pool") + 1
    items = _sample_paths(samples)
    out = np.full((len(items), model.num_classes if scores else model.feature_dim), np.nan, dtype=np.float32)
    try:
        for start in range(0, len(items), batch_size):
            tensors, rows = [], []
            for i in range(start, min(start + batch_size, len(items))):
                try:
                    tensors.append(loaded.transform(_as_image(items[i], loaded.resize_size)))
                    rows.append(i)
                except Exception:  # noqa: BLE001 - an unreadable image becomes a NaN row
                    continue
            if tensors:
                feats = model.forward_to(upto, torch.stack(tensors).to(loaded.device)).float().cpu()
                out[rows] = feats.reshape(len(rows), -1).numpy()
    finally:
        model.train(was_training)
    return out


def project_2d(features: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """(N, D) features -> (N, 2) points. method "pca" (fast, deterministic) or
    "tsne" (scikit-learn's t-SNE; shows clusters, but distances between
    clusters mean little). Rows with NaN stay NaN."""
    features = np.asarray(features, dtype=np.float32)
    method = method.lower().replace("-", "")
    out = np.full((len(features), 2), np.nan, dtype=np.float32)
    ok = np.isfinite(features).all(axis=1) if features.ndim == 2 else np.zeros(len(features), bool)
    x = features[ok]
    if len(x) == 0:
        return out
    if method == "pca":
        out[ok] = _pca(x, 2)
    elif method == "tsne":
        out[ok] = _tsne(x, seed)
    else:
        raise ValueError(f"Unknown projection {method!r}; choose 'pca' or 'tsne'.")
    return out


def _pca(x: np.ndarray, k: int) -> np.ndarray:
    t = torch.from_numpy(x).double()
    t = t - t.mean(0, keepdim=True)
    if t.shape[0] < 2:
        return np.zeros((len(x), k), dtype=np.float32)
    _u, _s, vh = torch.linalg.svd(t, full_matrices=False)
    comps = vh[:k]
    # Deterministic signs: the largest loading of each component is positive.
    signs = torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True)))
    signs[signs == 0] = 1
    y = t @ (comps * signs).T
    if y.shape[1] < k:
        y = torch.cat([y, torch.zeros(y.shape[0], k - y.shape[1], dtype=y.dtype)], dim=1)
    return y.float().numpy()


def _tsne(x: np.ndarray, seed: int) -> np.ndarray:
    try:
        from sklearn.manifold import TSNE
    except ImportError as exc:  # pragma: no cover - scikit-learn is a dependency
        raise ImportError("t-SNE needs scikit-learn: `pip install scikit-learn`, or use PCA.") from exc
    n = len(x)
    if n < 4:
        return _pca(x, 2)
    reduced = _pca(x, min(50, x.shape[1], n))  # the usual first step: faster, less noise
    perplexity = float(min(30.0, max(2.0, (n - 1) / 3)))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed)
    try:
        from threadpoolctl import threadpool_limits  # installed with scikit-learn
    except ImportError:  # pragma: no cover
        return tsne.fit_transform(reduced).astype(np.float32)
    # One thread: for a few hundred points, OpenMP's threads cost far more than
    # they save (seconds instead of a fraction of one on a busy machine).
    with threadpool_limits(limits=1):
        return tsne.fit_transform(reduced).astype(np.float32)


def centroid_accuracy(points: np.ndarray, labels: Sequence[int]) -> float:
    """How well classes separate: the share of points nearer their own class's
    centre than any other's (1.0 = cleanly separated). NaN rows are ignored."""
    points = np.asarray(points, dtype=np.float64)
    labels = np.asarray(labels)
    ok = np.isfinite(points).all(axis=1)
    points, labels = points[ok], labels[ok]
    if len(points) == 0:
        return 0.0
    classes = np.unique(labels)
    centres = np.stack([points[labels == c].mean(0) for c in classes])
    nearest = classes[((points[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)]
    return float((nearest == labels).mean())


def _val_samples(run_dir, max_images: int, seed: int) -> list[tuple[str, int]]:
    """The run's validation images, at most max_images, the same share of each class."""
    val = [(str(p), int(label)) for p, label in (open_run(run_dir).scan.get("val") or [])]
    if len(val) <= max_images:
        return val
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for i, (_, label) in enumerate(val):
        by_class.setdefault(label, []).append(i)
    keep = []
    for indices in by_class.values():
        share = max(1, round(max_images * len(indices) / len(val)))
        keep += rng.choice(indices, size=min(share, len(indices)), replace=False).tolist()
    return [val[i] for i in sorted(keep)]


def embedding_view(
    run_dir, samples: Sequence[tuple[str, int]] | None = None, method: str = "pca", seed: int = 0, max_images: int = 300
) -> dict:
    """The teaching picture: val images as 2-D points, before and after fine-tuning.

    Returns {"rows": [{"model": "pretrained"|"fine-tuned", "path", "label",
    "true", "x", "y"}], "separation": {"pretrained": float, "fine-tuned": float}
    (centroid_accuracy in 2-D), "method", "after" ("features" or "scores"),
    "note"}. Each side is projected on its own (the axes of the two pictures
    are not comparable, the grouping is).

    A linear probe leaves the backbone's features exactly as they were, so
    for one the "after" side shows the trained head's scores instead: what
    training changed is how those features are read.
    """
    loaded = load_run_model(run_dir)
    samples = list(samples) if samples is not None else _val_samples(run_dir, max_images, seed)
    labels = [int(label) for _, label in samples]
    head_only = str(loaded.config.get("strategy", "")) == "linear"
    rows, separation = [], {}
    for side, is_pretrained in (("pretrained", True), ("fine-tuned", False)):
        vectors = embeddings(loaded, samples, pretrained=is_pretrained, scores=head_only and not is_pretrained)
        points = project_2d(vectors, method, seed)
        separation[side] = centroid_accuracy(points, labels)
        for (path, label), (px, py) in zip(samples, points):
            if np.isfinite(px):
                rows.append(
                    {
                        "model": side,
                        "path": str(path),
                        "label": label,
                        "true": loaded.classes[label],
                        "x": float(px),
                        "y": float(py),
                    }
                )
    note = (
        "This run trained only the new head, so the network's features did not change. The right "
        "picture shows what the head makes of them instead: its score for each class."
        if head_only
        else ""
    )
    return {
        "rows": rows,
        "separation": separation,
        "method": method,
        "after": "scores" if head_only else "features",
        "note": note,
    }
