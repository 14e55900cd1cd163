"""ModelEMA: the ramped decay and the averaged weights, against values computed by hand."""

import math

import pytest
import torch
from torch import nn

from scaling_lab import create_model
from scaling_lab.nn.reparam import reparameterize
from scaling_lab.train import ModelEMA


def _toy() -> nn.Sequential:
    """One weight, one bias, BatchNorm buffers (float running stats, integer counter)."""
    model = nn.Sequential(nn.Linear(1, 1), nn.BatchNorm1d(1)).double()
    with torch.no_grad():
        model[0].weight.fill_(0.0)
        model[0].bias.fill_(4.0)
    return model


def _set(model: nn.Sequential, weight: float, bias: float, mean: float, batches: int) -> None:
    with torch.no_grad():
        model[0].weight.fill_(weight)
        model[0].bias.fill_(bias)
        model[1].running_mean.fill_(mean)
        model[1].num_batches_tracked.fill_(batches)


def test_default_ramp():
    ema = ModelEMA(_toy())
    assert (ema.decay, ema.tau, ema.updates) == (0.9999, 2000.0, 0)
    # 0.9999 * (1 - exp(-1/2000)) = 0.9999 * 4.99875e-4
    assert ema.decay_at(1) == pytest.approx(4.998250e-4, rel=1e-6)
    assert ema.decay_at(2000) == pytest.approx(0.9999 * (1 - 1 / math.e), rel=1e-12)
    assert ema.decay_at(100_000) == pytest.approx(0.9999, rel=1e-12)


def test_two_updates_by_hand():
    model = _toy()
    ema = ModelEMA(model, decay=0.5, tau=1.0)
    # d1 = 0.5 (1 - e^-1) = 0.316060279; d2 = 0.5 (1 - e^-2) = 0.432332358
    _set(model, weight=1.0, bias=2.0, mean=10.0, batches=7)
    ema.update(model)
    # w = 0.316060279 * 0 + 0.683939721 * 1; b = 0.316060279 * 4 + 0.683939721 * 2
    averaged = ema.module
    assert averaged[0].weight.item() == pytest.approx(0.683939721, abs=1e-9)
    assert averaged[0].bias.item() == pytest.approx(2.632120559, abs=1e-9)
    assert averaged[1].running_mean.item() == pytest.approx(6.83939721, abs=1e-8)
    assert averaged[1].running_var.item() == pytest.approx(1.0)  # 1 on both sides
    assert averaged[1].num_batches_tracked.item() == 7  # integers are copied
    _set(model, weight=3.0, bias=2.0, mean=0.0, batches=9)
    ema.update(model)
    # w = 0.432332358 * 0.683939721 + 0.567667642 * 3 = 0.295689 + 1.703003 = 1.99869220
    assert ema.updates == 2
    assert averaged[0].weight.item() == pytest.approx(1.99869220, abs=1e-8)
    # b = 0.432332358 * 2.632120559 + 0.567667642 * 2 = 1.137951 + 1.135335 = 2.27328617
    assert averaged[0].bias.item() == pytest.approx(2.27328617, abs=1e-8)
    assert averaged[1].num_batches_tracked.item() == 9


def test_average_is_a_frozen_eval_copy():
    model = _toy().train()
    ema = ModelEMA(model)
    assert not ema.module.training and model.training
    assert all(not p.requires_grad for p in ema.module.parameters())
    assert all(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        model[0].weight.fill_(5.0)  # no update yet: the copy is independent
    assert ema.module[0].weight.item() == 0.0


def test_checkpoint_round_trip_resumes_the_ramp():
    model = _toy()
    ema = ModelEMA(model, decay=0.9, tau=3.0)
    for step in range(3):
        _set(model, weight=float(step), bias=1.0, mean=0.5, batches=step)
        ema.update(model)
    state = ema.state_dict()
    restored = ModelEMA(_toy())
    restored.load_state_dict(state)
    assert (restored.updates, restored.decay, restored.tau) == (3, 0.9, 3.0)
    _set(model, weight=7.0, bias=1.0, mean=0.5, batches=3)
    ema.update(model)
    restored.update(model)
    for (k, a), b in zip(ema.module.state_dict().items(), restored.module.state_dict().values()):
        assert torch.equal(a, b), k


def test_parallel_wrapper_is_unwrapped():
    model = _toy()
    ema = ModelEMA(nn.DataParallel(model), decay=0.5, tau=1.0)
    _set(model, weight=1.0, bias=4.0, mean=0.0, batches=1)
    ema.update(nn.DataParallel(model))
    assert ema.module[0].weight.item() == pytest.approx(0.683939721, abs=1e-9)


def test_mismatched_model_is_refused():
    ema = ModelEMA(_toy())
    with pytest.raises(KeyError, match="differ"):
        ema.update(nn.Linear(1, 1))


def test_built_model_average_keeps_layer_graph_and_fuses(tiny_graph):
    model = create_model(tiny_graph)
    ema = ModelEMA(model)
    assert ema.module.layer_graph is model.layer_graph
    ema.update(model)
    fused = reparameterize(ema.module)
    with torch.no_grad():
        x = torch.rand(1, 3, 64, 64)
        torch.testing.assert_close(fused(x), ema.module(x), rtol=1e-4, atol=1e-3)


def test_foreach_update_equals_the_per_tensor_formula(tiny_graph):
    """The batched update gives the bits of ``avg.mul_(d).add_(new, alpha=1 - d)`` per tensor,
    on a built model whose weights and BatchNorm statistics move between updates."""
    torch.manual_seed(0)
    model = create_model(tiny_graph)
    ema = ModelEMA(model, decay=0.9, tau=2.0)
    expected = {k: v.clone() for k, v in ema.module.state_dict().items()}
    for step in range(1, 4):
        with torch.no_grad():
            for tensor in model.state_dict().values():
                if tensor.is_floating_point():
                    tensor.add_(torch.randn_like(tensor))
                else:
                    tensor.add_(step)
        ema.update(model)
        d = ema.decay_at(step)
        for name, new in model.state_dict().items():
            if new.is_floating_point():
                expected[name].mul_(d).add_(new, alpha=1.0 - d)
            else:
                expected[name].copy_(new)
        for name, avg in ema.module.state_dict().items():
            assert torch.equal(avg, expected[name]), (step, name)


def test_update_follows_tensors_replaced_in_the_model():
    """The matched tensors are cached; a parameter given new storage (as ``.to()`` does), a
    parameter or a buffer replaced by another tensor is picked up, not the stale one."""
    model = _toy()
    ema = ModelEMA(model, decay=0.5, tau=1.0)
    ema.update(model)  # builds the cache; w = 0, b = 4, mean = 0
    model[0].weight.data = torch.full((1, 1), 1.0, dtype=torch.float64)
    model[0].bias = nn.Parameter(torch.full((1,), 2.0, dtype=torch.float64))
    model[1].running_mean = torch.full((1,), 10.0, dtype=torch.float64)
    ema.update(model)
    # d2 = 0.5 (1 - e^-2) = 0.432332358: each = 0.432332358 * old + 0.567667642 * new
    assert ema.module[0].weight.item() == pytest.approx(0.567667642, abs=1e-9)
    assert ema.module[0].bias.item() == pytest.approx(0.432332358 * 4 + 0.567667642 * 2, abs=1e-9)
    assert ema.module[1].running_mean.item() == pytest.approx(5.67667642, abs=1e-8)
