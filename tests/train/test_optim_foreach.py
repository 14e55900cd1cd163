"""The optimizers update every tensor of a group at once (``foreach``) on the CPU too: the
same weights to the bit as torch's per-tensor loop, which is what keeps the calibrations of
earlier runs valid after the change."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from scaling_lab.train.optim import build_optimizer


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.SiLU(), nn.Conv2d(8, 4, 1))


def _train(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    torch.manual_seed(1)
    for _ in range(5):
        optimizer.zero_grad()
        model(torch.randn(2, 3, 16, 16)).square().mean().backward()
        optimizer.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("kind", ["sgd", "adam", "adamw"])
def test_foreach_updates_equal_the_per_tensor_loop_bit_for_bit(kind):
    hyp = {"lr0": 0.01, "momentum": 0.937, "weight_decay": 5e-4}
    model = _model()
    optimizer = build_optimizer(model, hyp, kind=kind, batch_size=2, nominal_batch=2)
    assert all(group["foreach"] for group in optimizer.param_groups)
    fused = _train(model, optimizer)
    model = _model()
    optimizer = build_optimizer(model, hyp, kind=kind, batch_size=2, nominal_batch=2)
    for group in optimizer.param_groups:
        group["foreach"] = False
    looped = _train(model, optimizer)
    assert all(torch.equal(a, b) for a, b in zip(fused, looped))
