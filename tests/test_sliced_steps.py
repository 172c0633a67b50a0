"""A training batch in slices (core.sliced_steps): the same gradients as the
whole batch, and slices only where nothing looks at the batch as a whole."""

from __future__ import annotations

import torch
from torch import nn

from core.devices import training_slice
from core.models import build_model
from core.sliced_steps import batch_total, can_slice, sliced_forward_backward, summed_twin


def _frozen_stat_model(randomness: bool = True):
    """Lite0 training, its BatchNorm keeping its statistics (batchnorm="auto"
    under 64 pictures); without `randomness`, its stochastic depth off too,
    so that a batch and its slices can be compared number for number."""
    torch.manual_seed(0)
    model = build_model("efficientnet_lite0", num_classes=3, init="random")
    model.train(randomness)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    return model


def _grads(model) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_slices_give_the_whole_batchs_loss_logits_and_gradients():
    model = _frozen_stat_model(randomness=False)
    x = torch.randn(10, 3, 64, 64)
    y = torch.tensor([0, 1, 2, 2, 1, 0, 0, 2, 1, 2])
    # Class weights and label smoothing: the slices must divide by the batch's total weight.
    criterion = nn.CrossEntropyLoss(weight=torch.tensor([0.5, 1.0, 2.0]), label_smoothing=0.1)

    model.zero_grad(set_to_none=True)
    whole_logits = model(x)
    whole_loss = criterion(whole_logits, y)
    whole_loss.backward()
    whole = _grads(model)

    model.zero_grad(set_to_none=True)
    loss, logits = sliced_forward_backward(
        model, summed_twin(criterion), batch_total(criterion, y), x, y, 4, lambda part: part.backward()
    )
    sliced = _grads(model)

    torch.testing.assert_close(loss, whole_loss.detach())
    torch.testing.assert_close(logits, whole_logits.detach())
    assert sliced.keys() == whole.keys() and len(whole) > 100
    scale = max(grad.abs().max() for grad in whole.values())  # random weights: some gradients vanish
    for name, grad in whole.items():
        torch.testing.assert_close(sliced[name], grad, rtol=1e-4, atol=1e-6 * scale, msg=name)


def test_batches_are_sliced_only_with_fixed_batchnorm_statistics_and_one_process():
    model = _frozen_stat_model()
    blocks = list(model.blocks.values())
    assert can_slice(blocks, processes=1)
    assert not can_slice(blocks, processes=2)  # DDP would average the gradients after every slice
    model.blocks["final_conv"].train()  # a block whose BatchNorm learns from the batch's statistics
    assert not can_slice(blocks, processes=1)
    assert can_slice(blocks[:-3], processes=1)  # the blocks a step runs: not that one
    assert training_slice(torch.device("cpu")) == 8
