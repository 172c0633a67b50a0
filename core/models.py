"""A pretrained backbone as a `TransferModel`: named blocks plus a new head.

What lives here:

* `HeadConfig` and the new head it describes;
* `TransferModel`: the original network cut into an ordered list of named blocks
  (`stem`, `stage1`..., `pool`, `head`) so that a UI can show them, a freeze
  plan can switch them on and off, and a frozen prefix can be cached;
* `build_model`: a backbone (its spec in core.backbones says how to build and
  split it) with ImageNet weights, random weights or weights from a file.

Freeze plans live in core.freeze. No Streamlit here: the pages, the command
line and the tests all call this.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .backbones import BackboneInfo, ensure_weights, get_backbone
from .fusion import make_fusion_head, run_blocks

# --------------------------------------------------------------------------------------
# The model: named blocks and a new head
# --------------------------------------------------------------------------------------


@dataclass
class HeadConfig:
    hidden: int = 0  # 0 = a single Linear; >0 = Linear-ReLU-Dropout-Linear
    dropout: float = 0.0  # with hidden=0, applied to the features before the Linear
    fusion: str = "none"  # "none" | "concat" | "weighted" | "attention" (core.fusion)
    fusion_stages: int = 3  # with fusion: how many of the last stages feed the head

    @classmethod
    def from_settings(cls, settings: Mapping) -> HeadConfig:
        """The head a training config (a TrainConfig's dict, or a run's saved config) asks for."""
        get = lambda key, default: default if settings.get(key) is None else settings[key]  # noqa: E731
        return cls(
            hidden=int(get("head_hidden", 0)),
            dropout=float(get("head_dropout", 0.0)),
            fusion=str(get("fusion", "none")),
            fusion_stages=int(get("fusion_stages", 3)),
        )


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
        blocks = list(blocks)
        self.blocks = nn.ModuleDict(OrderedDict(blocks))
        # Fusion: the blocks whose pooled outputs feed the head (core.fusion); [] = the last only.
        self.taps: list[str] = []
        if self.head_config.fusion not in ("none", "", None):
            self.taps, _dims, head = make_fusion_head(
                blocks,
                self.head_config.fusion,
                self.head_config.fusion_stages,
                self.info.image_size,
                lambda width: _make_head(width, self.num_classes, self.head_config),
            )
            self.blocks["head"] = head
        else:
            self.blocks["head"] = _make_head(self.feature_dim, self.num_classes, self.head_config)
        # Set by build_model: how the weights were initialised, in words.
        self.init = "random"
        self.init_note = ""
        # Set by training: BatchNorm layers keep their pretrained statistics
        # even in blocks that learn (core.schedules.frozen_batchnorm).
        self.frozen_batchnorm = False

    @property
    def block_names(self) -> list[str]:
        return list(self.blocks.keys())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.taps:
            return run_blocks(list(self.blocks.items()), x, self.taps)
        for block in self.blocks.values():
            x = block(x)
        return x

    def forward_to(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """Run the first k blocks (k = len(block_names) runs everything)."""
        if self.taps:
            return run_blocks(list(self.blocks.items())[:k], x, self.taps)
        for block in list(self.blocks.values())[:k]:
            x = block(x)
        return x

    def blocks_from(self, k: int) -> list[nn.Module]:
        """The blocks from index k on: those a batch entering at block k runs through."""
        return list(self.blocks.values())[k:]

    def forward_from(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """Run the blocks from index k on, e.g. on features cached by forward_to(k, ...)."""
        if self.taps:
            return run_blocks(list(self.blocks.items())[k:], x, self.taps)
        for block in self.blocks_from(k):
            x = block(x)
        return x

    def train(self, mode: bool = True) -> TransferModel:
        """Like nn.Module.train, but fully frozen blocks stay in eval mode.

        A frozen block should behave as a fixed function: its BatchNorm layers
        keep their ImageNet running statistics (instead of drifting toward the
        small new data set) and its dropout/stochastic depth stay off. That is
        also what makes a frozen prefix safe to cache.
        """
        # One walk over the modules, not nn.Module.train's walk and then
        # another over the frozen blocks: it runs every epoch (and every
        # validation), where a warm linear probe's epochs take milliseconds.
        self.training = mode
        for child in self.children():
            if child is not self.blocks:
                child.train(mode)
        self.blocks.training = mode
        for block in self.blocks.values():
            learns = mode and any(p.requires_grad for p in block.parameters())
            block.train(learns)
            if learns and self.frozen_batchnorm:
                for module in block.modules():
                    if isinstance(module, nn.modules.batchnorm._BatchNorm):
                        module.eval()
        return self

    def block_param_counts(self) -> dict[str, int]:
        return {name: sum(p.numel() for p in block.parameters()) for name, block in self.blocks.items()}


# ---- building ------------------------------------------------------------------------


def _original_network(name: str) -> nn.Module:
    """The original ImageNet architecture with its random initialisation, as
    the backbone's spec builds it (the tests watch this one call)."""
    return get_backbone(name).build()


