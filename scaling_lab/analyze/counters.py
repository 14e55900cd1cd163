"""Cross-check counters on the built module: torch's parameter count, thop and fvcore.

What each counts (measured on the zoo; see docs/profiling.md):
- analytic (ours): conv/linear multiply-accumulates only; params = learnable tensors.
- thop 0.1.1: conv MACs (no bias term) + BatchNorm 4 ops/element + nearest upsampling
  1 op/output element; activations, pooling, concat, add and custom modules (implicit
  knowledge) count 0. Equal to analytic ``macs + thop_extra_ops`` exactly.
- fvcore: conv MACs (no bias) via the traced graph + BatchNorm and upsampling element-wise
  terms; unsupported ops (sigmoid, add, mul in the head) are skipped with no count.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ModuleCount:
    """Totals from a counter that runs the module, with per-child (node) breakdown."""

    params: int
    macs: int
    per_node: dict[str, int]  # top-level child module -> MACs (ops) counted there


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _dummy_input(model: nn.Module, img_size: int) -> torch.Tensor:
    channels = model.layer_graph.input_shape.c if hasattr(model, "layer_graph") else 3
    return torch.zeros(1, channels, img_size, img_size)


def count_thop(model: nn.Module, img_size: int) -> ModuleCount:
    """thop's MACs at the real input shape (batch 1, eval mode)."""
    import thop

    model = copy.deepcopy(model).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        macs, _params, per_child = thop.profile(
            model, inputs=(_dummy_input(model, img_size),), verbose=False, ret_layer_info=True
        )
    per_node = {name: int(info[0]) for name, info in per_child.items()}
    return ModuleCount(count_params(model), int(macs), per_node)


def count_fvcore(model: nn.Module, img_size: int) -> ModuleCount:
    """fvcore's FLOP count (one per multiply-accumulate) at the real input shape."""
    model = copy.deepcopy(model).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore's import and tracer warn about torch.jit
        from fvcore.nn import FlopCountAnalysis

        analysis = FlopCountAnalysis(model, _dummy_input(model, img_size))
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        total = int(analysis.total())
        by_module = analysis.by_module()
    children = [name for name, _ in model.named_children()]
    per_node = {name: int(by_module.get(name, 0)) for name in children}
    return ModuleCount(count_params(model), total, per_node)
