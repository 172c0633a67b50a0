"""What a training is asked to do: `TrainConfig` and its vocabularies.

This is the bottom of the engine: it imports neither torch nor any other
module of `core`. Each setting is written once, here: its name, its default,
its help text and (where it has one) its list of choices live in the field's
metadata, and the command line (`core.cli`) and the app's pages (`ui.state`)
build their options and widgets' defaults from these fields.

Field metadata keys (all optional except "help"):
- "help":    one line for a person, shown by `--help` and next to widgets;
- "choices": the allowed values (a dict value -> explanation, or a tuple);
- "cli":     False when the setting has no command-line option (set by the
             app or derived), or the option's flag when it is not the field's
             name (e.g. "--no-amp" for `mixed_precision`, which then stores
             the opposite of the flag);
- "ui":      False when the pages do not offer it as a widget;
- "limits":  (lowest, highest) a number may be, both allowed: the pages'
             widgets span it, the command line refuses a value outside it,
             and no run starts with one (`setting_problems`). None (where
             the field allows it) means "chosen for this machine".
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields

OPTIMIZERS = {
    "sgd": "SGD with momentum: the classic; steady, needs a larger learning rate (e.g. 0.01).",
    "adam": "Adam: adapts the step per weight; a safe default.",
    "adamw": "AdamW: Adam with proper weight decay; the usual choice for fine-tuning.",
    "rmsprop": "RMSprop: an older adaptive method, used to train MobileNet and EfficientNet.",
}
SCHEDULES = {
    "constant": "The learning rate stays the same.",
    "step": "The learning rate drops to a tenth every few epochs (step_epochs; by default every third of them).",
    "cosine": "The learning rate glides down to zero along a cosine curve.",
    "onecycle": "The learning rate warms up, then comes down (one-cycle policy).",
}
AUGMENT_PRESETS = {
    "none": "No augmentation: every epoch sees the same resized, centre-cropped images.",
    "light": "Random crops and left-right flips: a safe default for photos.",
    "strong": "Light, plus random colour changes and distortions: for small datasets that overfit.",
}
AUGMENT_CHOICES = {
    "auto": "Automatic: none for a linear probe (so stored features can be used), light otherwise.",
    **AUGMENT_PRESETS,
}
FUSIONS = {
    "none": "The head sees only the last stage's features (the usual transfer learning).",
    "concat": "The head sees the last few stages' pooled features side by side.",
    "weighted": "The head sums the last few stages' features with one learned weight per stage.",
    "attention": "The head weighs the last few stages anew for each picture (attention).",
}
STRATEGY_HELP = "linear | last-N (e.g. last-2) | full | gradual | discriminative"
# Each strategy in words, written once: what it does (the name a person reads
# first), its technical name (the second line), and one sentence of help. The
# pages, the sidebar, the runs list, Compare and Results all read these through
# `strategy_words`; "last-N" stands for last-1, last-2, ...
STRATEGY_WORDS: dict[str, tuple[str, str, str]] = {
    "linear": (
        "Only the new last layer learns",
        "linear probe",
        "Only the new head learns; the pretrained network is a fixed feature extractor. "
        "Fastest, and very good with few pictures.",
    ),
    "last-N": (
        "The last blocks learn too",
        "last-N fine-tune",
        "The new head and the last few pretrained blocks learn; the earlier blocks stay frozen.",
    ),
    "full": (
        "Everything learns, all at one rate",
        "full fine-tune",
        "Every block learns. Slowest; needs more pictures and a smaller learning rate.",
    ),
    "gradual": (
        "Unfreeze one block at a time",
        "gradual unfreezing",
        "Starts with only the head; one more block starts learning, from the top down, every few epochs.",
    ),
    "discriminative": (
        "Everything learns, earlier blocks more slowly",
        "discriminative learning rates",
        "Every block learns, the earlier (more general) blocks at smaller learning rates.",
    ),
    "custom": (
        "Blocks I chose myself",
        "custom freeze plan",
        "You switched blocks on or off yourself.",
    ),
}


def strategy_words(strategy: str | None) -> tuple[str, str]:
    """(what it does, technical name) for a strategy as saved in a config:
    "last-2" -> ("The last 2 blocks learn too", "last-2 fine-tune")."""
    name = str(strategy or "").strip().lower()
    head, _, n = name.partition("-")
    if head == "last" and n.isdigit():
        plain = "The last block learns too" if n == "1" else f"The last {n} blocks learn too"
        return plain, f"last-{n} fine-tune"
    if name == "last":  # the Model page's preset, before its count is chosen
        name = "last-N"
    if name in STRATEGY_WORDS:
        plain, technical, _help = STRATEGY_WORDS[name]
        return plain, technical
    return (str(strategy), "") if strategy else ("?", "")


BATCHNORM = {
    "auto": "Kept as ImageNet set it when batches hold fewer than 64 pictures (too few to measure them well).",
    "frozen": "The pretrained BatchNorm statistics stay as ImageNet set them, even in blocks that learn.",
    "train": "Blocks that learn also re-measure their BatchNorm statistics on every batch.",
}


# Adapting a trained run to new pictures (core.adapt; `python -m core adapt`,
# `train --adapt-to`, the Adapt page): the methods and the default.
ADAPT_METHODS = {
    "adabn": "Re-measure the network's internal averages on the new pictures (AdaBN). Quick; nothing is learned.",
    "self-training": (
        "Line up the new pictures' features with your pictures', then let the last layer learn from the new "
        "pictures without labels: sure, varied answers, and the answers it is already sure of."
    ),
}
DEFAULT_ADAPT_METHOD = "self-training"


def setting(default, help: str, *, choices=None, cli: bool | str = True, ui: bool = True, limits=None):
    """A dataclass field whose metadata carries what a person needs to know."""
    meta = {"help": help, "choices": choices, "cli": cli, "ui": ui, "limits": limits}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    data_dir: str = field(
        metadata={"help": "the folder of pictures, one subfolder per class", "cli": False, "ui": False}
    )
    backbone: str = setting("mobilenet_v2", "backbone name (see `python -m core backbones`)")
    init: str = setting("pretrained", "'pretrained', 'random', or a path to a weights file")
    strategy: str = setting("linear", STRATEGY_HELP)
    trained_blocks: dict | None = setting(None, "strategy 'custom': block name -> trained", cli=False, ui=False)
    unfreeze_every: int = setting(1, "gradual: epochs between unfreezing one more block", limits=(1, 10))
    lr_factor: float = setting(
        0.5, "discriminative: each earlier block's rate is this times the next one's", limits=(0.1, 1.0)
    )
    head_epochs: int = setting(
        1,
        "fine-tuning: epochs that train only the new head before the pretrained blocks join in (0 = none)",
        limits=(0, 50),
    )
    discriminative_lr: bool = setting(
        True,
        "fine-tuning: one rate for every block that learns, instead of smaller rates for earlier blocks (lr_factor)",
        cli="--no-discriminative-lr",
    )
    warmup_epochs: float = setting(
        0.5,
        "fine-tuning: epochs over which the rates climb from zero once the pretrained blocks join in",
        limits=(0.0, 20.0),
    )
    batchnorm: str = setting("auto", "BatchNorm statistics in the blocks that learn", choices=BATCHNORM)
    head_hidden: int = setting(
        0, "width of a hidden layer in the new head; 0 = a single linear layer", limits=(0, 4096)
    )
    head_dropout: float = setting(0.0, "dropout before the new head's last layer", limits=(0.0, 0.8))
    fusion: str = setting("none", "feed the head features of several stages, not only the last", choices=FUSIONS)
    fusion_stages: int = setting(
        3, "with fusion: how many of the last stages feed the head (2 or more)", limits=(2, 64)
    )
    epochs: int = setting(5, "passes over the training pictures", limits=(1, 500))
    batch_size: int | None = setting(32, "pictures per step; 0 = chosen for this machine", limits=(0, 4096))
    image_size: int | None = setting(
        None, "picture side in pixels; empty or 0 = the backbone's own size", limits=(0, 1024)
    )
    optimizer: str = setting("adamw", "how the corrections are made", choices=OPTIMIZERS)
    lr: float = setting(1e-3, "learning rate: how big each correction is", limits=(1e-7, 10.0))
    weight_decay: float = setting(1e-4, "pulls weights towards zero a little every step", limits=(0.0, 1.0))
    momentum: float = setting(0.9, "SGD and RMSprop: how much of the last step carries over", limits=(0.0, 0.99))
    schedule: str = setting("cosine", "how the learning rate changes over the epochs", choices=SCHEDULES)
    step_epochs: int = setting(
        0, "step schedule: epochs between drops to a tenth; 0 = every third of the epochs", limits=(0, 100)
    )
    augment: str = setting("auto", "random changes to the training pictures", choices=AUGMENT_CHOICES)
    # 4: last-2 on hymenoptera, 10 epochs (README, Speed): 0.961 val accuracy in 52 s, against 0.941 in 69 s with new changes each epoch.
    augment_views: int = setting(
        4,
        "with random changes and blocks frozen for the whole run: this many changed versions of each training "
        "picture go through the frozen blocks once and are stored; each epoch uses one of them "
        "(0 = new changes every epoch, which runs the frozen blocks every epoch)",
        limits=(0, 20),
    )
    progressive_resizing: float = setting(
        0.5,
        "when pictures go through the whole network every epoch (full, gradual): the share of the epochs "
        "that train on smaller pictures, from half size growing to full (0 = full size from the start)",
        limits=(0.0, 0.9),
    )
    label_smoothing: float = setting(0.0, "keeps the model from being over-sure (0.1 is typical)", limits=(0.0, 0.3))
    class_weighted: bool = setting(False, "weigh rare classes up in the loss")
    early_stopping: int = setting(0, "stop after this many epochs without a better val loss; 0 = off", limits=(0, 50))
    seed: int = setting(0, "the same seed gives the same split and the same run", limits=(0, 2**31 - 1))
    val_fraction: float = setting(
        0.2, "share of pictures kept for validation when the folder has no val/ split", limits=(0.05, 0.5)
    )
    device: str = setting("auto", "auto | cpu | cuda | cuda:N | mps")
    mixed_precision: bool = setting(True, "no mixed precision on CUDA", cli="--no-amp")
    num_workers: int | None = setting(
        None, "processes that read pictures; empty = chosen for this machine", ui=False, limits=(0, 64)
    )
    feature_cache: bool = setting(True, "run the frozen layers every epoch instead of once", cli="--no-feature-cache")
    cache_dir: str | None = setting(None, "where stored features go", cli=False, ui=False)
    batch_loss_every: int = setting(5, "record the loss every this many batches", cli=False, ui=False, limits=(1, 1000))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """A config from its dict. A run saved before a setting existed trained
        as LEGACY says, not as today's default: it resumes the same way."""
        names = {f.name for f in fields(cls)}
        return cls(**{**LEGACY, **{k: v for k, v in d.items() if k in names}})

    @property
    def resolved_augment(self) -> str:
        if self.augment != "auto":
            return self.augment
        return "none" if self.strategy == "linear" else "light"