# From about this many weights, a network's random initialisation costs more
# than building it on the "meta" device (where every construction step goes
# through a device mode). Measured here, build and load: ViT-B/16 (86 M) 1.31 s
# plain, 0.20 s meta; ResNet-50 (25 M) 0.55 s and 0.25 s; MobileNetV2 (3.5 M)
# 0.13 s and 0.17 s, so small networks keep the plain build.
_META_BUILD_FROM_WEIGHTS = 10_000_000


def _network_to_load(info: BackboneInfo, state: Mapping[str, torch.Tensor]) -> nn.Module:
    """The original network, about to receive `state`. For a large network
    whose file holds every one of its tensors with the right shape: built on
    the "meta" device (shapes, no memory), then given empty memory, so the
    random initialisation that the file's weights replace at once is
    skipped. Otherwise (a small network, a file that leaves something out, a
    constructor that needs real tensors) the plain build, initialised as
    usual: what a file leaves out must not stay uninitialised memory."""
    if sum(t.numel() for t in state.values()) < _META_BUILD_FROM_WEIGHTS:
        return _original_network(info.name)
    try:
        with torch.device("meta"):
            skeleton = _original_network(info.name)
    except Exception:  # noqa: BLE001 - see above
        return _original_network(info.name)
    tensors = dict(skeleton.named_parameters())
    tensors.update(skeleton.named_buffers())
    if all(name in state and tuple(state[name].shape) == tuple(t.shape) for name, t in tensors.items()):
        return skeleton.to_empty(device="cpu")
    return _original_network(info.name)


# The app trains the same network again and again in one process: its
# ImageNet weights are read from disk once (load_state_dict copies them into
# the model and never changes them). Only the last file is kept, and only a
# small one, so a large network's weights do not stay in memory for good.
_KEPT_WEIGHTS_BYTES = 64 * 2**20


@functools.lru_cache(maxsize=1)
def _kept_state_dict(path: str, mtime_ns: int, size: int) -> dict[str, torch.Tensor]:
    return _read_state_dict(Path(path))


def _pretrained_state_dict(path: Path) -> dict[str, torch.Tensor]:
    stat = Path(path).stat()
    if stat.st_size > _KEPT_WEIGHTS_BYTES:
        return _read_state_dict(path)
    return _kept_state_dict(str(path), stat.st_mtime_ns, stat.st_size)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a weights file safely (weights_only) and unwrap common checkpoint layouts."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, non-torch files...
        raise ValueError(
            f"{path} could not be read as a PyTorch weights file: it is damaged or not one ({type(exc).__name__})."
        ) from exc
    # Training checkpoints often wrap the weights: {"model": ..., "optimizer": ...}.
    for key in ("model", "state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if (
        not isinstance(obj, Mapping)
        or not obj
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        raise ValueError(
            f"{path} holds no state dict (a mapping of names to tensors), so it cannot initialise a model."
        )
    state = dict(obj)
    # Models saved while wrapped in DataParallel prefix every key with "module.".
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
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
    classifier = info.classifier_prefix
    missing = [k for k in own if k not in state and not k.startswith(classifier)]
    unexpected = [k for k in state if k not in own]
    wrong_shape = [k for k in state if k in own and state[k].shape != own[k].shape and not k.startswith(classifier)]
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
        raise _mismatch_error(source, f"a {model.info.title} TransferModel", body_missing, unexpected, wrong_shape)
    head_own = {k: v for k, v in own.items() if is_head(k)}
    head_file = {k: v for k, v in state.items() if is_head(k)}
    head_fits = head_own.keys() == head_file.keys() and all(head_file[k].shape == head_own[k].shape for k in head_own)
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

    transfer_state = None
    source = None
    if init == "pretrained":
        source = ensure_weights(info.name, progress)
        state = _pretrained_state_dict(source)
        net = _network_to_load(info, state)
        _load_original(net, state, info, source)
    elif init != "random":
        source = Path(init).expanduser()
        if not source.is_file():
            raise FileNotFoundError(f"init must be 'pretrained', 'random' or a weights file; {source} is not a file.")
        state = _read_state_dict(source)
        if any(k.startswith("blocks.") for k in state):
            transfer_state = state  # loaded after the split, into the TransferModel
            net = _original_network(info.name)
        else:
            net = _network_to_load(info, state)
            _load_original(net, state, info, source)
    else:
        net = _original_network(info.name)

    blocks, feature_dim = info.split(net)
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
