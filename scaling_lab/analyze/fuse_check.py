"""Check re-parameterization numerically: training form (eval mode) vs the fused deploy model.

The training-form model gets random BatchNorm statistics and affine parameters, random
implicit knowledge and random detection biases, so that every fusion rule changes the
weights and the scores are not saturated; then it is fused and both run the same input.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scaling_lab.analyze.complexity import count_graph
from scaling_lab.graph.block_graph import BlockGraph
from scaling_lab.graph.lower import max_stride
from scaling_lab.layers.plan_repconv import Policy
from scaling_lab.models import get_block_graph, get_layer_graph
from scaling_lab.nn.fx_build import build_module
from scaling_lab.nn.reparam import reparameterize
from scaling_lab.ops import modules

REL_TOL = 1e-4  # max |fused - training| / max |training output| that passes
_MIN_SIZE = 160  # default check size: small enough for a CPU, at least 4 cells at max stride


def default_check_size(stride: int) -> int:
    """A small input size divisible by ``stride``: 160 for P5 models, 256 for P6."""
    return stride * max(math.ceil(_MIN_SIZE / stride), 4)


@torch.no_grad()
def randomize_(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """In place: BN running stats and affine params, implicit knowledge and detection biases
    drawn at random (plausible ranges), so that fusing is not checked on identities."""

    def draw(t: torch.Tensor, low: float, high: float) -> None:
        values = torch.rand(t.shape, generator=generator, dtype=torch.float64)
        t.copy_(values * (high - low) + low)

    def normal(t: torch.Tensor, mean: float, std: float) -> None:
        t.copy_(torch.randn(t.shape, generator=generator, dtype=torch.float64) * std + mean)

    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            draw(module.running_mean, -0.5, 0.5)
            draw(module.running_var, 0.25, 2.0)
            if module.affine:
                draw(module.weight, 0.5, 1.5)
                draw(module.bias, -0.3, 0.3)
        elif isinstance(module, modules.ImplicitAdd):
            normal(module.implicit, 0.0, 0.2)
        elif isinstance(module, modules.ImplicitMul):
            normal(module.implicit, 1.0, 0.2)
        elif isinstance(module, modules.Detect):
            for conv in (*module.m, *module.aux):
                normal(conv.bias, 0.0, 0.5)
    return model


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def fuse_check(
    model: str | Path | BlockGraph,
    *,
    repconv: Policy | None = None,
    img_size: int | None = None,
    nc: int | None = None,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> dict[str, Any]:
    """Build ``model`` in training form (RepConvs planned by ``repconv`` if given), randomize
    it, run batch 2 at ``img_size`` in eval mode before and after ``reparameterize``.

    ``ok``: relative diff <= 1e-4, objectness/class scores within 1e-4, and the fused
    model's parameter count equals the analytic count of the deploy graph. The relative
    diff is over the decoded outputs, whose largest values are box coordinates in pixels.
    """
    if img_size is None:
        img_size = default_check_size(max_stride(get_block_graph(model, nc=nc)))
    graph = get_layer_graph(model, nc=nc, img_size=img_size, repconv=repconv)
    # independent of reparameterize's own pruning: aux heads dropped on the BlockGraph
    expected_graph = get_layer_graph(model, nc=nc, img_size=img_size, deploy=True, repconv=repconv)

    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        training = build_module(graph)
    randomize_(training, generator)
    training = training.to(dtype).eval()
    x = torch.rand(2, graph.input_shape.c, img_size, img_size, generator=generator).to(dtype)
    with torch.no_grad():
        reference = training(x)
        fused = reparameterize(training)
        output = fused(x)
    diff = (output - reference).abs().max().item()
    score_diff = (output[..., 4:] - reference[..., 4:]).abs().max().item()  # in [0, 1]
    max_abs = reference.abs().max().item()
    relative = diff / max_abs if max_abs > 0 else (0.0 if diff == 0 else math.inf)
    params_fused = _n_params(fused)
    params_expected = count_graph(expected_graph).params
    return {
        "model": model.name if isinstance(model, BlockGraph) else str(model),
        "repconv": repconv,
        "img_size": img_size,
        "dtype": str(dtype).removeprefix("torch."),
        "max_abs_diff": diff,
        "max_abs_output": max_abs,
        "relative": relative,
        "max_abs_diff_scores": score_diff,
        "params_training": _n_params(training),
        "params_fused": params_fused,
        "params_deploy_expected": params_expected,
        "ok": bool(
            relative <= REL_TOL and score_diff <= REL_TOL and params_fused == params_expected
        ),
    }
