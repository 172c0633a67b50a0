"""(a) The plain loop that tutorials teach, as the baseline.

This is the PyTorch transfer-learning tutorial
(https://pytorch.org/tutorials/beginner/transfer_learning_tutorial.html),
written out with its settings: torchvision's ImageFolder with the transforms
applied every epoch (RandomResizedCrop(224) and a flip for train, Resize(256)
and CenterCrop(224) for val), batch size 4, SGD with lr 0.001 and momentum
0.9, StepLR(step_size=7, gamma=0.1), a full forward pass of the whole network
over every train and val image in every epoch, and the best val epoch's
weights saved to disk and loaded at the end. Two things differ from the
tutorial's page, as the benchmark's brief asks: num_workers=0 (the page uses
4), and a seed, so both loops start from the same random state.

- "linear" is the tutorial's "ConvNet as fixed feature extractor": every
  pretrained weight frozen, a new last Linear layer trained.
- "last-N" is its fine-tuning variant, with the same blocks frozen as in
  Transfer Studio's `last-N` plan, so both train the same weights.
"""

from __future__ import annotations

import os
import tempfile
import time

import torch
import torchvision
from torch import nn, optim
from torch.optim import lr_scheduler
from torchvision import datasets, transforms

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def _replace_last_linear(model: nn.Module, num_classes: int) -> nn.Linear:
    """Put a new Linear(num_classes) where the network's last Linear was (the
    tutorial's `model.fc = nn.Linear(num_ftrs, 2)`, for any torchvision net)."""
    name, last = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
    new = nn.Linear(last.in_features, num_classes)
    setattr(parent, name.rsplit(".", 1)[-1], new)
    return new


def _freeze_like(model: nn.Module, frozen: list[torch.Tensor]) -> int:
    """Freeze the parameters of `model` that hold the same weights as `frozen`
    (Transfer Studio's frozen blocks, loaded from the same weights file): each
    tensor is matched by shape and value. Returns how many were frozen."""
    params = [p for p in model.parameters()]
    taken: set[int] = set()
    for tensor in frozen:
        for i, p in enumerate(params):
            if i not in taken and p.shape == tensor.shape and torch.equal(p.detach(), tensor):
                taken.add(i)
                p.requires_grad_(False)
                break
        else:
            raise ValueError("a frozen weight of the engine's model has no twin in the tutorial's model")
    return len(taken)


def engine_frozen_weights(backbone: str, num_classes: int, strategy: str) -> list[torch.Tensor]:
    """The weights Transfer Studio's plan for `strategy` keeps frozen."""
    from core.freeze import make_freeze_plan
    from core.models import build_model

    ours = build_model(backbone, num_classes)
    plan = make_freeze_plan(ours, strategy)
    return [p.detach() for name, on in plan.trained.items() if not on for p in ours.blocks[name].parameters()]


def build_tutorial_model(
    backbone: str, num_classes: int, strategy: str, frozen: list[torch.Tensor] | None = None
) -> nn.Module:
    """The torchvision network with its pretrained weights and a new last layer.
    "linear" freezes every pretrained weight (the tutorial's feature
    extractor); otherwise the weights in `frozen` are frozen."""
    model = torchvision.models.get_model(backbone, weights="DEFAULT")
    if strategy == "linear":
        for param in model.parameters():
            param.requires_grad = False
    else:
        _freeze_like(model, frozen or [])
    _replace_last_linear(model, num_classes)  # a new layer: it trains
    return model


def train_tutorial(
    data_dir: str,
    backbone: str,
    strategy: str,
    epochs: int,
    seed: int,
    device: torch.device,
    batch_size: int = 4,
    num_workers: int = 0,
    log=print,
) -> dict:
    """Run the tutorial's loop; returns seconds, image counts and best val accuracy.

    The clock starts before the datasets are made and stops after the best
    weights are loaded back, like Transfer Studio's run time."""
    classes = sorted(e.name for e in os.scandir(os.path.join(data_dir, "train")) if e.is_dir())
    # Which weights to freeze is worked out before the clock starts: it costs
    # the tutorial nothing in real life.
    frozen = None if strategy == "linear" else engine_frozen_weights(backbone, len(classes), strategy)
    torch.manual_seed(seed)
    started, cpu_started = time.perf_counter(), time.process_time()
    data_transforms = {
        "train": transforms.Compose(
            [
                transforms.RandomResizedCrop(224),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        ),
        "val": transforms.Compose(
            [
                transforms.Resize(256),
                transforms.CenterCrop(224),
                transforms.ToTensor(),
                transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        ),
    }
    image_datasets = {x: datasets.ImageFolder(os.path.join(data_dir, x), data_transforms[x]) for x in ["train", "val"]}
    dataloaders = {
        x: torch.utils.data.DataLoader(image_datasets[x], batch_size=batch_size, shuffle=True, num_workers=num_workers)
        for x in ["train", "val"]
    }
    dataset_sizes = {x: len(image_datasets[x]) for x in ["train", "val"]}
    class_names = image_datasets["train"].classes

    model = build_tutorial_model(backbone, len(class_names), strategy, frozen).to(device)
    criterion = nn.CrossEntropyLoss()
    # Only parameters that train go to the optimiser (the tutorial passes
    # model_conv.fc.parameters() for the feature extractor; for fine-tuning,
    # frozen parameters would get no gradient and no update anyway).
    optimizer = optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.001, momentum=0.9)
    scheduler = lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)

    with tempfile.TemporaryDirectory() as tempdir:
        best_model_params_path = os.path.join(tempdir, "best_model_params.pt")
        torch.save(model.state_dict(), best_model_params_path)
        best_acc = 0.0
        history = []
        for epoch in range(epochs):
            for phase in ["train", "val"]:
                if phase == "train":
                    model.train()
                else:
                    model.eval()
                running_loss = 0.0
                running_corrects = 0
                for inputs, labels in dataloaders[phase]:
                    inputs = inputs.to(device)
                    labels = labels.to(device)
                    optimizer.zero_grad()
                    with torch.set_grad_enabled(phase == "train"):
                        outputs = model(inputs)
                        _, preds = torch.max(outputs, 1)
                        loss = criterion(outputs, labels)
                        if phase == "train":
                            loss.backward()
                            optimizer.step()
                    running_loss += loss.item() * inputs.size(0)
                    running_corrects += torch.sum(preds == labels.data)
                if phase == "train":
                    scheduler.step()
                epoch_loss = running_loss / dataset_sizes[phase]
                epoch_acc = running_corrects.double().item() / dataset_sizes[phase]
                if phase == "val":
                    history.append(epoch_acc)
                    log(
                        f"    (a) epoch {epoch + 1}/{epochs}  val loss {epoch_loss:.4f}  acc {epoch_acc:.4f}  "
                        f"{time.perf_counter() - started:.1f}s"
                    )
                if phase == "val" and epoch_acc > best_acc:
                    best_acc = epoch_acc
                    torch.save(model.state_dict(), best_model_params_path)
        model.load_state_dict(torch.load(best_model_params_path, weights_only=True))
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "cpu_seconds": time.process_time() - cpu_started,
        "val_accuracy": best_acc,
        "train_images": dataset_sizes["train"],
        "val_images": dataset_sizes["val"],
        "history": history,
    }