# What a run saved before these settings existed did (no head-first epoch, one
# rate for every block, no warm-up, BatchNorm statistics re-measured, new
# random changes every epoch, full-size pictures from the start).
LEGACY = {
    "head_epochs": 0,
    "discriminative_lr": False,
    "warmup_epochs": 0.0,
    "batchnorm": "train",
    "augment_views": 0,
    "progressive_resizing": 0.0,
}


def number_text(value) -> str:
    """A setting's number as a person types it: whole numbers in full, others short (0.001, 1e-07)."""
    return str(value) if isinstance(value, int) else f"{value:g}"


def _metadata(name: str):
    """The metadata of the setting `name` (its field's)."""
    return next(f.metadata for f in fields(TrainConfig) if f.name == name)


def limits(name: str) -> tuple:
    """(lowest, highest) the setting `name` may be (its field's "limits")."""
    return _metadata(name)["limits"]


def setting_problems(config: TrainConfig) -> dict[str, str]:
    """What is wrong with `config`'s settings, in words: {setting: problem}
    for every number outside its limits (None, where the field allows it,
    means "chosen for this machine") and every word not among its choices.
    Empty when the run can start."""
    problems = {}
    for f in fields(TrainConfig):
        value, bounds, choices = getattr(config, f.name), f.metadata.get("limits"), f.metadata.get("choices")
        if bounds and value is not None:
            low, high = bounds
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                problems[f.name] = f"is {value!r}, not a number"
            elif not low <= value <= high:
                problems[f.name] = (
                    f"is {number_text(value)}; it can be {number_text(low)} to {number_text(high)} "
                    f"({f.metadata['help']})"
                )
        elif choices and value not in choices:
            problems[f.name] = f"is {value!r}; it can be {', '.join(map(str, choices))}"
    return problems


def check_settings(config: TrainConfig) -> None:
    """Raise ValueError naming every setting that is wrong (setting_problems)."""
    problems = setting_problems(config)
    if problems:
        raise ValueError("; ".join(f"{name} {text}" for name, text in problems.items()))


def defaults() -> dict:
    """Every setting's default, by name (data_dir: empty)."""
    out = {}
    for f in fields(TrainConfig):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:
            out[f.name] = f.default_factory()
        else:
            out[f.name] = ""
    return out


def help_text(name: str) -> str:
    return _metadata(name)["help"]
