"""(c) fastai's `vision_learner(...).fine_tune(N)`, the second baseline.

fastai's one-line recipe for transfer learning, as its course teaches it:
`ImageDataLoaders.from_folder` (Resize(256) per item; `aug_transforms(size=224)`
per batch, normalised with ImageNet's statistics), `vision_learner` (the
pretrained body, fastai's head of concat-pooling, BatchNorm, dropout and two
linear layers), and `fine_tune`: one epoch with the body frozen (one-cycle),
then every layer with discriminative rates (one-cycle, body at a hundredth of
the head's rate). The same folder, backbone, weights file and number of
passes as the engine: `fine_tune(epochs - 1, freeze_epochs=1)`.

The backbone is torchvision's function with the very weights file the engine
loads (found in TORCH_HOME, so it works offline). fastai only knows its own
list of torchvision functions; for ours it is told where the body ends and
the ImageNet statistics (`model_meta`).

fastai is not one of the app's dependencies: `pip install transfer-studio[bench]`.
Pictures are read in this process (num_workers=0), as in the tutorial loop.
"""

from __future__ import annotations

import time


def available() -> bool:
    try:
        import fastai  # noqa: F401
    except ImportError:
        return False
    return True


def _engine_weights(backbone: str):
    """The torchvision weights enum whose file is the one the engine loads."""
    import torchvision

    from core.backbones import get_backbone

    wanted = get_backbone(backbone).weights_file
    for weights in torchvision.models.get_model_weights(backbone):
        if weights.url.rsplit("/", 1)[-1] == wanted:
            return weights
    raise SystemExit(f"no torchvision weights for {backbone} match the engine's file {wanted}")


def _body_end(model) -> int:
    """Index of the first child after the convolutional body (pooling or classifier)."""
    names = [name for name, _ in model.named_children()]
    return next(i for i, name in enumerate(names) if name in ("avgpool", "classifier", "fc", "heads"))


def fastai_arch(backbone: str):
    """A torchvision model function fastai's vision_learner can take, loading
    the engine's weights, registered in fastai's model_meta."""
    import torchvision
    from fastai.vision.all import imagenet_stats
    from fastai.vision.learner import default_split, model_meta

    weights = _engine_weights(backbone)

    def arch(pretrained: bool = True, **kwargs):
        return torchvision.models.get_model(backbone, weights=weights if pretrained else None)

    arch.__name__ = backbone
    model_meta[arch] = {"cut": _body_end(arch(pretrained=False)), "split": default_split, "stats": imagenet_stats}
    return arch


def train_fastai(data: str, backbone: str, epochs: int, seed: int, device, log=print) -> dict:
    """fine_tune for `epochs` passes in all (1 frozen + epochs - 1). Returns
    seconds, CPU seconds, the best epoch's val accuracy (the engine's rule),
    the last epoch's, and each epoch's."""
    from fastai.callback.core import Callback
    from fastai.learner import Recorder
    from fastai.vision.all import ImageDataLoaders, Resize, accuracy, aug_transforms, set_seed, vision_learner

    class EpochAccuracies(Callback):
        order = Recorder.order + 1  # after the Recorder has the epoch's metrics

        def __init__(self):
            self.accuracies = []

        def after_epoch(self):
            self.accuracies.append(float(self.recorder.values[-1][-1]))

    set_seed(seed, reproducible=True)
    started, cpu_started = time.perf_counter(), time.process_time()
    dls = ImageDataLoaders.from_folder(
        data,
        train="train",
        valid="val",
        item_tfms=Resize(256),
        batch_tfms=aug_transforms(size=224),
        bs=32,
        num_workers=0,
        device=device,
        seed=seed,
    )
    recorder = EpochAccuracies()
    learn = vision_learner(dls, fastai_arch(backbone), metrics=accuracy, cbs=[recorder])
    with learn.no_bar(), learn.no_logging():
        learn.fine_tune(max(epochs - 1, 0), freeze_epochs=1 if epochs > 0 else 0)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    accuracies = recorder.accuracies
    log(f"    fastai fine_tune: val accuracy per epoch {', '.join(f'{a:.3f}' for a in accuracies)}")
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "val_accuracy": max(accuracies),
        "final_val_accuracy": accuracies[-1],
        "history": accuracies,
        "train_images": len(dls.train_ds),
        "val_images": len(dls.valid_ds),
    }
