"""Multi-layer feature fusion: a head fed by the pooled outputs of the last K
stages of the backbone, not only the last one.

Earlier stages see textures and simple shapes, later ones parts of objects;
pictures that look little like ImageNet often need some of both. The pooled
output of each fused stage (one vector per picture) is what the head gets:

- "concat": the vectors side by side, into one linear layer;
- "weighted": each vector projected to a common width, then summed with one
  learned weight per stage (softmax, so the weights add up to 1);
- "attention": the same projections, summed with weights the head computes
  for each picture from the projections themselves.

In a `TransferModel` with fusion (`taps`: the fused blocks' names) the `pool`
block's output is the fused stages' pooled vectors, concatenated. When every
block before the head is frozen, that vector is a fixed function of the
picture and is what the feature cache stores (a few thousand numbers per
picture). A stored prefix must stop before the first fused stage or after
`pool` (`fused_span`, used by core.freeze): anywhere between, the earlier
stages' pooled outputs would be lost.

No Streamlit here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from .errors import UserError

# The common width the stages are projected to ("weighted", "attention"), at most.
MAX_WIDTH = 512


def fused_blocks(block_names: Sequence[str], stages: int) -> list[str]:
    """The `stages` blocks just before `pool` whose outputs feed a fused head."""
    names = list(block_names)
    pool = names.index("pool")
    candidates = [n for n in names[:pool] if n not in ("stem", "patch_embed")]
    if not 2 <= int(stages) <= len(candidates):
        raise UserError(
            f"Fusion takes 2 to {len(candidates)} stages of this network; {stages} were asked for. "
            "Set the number of fused stages within that range."
        )
    return candidates[-int(stages) :]


def fused_span(block_names: Sequence[str], fusion: str, stages: int) -> list[int]:
    """[index of the first fused block, index of the head]: a stored prefix of
    k blocks must have k <= the first or k >= the second ([] without fusion)."""
    if not fusion or fusion == "none":
        return []
    names = list(block_names)
    return [names.index(fused_blocks(names, stages)[0]), names.index("head")]


def pool_stage(x: torch.Tensor) -> torch.Tensor:
    """One vector per picture from a stage's output: the mean of a feature map,
    the class token of a sequence of tokens, a vector as it is."""
    if x.dim() == 4:
        return x.float().mean((2, 3))
    if x.dim() == 3:
        return x[:, 0].float()
    return x.flatten(1).float()


def run_blocks(named: Sequence[tuple[str, nn.Module]], x: torch.Tensor, taps: Sequence[str]) -> torch.Tensor:
    """Run named blocks in order, collecting the pooled output of each fused
    block; at `pool`, the collected vectors side by side replace the map."""
    pooled: list[torch.Tensor] = []
    for name, block in named:
        if name == "pool":
            if len(pooled) != len(taps):
                raise ValueError(f"Fusion needs the outputs of {list(taps)}; this span starts after some of them.")
            x = torch.cat(pooled, 1)
            pooled = []
            continue
        x = block(x)
        if name in taps:
            pooled.append(pool_stage(x))
    if pooled:
        raise ValueError(f"Fusion needs the span to reach 'pool' once it has run a fused block ({list(taps)}).")
    return x


class TappedBlocks(nn.Module):
    """A span of a fused model's blocks as one module (run_blocks), e.g. the
    BatchNorm-folded copy of a frozen prefix that the feature pass runs."""

    def __init__(self, named: Sequence[tuple[str, nn.Module]], taps: Sequence[str]):
        super().__init__()
        self.names = [name for name, _ in named]
        self.parts = nn.ModuleList([block for _, block in named])
        self.taps = list(taps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_blocks(list(zip(self.names, self.parts)), x, self.taps)


@torch.no_grad()
def stage_dims(named: Sequence[tuple[str, nn.Module]], taps: Sequence[str], image_size: int) -> list[int]:
    """Each fused block's pooled width, from one small pass (eval mode, so
    nothing about the blocks changes)."""
    modes = {name: block.training for name, block in named}
    for _, block in named:
        block.eval()
    try:
        x = torch.zeros(1, 3, image_size, image_size)
        dims = []
        for name, block in named:
            if name == "pool":
                break
            x = block(x)
            if name in taps:
                dims.append(int(pool_stage(x).shape[1]))
        return dims
    finally:
        for name, block in named:
            block.train(modes[name])


def fused_width(dims: Sequence[int], mode: str) -> int:
    """The width of what the fused head's classifier gets."""
    return sum(dims) if mode == "concat" else min(max(dims), MAX_WIDTH)


