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
        "Everything learns",
        "full fine-tune",
        "Every block learns. Slowest; needs more pictures and a smaller learning rate. With the default "
        "fine-tuning settings the earlier blocks learn more gently (Advanced settings).",
    ),
    "gradual": (
        "Unfreeze one block at a time",
        "gradual unfreezing",
        "Starts with only the head; one more block starts learning, from the top down, every few epochs.",
    ),
    "discriminative": (
        "Everything learns, earlier blocks more slowly",
        "discriminative learning rates",
        "Every block learns, the earlier (more general) blocks at smaller learning rates, whatever the "
        "fine-tuning settings say.",
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
# How each method adapted, in a sentence's words ("adabn" is the code's name for it).
ADAPT_DONE = {
    "self-training": "by learning from them without their labels (self-training)",
    "adabn": "by re-measuring the network's internal averages on them (AdaBN; nothing learned)",
}


def setting(
    default,
    help: str,
    *,
    label: str | None = None,
    choices=None,
    cli: bool | str = True,
    ui: bool = True,
    limits=None,
    values: str | None = None,
):
    """A dataclass field whose metadata carries what a person needs to know:
    `label`, the setting's name on the Model page; `help`, the sentence both
    the page (its "?") and `python -m core train --help` show; `values`,
    what the command line takes where that is not a list of choices (the
    page offers them in words, so its help leaves the codes out)."""
    meta = {"label": label, "help": help, "choices": choices, "cli": cli, "ui": ui, "limits": limits, "values": values}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    data_dir: str = field(
        metadata={
            "label": "Folder with your pictures",
            "help": "the folder of pictures, one subfolder per class",
            "cli": False,
            "ui": False,
        }
    )
    backbone: str = setting(
        "mobilenet_v2",
        "The pretrained network whose knowledge is reused. Small and fast ones are best for a first try.",
        label="Network to start from",
        values="a backbone's name, as `python -m core backbones` lists them",
    )
    init: str = setting(
        "pretrained",
        "Where the network's weights start: ImageNet's, or random ones (the same training without ImageNet's "
        "knowledge, which shows what transfer learning buys).",
        label="Start from",
        values="pretrained, random, or the path of a weights file",
    )
    strategy: str = setting("linear", STRATEGY_HELP, label="What learns")
    trained_blocks: dict | None = setting(
        None, "strategy 'custom': block name -> trained", label="Blocks that learn", cli=False, ui=False
    )
    unfreeze_every: int = setting(
        1,
        "Gradual unfreezing: training starts with only the head; then, every this many epochs, the next block "
        "down starts learning.",
        label="Unfreeze one more block every … epochs",
        limits=(1, 10),
    )
    lr_factor: float = setting(
        0.5,
        "Discriminative rates: each earlier block learns this fraction of the next one's rate. 0.5 means the "
        "block below the head learns at half the head's rate, the one below that at a quarter, …",
        label="Each earlier block learns this fraction of the next one's rate",
        limits=(0.1, 1.0),
    )
    head_epochs: int = setting(
        1,
        "Fine-tuning: epochs that train only the new head before the pretrained blocks join in (0 = none).",
        label="Epochs that train only the head first",
        limits=(0, 50),
    )
    discriminative_lr: bool = setting(
        True,
        "Fine-tuning: each block learns at a fraction of the next one's rate, so the earlier, "
        "more general blocks change least.",
        label="Earlier blocks learn more gently",
        cli="--no-discriminative-lr",
    )
    warmup_epochs: float = setting(
        0.5,
        "Fine-tuning: epochs over which the rates climb from zero once the pretrained blocks join in.",
        label="Warm-up epochs",
        limits=(0.0, 20.0),
    )
    batchnorm: str = setting(
        "auto",
        "Fine-tuning: whether the blocks that learn also re-measure their BatchNorm statistics (the averages "
        "each block keeps of what it sees).",
        label="The network's internal averages (BatchNorm)",
        choices=BATCHNORM,
    )
    head_hidden: int = setting(
        0,
        "The head turns the network's features into your classes. A hidden layer of this many units adds "
        "capacity; 0 (none, one straight layer) is usually best.",
        label="Hidden layer",
        limits=(0, 4096),
    )
    head_dropout: float = setting(
        0.0,
        "Randomly hides this fraction of the features while training, against overfitting. 0 = off.",
        label="Dropout",
        limits=(0.0, 0.8),
    )
    fusion: str = setting(
        "none",
        "Feeds the head the features of several stages of the network, not only the last one's.",
        label="Features from earlier stages too (fusion)",
        choices=FUSIONS,
    )
    fusion_stages: int = setting(
        3,
        "With feature fusion: how many of the last stages feed the head (2 or more).",
        label="Stages that feed the head",
        limits=(2, 64),
    )
    epochs: int = setting(
        5,
        "One epoch = the model sees every training picture once. 5 is plenty when only the new last layer learns.",
        label="Epochs",
        limits=(1, 500),
    )
    batch_size: int | None = setting(
        32,
        "How many pictures the model looks at before each small correction. Smaller uses less memory; "
        "0 (auto) picks one for this machine.",
        label="Batch size",
        limits=(0, 4096),
    )
    image_size: int | None = setting(
        None,
        "Pictures are resized to this many pixels a side before the network sees them. Smaller is faster; "
        "empty or 0 is the network's own size.",
        label="Picture size",
        limits=(0, 1024),
    )
    optimizer: str = setting("adamw", "How the corrections are made.", label="Optimiser", choices=OPTIMIZERS)
    lr: float = setting(
        1e-3,
        "How big each correction is. Too big and training jumps around; too small and it crawls.",
        label="Learning rate",
        limits=(1e-7, 10.0),
    )
    weight_decay: float = setting(
        1e-4,
        "Gently pulls the weights towards zero every step, against overfitting.",
        label="Weight decay",
        limits=(0.0, 1.0),
    )
    momentum: float = setting(
        0.9,
        "For SGD and RMSprop: how much each step keeps going in the direction of the last ones.",
        label="Momentum",
        limits=(0.0, 0.99),
    )
    schedule: str = setting(
        "cosine", "How the learning rate changes over the epochs.", label="Learning-rate schedule", choices=SCHEDULES
    )
    step_epochs: int = setting(
        0,
        "Step schedule: epochs between drops of the learning rate to a tenth; 0 = every third of the epochs.",
        label="Epochs between drops",
        limits=(0, 100),
    )
    augment: str = setting(
        "auto",
        "Random changes to the training pictures, so the model does not just memorise them.",
        label="Augmentation",
        choices=AUGMENT_CHOICES,
    )
    # 4: last-2 on hymenoptera, 10 epochs (README, Speed): 0.961 val accuracy in 52 s, against 0.941 in 69 s with new changes each epoch.
    augment_views: int = setting(
        4,
        "With random changes and blocks frozen for the whole run: this many changed versions of each training "
        "picture go through the frozen blocks once and are stored; each epoch uses one. Much faster; 0 makes "
        "new changes every epoch, which runs the frozen blocks every epoch.",
        label="Stored versions of each picture",
        limits=(0, 20),
    )
    progressive_resizing: float = setting(
        0.5,
        "When pictures go through the whole network every epoch (everything learns, or the frozen blocks' "
        "output is not reused): the first epochs see smaller pictures (from half size, "
        "growing), which take a fraction of the time; the last ones and validation are full size. This is the "
        "share, among the epochs in which the pretrained blocks learn, on smaller pictures (head-only epochs "
        "before them use small ones too); 0 turns it off.",
        label="Share of epochs on smaller pictures",
        limits=(0.0, 0.9),
    )
    label_smoothing: float = setting(
        0.0,
        "Asks the model to be a little less than 100% sure; can help with noisy labels (0.1 is typical).",
        label="Label smoothing",
        limits=(0.0, 0.3),
    )
    class_weighted: bool = setting(
        False,
        "When some classes have far fewer pictures, count each of their mistakes more.",
        label="Weigh rare classes more",
    )
    early_stopping: int = setting(
        0,
        "Stops training when the model has not got better on the pictures kept for checking for this many "
        "epochs; 0 = never.",
        label="Stop early after … epochs without progress (0 = never)",
        limits=(0, 50),
    )
    seed: int = setting(
        0,
        "The same seed gives the same split and the same start, so runs can be compared.",
        label="Random seed",
        limits=(0, 2**31 - 1),
    )
    val_fraction: float = setting(
        0.2,
        "Only used when the folder has no train/ and val/ folders: this share of each class is set aside for "
        "validation.",
        label="Share of pictures kept for checking",
        limits=(0.05, 0.5),
    )
    device: str = setting(
        "auto",
        "Where training runs: automatic (a graphics card if there is one), or the processor.",
        label="Device",
        values="auto, cpu, cuda, cuda:N or mps",
    )
    mixed_precision: bool = setting(
        True,
        "Faster training with 16-bit numbers on a GPU. On a processor that computes them in hardware (Intel"
        " Xeon with AMX) only the frozen layers' one pass over the training pictures uses them; other"
        " processors use 32-bit numbers throughout.",
        label="Mixed precision",
        cli="--no-amp",
    )
    num_workers: int | None = setting(
        None,
        "processes that read pictures; empty = chosen for this machine",
        label="Processes that read pictures",
        ui=False,
        limits=(0, 64),
    )
    feature_cache: bool = setting(
        True,
        "Runs the frozen blocks once per picture and reuses the result: when only the new last layer learns, "
        "training takes seconds.",
        label="Reuse frozen blocks' output",
        cli="--no-feature-cache",
    )
    cache_dir: str | None = setting(
        None, "where stored features go", label="Folder for stored features", cli=False, ui=False
    )
    batch_loss_every: int = setting(
        5,
        "record the loss every this many batches",
        label="Loss recorded every … batches",
        cli=False,
        ui=False,
        limits=(1, 1000),
    )

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
        return resolve_augment(self.augment, self.strategy)


def resolve_augment(augment: str, strategy: str) -> str:
    """What "auto" augmentation means for a strategy: none for a linear probe
    (its features can then be computed once), light otherwise."""
    if augment != "auto":
        return augment
    return "none" if strategy == "linear" else "light"


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


def settings_without_effect(config: dict) -> list[str]:
    """The settings a run with `config` (a saved config.json) kept but did not
    use: gradual unfreezing's pace without gradual unfreezing, momentum with
    AdamW, the fine-tuning settings of a linear probe, ... The Runs page lists
    them apart, so a reader does not take them for part of the recipe."""
    get = {**LEGACY, **config}.get
    strategy = str(get("strategy") or "")
    linear, gradual = strategy == "linear", strategy == "gradual"
    augment = resolve_augment(get("augment"), strategy)
    unused = {
        "trained_blocks": strategy != "custom",
        "unfreeze_every": not gradual,
        "head_epochs": linear or gradual,  # gradual starts with the head alone anyway
        "discriminative_lr": linear,
        "lr_factor": linear or not (get("discriminative_lr") or strategy == "discriminative"),
        "warmup_epochs": linear,
        "batchnorm": linear,
        "step_epochs": get("schedule") != "step",
        "momentum": get("optimizer") not in ("sgd", "rmsprop"),
        "fusion_stages": get("fusion") in (None, "none"),
        # Stored versions need blocks that stay frozen all run; smaller pictures need pictures that go
        # through every block each epoch, which stored outputs (core.decisions) do not.
        "augment_views": not get("feature_cache") or augment == "none" or strategy in ("full", "discriminative"),
        "progressive_resizing": bool(get("feature_cache"))
        and (linear or strategy.startswith("last-"))
        and (augment == "none" or bool(get("augment_views"))),
    }
    return [name for name, no_effect in unused.items() if no_effect and name in config]


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


def setting_label(name: str) -> str:
    """The setting's name on the Model page (its field's "label"); its own
    name where it has none (or is not a setting of this version)."""
    meta = next((f.metadata for f in fields(TrainConfig) if f.name == name), {})
    return meta.get("label") or name
