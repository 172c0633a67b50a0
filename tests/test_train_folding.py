"""BatchNorm with fixed statistics folded into the convolution before it
while training (core.train_folding): the same outputs and gradients as the
plain modules, and the modules exactly as they were afterwards."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from core.train_folding import foldable_pairs, folded_for_training


def _network(name: str) -> nn.Module:
    torch.manual_seed(0)
    net = torchvision.models.get_model(name, num_classes=3).train()
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):  # fixed statistics far from 0 and 1, as pretrained ones are
            module.eval()
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return net


def _outputs_and_gradients(net: nn.Module, x: torch.Tensor):
    net.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # the same dropout mask both times
    out = net(x)
    out.square().sum().backward()
    return out.detach(), [p.grad.clone() for p in net.parameters()]


@pytest.mark.parametrize("name, pairs", [("mobilenet_v2", 52), ("resnet18", 19)])
def test_folded_training_gives_the_same_outputs_and_gradients(name, pairs):
    net = _network(name)
    x = torch.randn(4, 3, 64, 64)
    plain_out, plain_grads = _outputs_and_gradients(net, x)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with folded_for_training(net) as folded:
        out, grads = _outputs_and_gradients(net, x)
    assert folded == pairs
    torch.testing.assert_close(out, plain_out, rtol=1e-4, atol=1e-5)
    for plain, g in zip(plain_grads, grads, strict=True):
        torch.testing.assert_close(g, plain, rtol=1e-3, atol=1e-5)
    after = net.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert not any("forward" in m.__dict__ or "_folded_bn" in m.__dict__ for m in net.modules())


def test_batchnorm_that_measures_its_batches_is_not_folded_and_forwards_come_back_after_an_error():
    net = _network("mobilenet_v2")
    net.features[1].conv[0][1].train()  # this one re-measures its statistics: it must run as it is
    assert len(foldable_pairs(net)) == 51
    with pytest.raises(RuntimeError), folded_for_training(net):
        net(torch.randn(2, 3, 32, 32))
        raise RuntimeError("a batch failed")
    assert not any("forward" in m.__dict__ for m in net.modules())


def test_convolutions_with_their_own_forward_are_left_alone():
    class PaddedConv(nn.Conv2d):  # as EfficientNet-Lite's "same" padding
        def forward(self, x):
            return super().forward(nn.functional.pad(x, (1, 1, 1, 1)))

    net = nn.Sequential(PaddedConv(3, 4, 3), nn.BatchNorm2d(4).eval(), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4).eval())
    assert [type(c) for c, _ in foldable_pairs(net)] == [nn.Conv2d]
