"""Where a convolution feeds straight into a BatchNorm, found from the
modules' structure: BatchNorm folding needs these pairs for inference copies
(core.features) and while training (core.train_folding).

In an nn.Sequential the children run one after another. Outside one, the
pairs come from the code of the modules that hold them: torchvision's ResNet
blocks and efficientnet-lite-pytorch's MBConv block (a pair with a name
missing, an MBConv block without expansion, is skipped). torch.fx could find
the pairs through any structure, but its tracing patches nn.Module.__call__
for every thread of the process while it runs: a Playground prediction or a
Grad-CAM in the app while a training traced its validation copy failed
("module is not installed as a submodule") or came back blank.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn

_NAMED_PAIRS = {
    ("torchvision.models.resnet", "BasicBlock"): (("conv1", "bn1"), ("conv2", "bn2")),
    ("torchvision.models.resnet", "Bottleneck"): (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")),
    ("efficientnet_lite_pytorch.model", "MBConvBlock"): (
        ("_expand_conv", "_bn0"),
        ("_depthwise_conv", "_bn1"),
        ("_project_conv", "_bn2"),
    ),
}


def conv_bn_pairs(model: nn.Module) -> Iterator[tuple[nn.Module, str, str]]:
    """(parent, convolution's name, BatchNorm's name) for every Conv2d of
    `model` whose output only a BatchNorm2d reads, the parent holding both."""
    for parent in list(model.modules()):
        if isinstance(parent, nn.Sequential):
            names = list(parent._modules)
            candidates = zip(names, names[1:], strict=False)
        else:
            candidates = _NAMED_PAIRS.get((type(parent).__module__, type(parent).__name__), ())
        for conv_name, bn_name in candidates:
            conv, bn = parent._modules.get(conv_name), parent._modules.get(bn_name)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                yield parent, conv_name, bn_name
