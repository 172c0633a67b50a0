"""BatchNorm folded into the convolution before it, while training.

A BatchNorm layer that keeps its pretrained statistics (eval mode: the
`batchnorm` setting, "auto" for batches under 64 pictures, and every frozen
block) is a fixed affine map per channel. After a convolution,

    bn(conv(x, W) + c) = conv(x, W·s) + (β − μ·s + c·s),   s = γ / √(σ² + ε),

so running the convolution with weights made from W, γ and β at every
forward pass gives the same outputs and the same gradients for W, γ and β,
with one pass over the activations fewer forwards and one fewer backwards.
A training step of MobileNetV2 measured about 1.3x faster on a 2-core CPU.

Nothing about the model changes: its modules, parameters, state dict and
optimiser stay the same; only the forward of each folded pair is replaced,
and only inside `folded_for_training` (checkpoints, validation copies and
exports see the plain modules). The pairs are those of
core.conv_bn_pairs; subclasses of Conv2d (EfficientNet-Lite's "same"
padding) keep their own forward.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .conv_bn_pairs import conv_bn_pairs


def _folded_forward(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    bn = conv._folded_bn
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    weight = conv.weight * scale.reshape(-1, 1, 1, 1)
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def _passes_through(bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    return x


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (
        type(conv) is nn.Conv2d
        and type(bn) is nn.BatchNorm2d
        and conv.padding_mode == "zeros"
        and not bn.training  # its statistics are fixed: no batch statistics, no running update
        and bn.affine
        and bn.running_mean is not None
        and bn.num_features == conv.out_channels
    )


def foldable_pairs(*modules: nn.Module) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    """Every (conv, bn) pair of `modules` that can be folded now (see the module)."""
    pairs = [(parent._modules[c], parent._modules[b]) for m in modules for parent, c, b in conv_bn_pairs(m)]
    return [(conv, bn) for conv, bn in pairs if _foldable(conv, bn)]


@contextlib.contextmanager
def folded_for_training(*modules: nn.Module) -> Iterator[int]:
    """Within the block, the foldable pairs of `modules` (a model, or the
    blocks a training step runs) run folded; yields how many. The modules'
    own forwards are back on the way out, whatever happens."""
    pairs = foldable_pairs(*modules)
    try:
        for conv, bn in pairs:
            object.__setattr__(conv, "_folded_bn", bn)  # a plain attribute: not a submodule, not in the state dict
            conv.forward = types.MethodType(_folded_forward, conv)
            bn.forward = types.MethodType(_passes_through, bn)
        yield len(pairs)
    finally:
        for conv, bn in pairs:
            for module in (conv, bn):
                module.__dict__.pop("forward", None)
            conv.__dict__.pop("_folded_bn", None)