class FusionHead(nn.Module):
    """The new head of a fused model: its input is the fused stages' pooled
    vectors side by side (widths `dims`); `classifier` maps the fused vector
    (fused_width wide) to the classes."""

    def __init__(self, dims: Sequence[int], mode: str, classifier: nn.Module):
        super().__init__()
        if mode not in ("concat", "weighted", "attention"):
            raise ValueError(f"Unknown fusion {mode!r}: concat, weighted or attention.")
        self.dims = [int(d) for d in dims]
        self.mode = mode
        width = fused_width(self.dims, mode)
        # Stages differ a lot in scale: each is normalised before it is fused.
        self.norms = nn.ModuleList([nn.LayerNorm(d) for d in self.dims])
        self.project = nn.ModuleList([] if mode == "concat" else [nn.Linear(d, width) for d in self.dims])
        self.stage_logits = nn.Parameter(torch.zeros(len(self.dims))) if mode == "weighted" else None
        self.score = nn.Linear(width, 1) if mode == "attention" else None
        self.classifier = classifier

    def _stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        parts = torch.split(x.float(), self.dims, dim=1)
        return [norm(part) for norm, part in zip(self.norms, parts)]

    def _projected(self, x: torch.Tensor) -> torch.Tensor:
        """(pictures, stages, width)"""
        return torch.stack([proj(part) for proj, part in zip(self.project, self._stages(x))], 1)

    def weights(self, x: torch.Tensor | None = None) -> torch.Tensor:
        """Per-stage weights: (stages,) for "weighted"; (pictures, stages) for
        "attention" (needs the inputs x)."""
        if self.mode == "weighted":
            return torch.softmax(self.stage_logits, 0)
        if self.mode == "attention":
            if x is None:
                raise ValueError("Attention weights depend on the picture: pass the inputs.")
            return torch.softmax(self.score(torch.tanh(self._projected(x))).squeeze(-1), 1)
        raise ValueError("A concatenation has no per-stage weights.")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "concat":
            return self.classifier(torch.cat(self._stages(x), 1))
        z = self._projected(x)
        if self.mode == "weighted":
            w = torch.softmax(self.stage_logits, 0).view(1, -1, 1)
        else:
            w = torch.softmax(self.score(torch.tanh(z)), 1)  # (pictures, stages, 1)
        return self.classifier((w * z).sum(1))


def make_fusion_head(
    named: Sequence[tuple[str, nn.Module]],
    mode: str,
    stages: int,
    image_size: int,
    make_classifier: Callable[[int], nn.Module],
) -> tuple[list[str], list[int], FusionHead]:
    """(taps, dims, head) for a model made of the `named` blocks."""
    taps = fused_blocks([name for name, _ in named] + ["head"], stages)
    dims = stage_dims(named, taps, image_size)
    return taps, dims, FusionHead(dims, mode, make_classifier(fused_width(dims, mode)))


def stage_weights(model, features: torch.Tensor | None = None) -> dict | None:
    """What fusion.json holds: the fused stages and each one's learned weight
    (attention: the mean over `features`, the stored inputs of the head, e.g.
    the validation pictures'). None for a model without weights per stage."""
    head = model.blocks["head"]
    if not isinstance(head, FusionHead) or head.mode == "concat":
        return None
    with torch.no_grad():
        if head.mode == "weighted":
            w = head.weights()
        else:
            if features is None or not len(features):
                return None
            w = head.weights(features.to(next(head.parameters()).device)).mean(0)
    return {
        "fusion": head.mode,
        "stages": list(model.taps),
        "dims": head.dims,
        "weights": [round(float(v), 4) for v in w.cpu()],
        "of": "learned" if head.mode == "weighted" else "mean attention over the validation pictures",
    }


@torch.no_grad()
def record_stage_weights(model, loader, start: int, run, device) -> dict | None:
    """Write fusion.json into the run folder for a weighted or attention
    fusion (the model holds the best epoch's weights). `loader`: the
    validation batches, entering the model at block `start`."""
    head = model.blocks["head"]
    if not getattr(model, "taps", None) or not isinstance(head, FusionHead) or head.mode == "concat":
        return None
    features = None
    if head.mode == "attention":
        model.eval()
        before_head = list(model.blocks.items())[start:-1]
        parts = [run_blocks(before_head, x.to(device), model.taps).float() for x, _y, _i, _bad in loader if len(x)]
        features = torch.cat(parts) if parts else None
    record = stage_weights(model, features)
    if record is not None:
        run.write_json("fusion.json", record)
    return record
