"""How each network family is cut into an ordered list of named blocks.

Each splitter takes the original network (weights already loaded) and returns
[(name, module), ...] ending with "pool", plus the size of the pooled vector.
The modules are the original ones, so the blocks compute exactly what the
original network computes up to its classifier. Which splitter a backbone uses
is written in its spec (core.backbones); the names the splitters give their
blocks are put into words for people here too (`block_title`, `block_words`),
next to the code that makes those names.

Only torch here: no weights, no files.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

# What a person reads for each block name (the Model page's picture of the
# network). Names not listed are stages: "stage3" reads "Stage 3".
BLOCK_TITLES = {
    "stem": "Stem",
    "final_conv": "Final layer",
    "pre_logits": "Pre-logits",
    "norm": "Final norm",
    "pool": "Pooling",
    "head": "New head",
    "patch_embed": "Patches",
}
# What a block sees, in words. Stages not listed are described by their order
# among the network's stages (STAGE_WORDS).
BLOCK_WORDS = {
    "stem": "edges and colours",
    "patch_embed": "cuts the picture into patches",
    "pool": "averages into one list of numbers",
    "head": "new: picks one of your classes",
    "final_conv": "whole-object features",
    "pre_logits": "whole-object features",
    "norm": "whole-object features",
}
# After "final_conv" (MobileNetV3), "pre_logits" would repeat its words.
PRE_LOGITS_AFTER_FINAL = "sums those features up for the head"
# The stages from the first to the last, each in its own words (every network
# here has 4 stages; with more, neighbours may share a line).
STAGE_WORDS = ["textures and simple shapes", "patterns", "small parts of objects", "larger parts of objects"]


def block_title(name: str) -> str:
    """A block's name for people: "stage3" -> "Stage 3", "pool" -> "Pooling"."""
    return BLOCK_TITLES.get(name, name.replace("stage", "Stage ").replace("_", " ").capitalize())


def block_words(name: str, block_names: list[str]) -> str:
    """What a block sees, in words, among its network's `block_names` (in
    order): no two blocks of a network read the same, so a list of them never
    says one thing twice."""
    if name == "pre_logits" and "final_conv" in block_names:
        return PRE_LOGITS_AFTER_FINAL
    if name in BLOCK_WORDS:
        return BLOCK_WORDS[name]
    stages = [n for n in block_names if n not in BLOCK_WORDS]
    if name not in stages or len(stages) == 1:
        return STAGE_WORDS[0]
    last = len(STAGE_WORDS) - 1
    return STAGE_WORDS[round(stages.index(name) * last / (len(stages) - 1))]


# --------------------------------------------------------------------------------------
# Splitters
# --------------------------------------------------------------------------------------


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


def split_resnet(net) -> tuple[list[tuple[str, nn.Module]], int]:
    stem = nn.Sequential(OrderedDict(conv1=net.conv1, bn1=net.bn1, relu=net.relu, maxpool=net.maxpool))
    blocks = [("stem", stem)]
    blocks += [(f"stage{i}", getattr(net, f"layer{i}")) for i in range(1, 5)]
    blocks.append(("pool", _pool()))
    return blocks, net.fc.in_features


def split_mobilenet_v2_or_efficientnet(net) -> tuple[list[tuple[str, nn.Module]], int]:
    # features[-1] is the final 1x1 conv to 1280 channels; the rest are stages.
    layers = list(net.features)
    blocks = _group_by_stride(layers[:-1])
    blocks.append(("final_conv", layers[-1]))
    blocks.append(("pool", _pool()))
    return blocks, net.classifier[-1].in_features


def split_mobilenet_v3(net) -> tuple[list[tuple[str, nn.Module]], int]:
    layers = list(net.features)
    blocks = _group_by_stride(layers[:-1])
    blocks.append(("final_conv", layers[-1]))
    # MobileNetV3's classifier starts with a pretrained Linear+Hardswish(+Dropout)
    # that is part of what ImageNet taught it, so it stays, after the pooling.
    pre_logits = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), *list(net.classifier)[:-1])
    blocks.append(("pre_logits", pre_logits))
    blocks.append(("pool", nn.Identity()))  # already one vector per image
    return blocks, net.classifier[-1].in_features


def split_convnext(net) -> tuple[list[tuple[str, nn.Module]], int]:
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


def split_vgg(net) -> tuple[list[tuple[str, nn.Module]], int]:
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


def split_vit(net) -> tuple[list[tuple[str, nn.Module]], int]:
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


def split_efficientnet_lite(net) -> tuple[list[tuple[str, nn.Module]], int]:
    stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6())
    rate = net._global_params.drop_connect_rate or 0.0
    n = len(net._blocks)
    layers = [stem] + [_LiteBlock(block, rate * i / n) for i, block in enumerate(net._blocks)]
    blocks = _group_by_stride(layers)
    blocks.append(("final_conv", nn.Sequential(net._conv_head, net._bn1, nn.ReLU6())))
    blocks.append(("pool", _pool()))
    return blocks, net._fc.in_features
