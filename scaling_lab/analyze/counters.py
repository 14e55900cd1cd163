"""Cross-check counters on the built module: torch's parameter count, thop and fvcore.

What each counts (measured on the zoo; see docs/profiling.md):
- analytic (ours): conv weight multiply-accumulates + bias adds (the paper's rule).
- thop 0.1.1: conv weight MACs (no bias add) + BatchNorm 4 ops/element + nearest upsampling
  1 op/output element; activations, pooling, concat, add and custom modules (implicit
  knowledge) count 0. Equal to analytic ``weight_macs + thop_extra_ops`` exactly.
- fvcore: conv MACs (no bias) via the traced graph + element-wise terms for BatchNorm and
  upsampling; unsupported ops (sigmoid, add, mul in the head) are skipped with no count.

Graphs with an auxiliary head run with the head in training mode while counted (only that
forward runs the auxiliary convs); everything else, BatchNorm included, stays in eval mode.
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


class _PinnedTraining(nn.Module):
    """Eval mode everywhere except the detection head, even when a counter calls ``eval()``
    (thop does): auxiliary heads only run in the head's training forward, and BatchNorm
    stays in eval mode (inference statistics, any input size)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def train(self, mode: bool = True) -> _PinnedTraining:
        super().train(False)
        for module in self.model.modules():
            if hasattr(module, "n_levels"):  # the Detect head
                module.training = True
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model(x)


def _has_aux_head(model: nn.Module) -> bool:
    return any(len(getattr(m, "aux", ())) for m in model.modules() if hasattr(m, "n_levels"))


def _counting_copy(model: nn.Module) -> tuple[nn.Module, str]:
    """A copy whose forward runs every module, and the name prefix of its children."""
    model = copy.deepcopy(model)
    if _has_aux_head(model):
        return _PinnedTraining(model).train(), "model."
    return model.eval(), ""


def _dummy_input(model: nn.Module, img_size: int) -> torch.Tensor:
    channels = model.layer_graph.input_shape.c if hasattr(model, "layer_graph") else 3
    return torch.zeros(1, channels, img_size, img_size)


def count_thop(model: nn.Module, img_size: int) -> ModuleCount:
    """thop's MACs at the real input shape (batch 1)."""
    import thop

    x = _dummy_input(model, img_size)
    model, prefix = _counting_copy(model)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        macs, _params, per_child = thop.profile(
            model, inputs=(x,), verbose=False, ret_layer_info=True
        )
    if prefix:
        per_child = per_child["model"][2]
    per_node = {name: int(info[0]) for name, info in per_child.items()}
    return ModuleCount(count_params(model), int(macs), per_node)


def count_fvcore(model: nn.Module, img_size: int) -> ModuleCount:
    """fvcore's FLOP count (one per multiply-accumulate) at the real input shape."""
    x = _dummy_input(model, img_size)
    model, prefix = _counting_copy(model)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore's import and tracer warn about torch.jit
        from fvcore.nn import FlopCountAnalysis

        analysis = FlopCountAnalysis(model, x)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        total = int(analysis.total())
        by_module = analysis.by_module()
    inner = model.model if prefix else model
    children = [name for name, _ in inner.named_children()]
    per_node = {name: int(by_module.get(prefix + name, 0)) for name in children}
    return ModuleCount(count_params(model), total, per_node)
