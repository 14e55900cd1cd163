"""Parameter groups, warm-up, lr schedule and accumulation (the YOLOv7 recipe)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from scaling_lab.train.optim import (
    Schedule,
    accumulate_steps,
    build_optimizer,
    lr_factor,
    scaled_weight_decay,
    split_parameters,
)

HYP = {
    "lr0": 0.01,
    "lrf": 0.1,
    "momentum": 0.937,
    "weight_decay": 0.0005,
    "warmup_epochs": 3.0,
    "warmup_momentum": 0.8,
    "warmup_bias_lr": 0.1,
}


def test_groups_cover_every_parameter_once(tiny_graph):
    from scaling_lab import create_model

    model = create_model(tiny_graph)
    groups = split_parameters(model)
    ids = [id(p) for g in groups.values() for p in g]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = {names[id(p)] for p in groups["no_decay"]}
    decay = {names[id(p)] for p in groups["decay"]}
    bias = {names[id(p)] for p in groups["bias"]}
    assert "stem.bn.weight" in no_decay and "head.ia.0.implicit" in no_decay
    assert "head.im.1.implicit" in no_decay
    assert "stem.conv.weight" in decay and "rep3.point.0.weight" in decay
    assert "head.m.0.weight" in decay
    assert "stem.bn.bias" in bias and "head.m.0.bias" in bias
    assert all(model.get_parameter(n).dim() == 4 for n in decay)


def test_sgd_decay_only_on_weights_and_scaled_by_nominal_batch():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))
    opt = build_optimizer(model, HYP, batch_size=16, nominal_batch=64)
    by_name = {g["name"]: g for g in opt.param_groups}
    assert by_name["decay"]["weight_decay"] == pytest.approx(0.0005)  # 16 * 4 / 64
    assert by_name["no_decay"]["weight_decay"] == by_name["bias"]["weight_decay"] == 0.0
    assert opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.937
    assert accumulate_steps(16, 64) == 4 and accumulate_steps(128, 64) == 1
    assert scaled_weight_decay(0.0005, 24, 64) == pytest.approx(0.0005 * 24 * 3 / 64)


def test_cosine_and_linear_factors():
    assert lr_factor(0, 300, 0.1) == pytest.approx(1.0)
    assert lr_factor(300, 300, 0.1) == pytest.approx(0.1)
    assert lr_factor(150, 300, 0.1) == pytest.approx(0.55)
    assert lr_factor(0, 10, 0.01, "linear") == pytest.approx(1.0)
    assert lr_factor(9, 10, 0.01, "linear") == pytest.approx(0.01)
    with pytest.raises(ValueError, match="unknown lr schedule"):
        lr_factor(0, 10, 0.1, "step")


def test_warmup_ramps_lr_momentum_and_accumulation():
    sched = Schedule(HYP, epochs=10, steps_per_epoch=100, batch_size=16, warmup_min_steps=0)
    assert sched.n_warmup == 300
    assert sched.lr("decay", 0, 0) == 0.0
    assert sched.lr("bias", 0, 0) == pytest.approx(0.1)  # falls from warmup_bias_lr
    assert sched.lr("decay", 1, 150) == pytest.approx(0.5 * 0.01 * lr_factor(1, 10, 0.1))
    assert sched.momentum(0) == pytest.approx(0.8)
    assert sched.momentum(300) == pytest.approx(0.937)
    assert sched.accumulate(0) == 1 and sched.accumulate(300) == 4
    assert [sched.accumulate(s) for s in (0, 50, 100, 200)] == [1, 2, 2, 3]
    # after warm-up: lr0 * lf(epoch) for every group, full accumulation
    assert sched.lr("bias", 5, 501) == pytest.approx(0.01 * lr_factor(5, 10, 0.1))
    assert sched.accumulate(999) == 4
    # the reference warms up for at least 1000 steps
    assert Schedule(HYP, epochs=10, steps_per_epoch=100, batch_size=16).n_warmup == 1000
    assert Schedule({**HYP, "warmup_epochs": 0}, 10, 100, 16).n_warmup == 0


def test_apply_sets_group_values():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    opt = build_optimizer(model, HYP, batch_size=64)
    sched = Schedule(HYP, epochs=3, steps_per_epoch=10, batch_size=64, warmup_min_steps=0)
    sched.apply(opt, 0, 15)
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs["bias"] == pytest.approx(0.1 + (0.01 - 0.1) * 0.5)
    assert lrs["decay"] == pytest.approx(0.005)
    assert all(math.isclose(g["momentum"], 0.8685) for g in opt.param_groups)
    assert isinstance(opt, torch.optim.SGD)


@pytest.mark.parametrize("kind, cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_adam_keeps_the_groups_with_momentum_as_beta1(kind, cls):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))
    opt = build_optimizer(model, HYP, kind=kind, batch_size=16, nominal_batch=64)
    assert type(opt) is cls
    by_name = {g["name"]: g for g in opt.param_groups}
    assert by_name["decay"]["weight_decay"] == pytest.approx(0.0005)
    assert by_name["no_decay"]["weight_decay"] == by_name["bias"]["weight_decay"] == 0.0
    assert all(g["betas"] == (0.937, 0.999) and g["initial_lr"] == 0.01 for g in opt.param_groups)
    # the warm-up sets the lrs and, as the reference does, leaves Adam's beta1 alone
    Schedule(HYP, epochs=3, steps_per_epoch=10, batch_size=64, warmup_min_steps=0).apply(opt, 0, 15)
    assert by_name["decay"]["lr"] == pytest.approx(0.005)
    assert by_name["decay"]["betas"] == (0.937, 0.999)


def test_adamw_decouples_the_decay_adam_adds_it_to_the_gradient():
    # with a zero loss gradient, Adam's first step moves a decayed weight by lr (its update is
    # the sign of wd * w); AdamW's shrinks it by lr * wd only
    weight = nn.Parameter(torch.full((2, 2), 3.0))
    hyp = {**HYP, "weight_decay": 0.01}
    for kind, expected in (("adam", 3.0 - 0.01), ("adamw", 3.0 * (1 - 0.01 * 0.01))):
        model = nn.Linear(2, 2, bias=False)
        model.weight = nn.Parameter(weight.detach().clone())
        opt = build_optimizer(model, hyp, kind=kind, batch_size=64, nominal_batch=64)
        model.weight.grad = torch.zeros_like(model.weight)
        opt.step()
        assert model.weight.detach() == pytest.approx(torch.full((2, 2), expected), abs=1e-6), kind


def test_an_unknown_optimizer_is_refused():
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        build_optimizer(nn.Linear(2, 2), HYP, kind="rmsprop", batch_size=16)


@pytest.mark.parametrize("kind", ["sgd", "adam", "adamw"])
def test_fused_kernel_takes_the_same_steps_to_rounding(kind):
    """``fused=True`` picks torch's fused kernel; after a few steps its weights equal the
    default foreach step's to float rounding (not to the bit: hence a setting)."""
    torch.manual_seed(0)
    base = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 1))
    grads = [[torch.randn_like(p) for p in base.parameters()] for _ in range(3)]
    weights = {}
    for fused in (False, True):
        model = copy.deepcopy(base)
        opt = build_optimizer(model, HYP, kind=kind, batch_size=64, nominal_batch=64, fused=fused)
        assert opt.defaults["fused"] is (True if fused else None)
        assert opt.defaults["foreach"] is (None if fused else True)
        for step in grads:
            for p, g in zip(model.parameters(), step):
                p.grad = g.clone()
            opt.step()
        weights[fused] = [p.detach() for p in model.parameters()]
    for a, b in zip(weights[False], weights[True]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_fused_adam_first_step_by_hand():
    # step 1 with zero decay: m_hat = g, v_hat = g^2, so w -= lr * g / (|g| + eps)
    hyp = {**HYP, "weight_decay": 0.0}
    model = nn.Linear(3, 1, bias=False)
    start = model.weight.detach().clone()
    grad = torch.tensor([[0.5, -2.0, 1e-3]])
    opt = build_optimizer(model, hyp, kind="adam", batch_size=64, nominal_batch=64, fused=True)
    model.weight.grad = grad.clone()
    opt.step()
    expected = start - 0.01 * grad / (grad.abs() + 1e-8)
    torch.testing.assert_close(model.weight.detach(), expected, rtol=0, atol=1e-7)
