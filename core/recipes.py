"""Recipes: one-click settings that reproduce the classic transfer-learning tutorials.

A recipe is a set of TrainConfig settings and a line on where it comes from.
It sets the whole recipe: the settings it names, and every other one back to
its default (`applied_settings`), so that a recipe applied after another
keeps nothing of the first (QA saw VGG's hidden layer and batch of 20 stay
under the fusion recipe). Only the pictures and the machine stay (KEPT).
Anything given explicitly (a command-line option, a widget changed
afterwards) still wins: `python -m core train DIR --recipe pytorch-tutorial
--epochs 5`. Every recipe names its epochs (its tutorial's). The tutorials' own choices are kept, even where
Transfer Studio's defaults differ (no head-first epoch, one rate for every
block, no warm-up, BatchNorm statistics re-measured), so that a run shows
what the tutorial gets on your pictures.

No torch here: the command line reads the recipes before it loads the engine.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import TrainConfig, defaults

# What applying a recipe leaves as it is: the pictures (the folder, and which of them are kept for checking:
# the share and the seed, so that runs of two recipes are checked on the same pictures) and the machine.
KEPT = ("data_dir", "val_fraction", "seed", "device")
KEPT_WORDS = "your folder of pictures, the share kept for checking, the random seed and the device stay"

# How the tutorials train: none of Transfer Studio's fine-tuning extras.
_PLAIN = {"head_epochs": 0, "discriminative_lr": False, "warmup_epochs": 0.0, "batchnorm": "train"}


@dataclass(frozen=True)
class Recipe:
    name: str
    title: str
    source: str  # where it comes from, in one line
    settings: dict

    def config(self, data_dir: str, **overrides) -> TrainConfig:
        """The recipe's TrainConfig for `data_dir`; `overrides` win."""
        return TrainConfig(data_dir=data_dir, **{**self.settings, **overrides})


_TUTORIAL = {
    "backbone": "resnet18",
    "optimizer": "sgd",
    "lr": 0.001,
    "momentum": 0.9,
    "weight_decay": 0.0,
    "schedule": "step",
    "step_epochs": 7,
    "epochs": 25,
    "batch_size": 4,
    "image_size": 224,
    "augment": "light",  # RandomResizedCrop(224) and a horizontal flip
    "head_hidden": 0,
    "head_dropout": 0.0,
    **_PLAIN,
}

_ALL = [
    Recipe(
        "pytorch-tutorial",
        "PyTorch tutorial: fine-tune ResNet-18",
        "PyTorch's 'Transfer Learning for Computer Vision' tutorial (pytorch.org/tutorials, S. Chilamkurthy): "
        "'Finetuning the ConvNet', every layer trained with SGD 0.001, momentum 0.9, StepLR(7, 0.1), 25 epochs.",
        {**_TUTORIAL, "strategy": "full"},
    ),
    Recipe(
        "pytorch-tutorial-fixed",
        "PyTorch tutorial: ResNet-18 as a fixed feature extractor",
        "The same PyTorch tutorial's 'ConvNet as fixed feature extractor': every pretrained layer frozen, "
        "only the new last layer trained, with the same SGD, StepLR(7, 0.1) and 25 epochs.",
        {**_TUTORIAL, "strategy": "linear"},
    ),
    Recipe(
        "keras-vgg16",
        "Keras-style VGG16 with a dense head",
        "F. Chollet, Deep Learning with Python, 5.3 'Using a pretrained convnet' (cats vs dogs, two classes): "
        "VGG16's frozen convolutional base, Dense(256) + Dropout(0.5), RMSprop 2e-5, 150-pixel pictures, "
        "augmented, batch 20, 30 epochs.",
        {
            "backbone": "vgg16",
            "strategy": "linear",
            "head_hidden": 256,
            "head_dropout": 0.5,
            "optimizer": "rmsprop",
            "lr": 2e-5,
            "momentum": 0.0,
            "weight_decay": 0.0,
            "schedule": "constant",
            "epochs": 30,
            "batch_size": 20,
            "image_size": 150,
            "augment": "strong",
            **_PLAIN,
        },
    ),
    Recipe(
        "resnet50-frozen-adam",
        "ResNet-50 frozen, a new layer trained with Adam",
        "P. Migdał, 'Keras vs. PyTorch: Alien vs. Predator recognition with transfer learning' (deepsense.ai, "
        "2018): ResNet-50 frozen, a new head (128 units, then the classes), Adam at its default rate, 224 pixels.",
        {
            "backbone": "resnet50",
            "strategy": "linear",
            "head_hidden": 128,
            "head_dropout": 0.0,
            "optimizer": "adam",
            "lr": 0.001,
            "weight_decay": 0.0,
            "schedule": "constant",
            "epochs": 3,
            "batch_size": 32,
            "image_size": 224,
            "augment": "light",
            **_PLAIN,
        },
    ),
    Recipe(
        "resnet18-full-sgd",
        "ResNet-18 fully fine-tuned with SGD and momentum",
        "Kornblith, Shlens and Le, 'Do Better ImageNet Models Transfer Better?' (CVPR 2019): every layer "
        "fine-tuned with SGD, Nesterov momentum 0.9, weight decay and a cosine decay of the rate.",
        {
            "backbone": "resnet18",
            "strategy": "full",
            "head_hidden": 0,
            "head_dropout": 0.0,
            "optimizer": "sgd",
            "lr": 0.01,
            "momentum": 0.9,
            "weight_decay": 1e-4,
            "schedule": "cosine",
            "epochs": 20,
            "batch_size": 32,
            "image_size": 224,
            "augment": "light",
            **_PLAIN,
        },
    ),
]

# ResNet-50 with the multi-layer fusion head (`fusion`, core/fusion.py).
_ALL.append(
    Recipe(
        "resnet50-fusion",
        "ResNet-50 with multi-layer feature fusion",
        "The tutorials that fuse features of several stages (e.g. hypercolumns, Hariharan et al. 2015): "
        "ResNet-50 frozen, the pooled outputs of its last stages concatenated into the new head.",
        {
            "backbone": "resnet50",
            "strategy": "linear",
            "fusion": "concat",
            "optimizer": "adam",
            "lr": 0.001,
            "schedule": "cosine",
            "epochs": 10,
            "image_size": 224,
            "augment": "none",
        },
    )
)

RECIPES: dict[str, Recipe] = {r.name: r for r in _ALL}


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"Unknown recipe '{name}'. Choose one of: {', '.join(RECIPES)}.") from None


def recipe_settings(name: str) -> dict:
    """The settings a recipe fills (a copy)."""
    return dict(get_recipe(name).settings)


def applied_settings(name: str, current: dict, base: dict | None = None) -> dict:
    """Every setting once recipe `name` is applied to the `current` ones: the
    recipe's, the KEPT ones as they are, every other one its default from
    `base` (core.config.defaults() unless given: the pages pass their widgets'
    defaults). The command line gets the same from the recipe filling its
    options' defaults (core.cli.parse_args)."""
    base = defaults() if base is None else base
    kept = {k: current[k] for k in KEPT if k in current}
    return {**{k: v for k, v in base.items() if k not in KEPT}, **kept, **get_recipe(name).settings}
