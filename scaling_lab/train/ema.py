"""Exponential moving average of a model's weights (the YOLOv5/YOLOv7 recipe).

After each optimizer step, every floating-point parameter and buffer of the averaged copy
becomes ``d * ema + (1 - d) * model`` with a decay that ramps up from 0:
``d = decay * (1 - exp(-updates / tau))``, so early updates follow the model closely and the
average settles to ``decay`` after a few ``tau`` steps. Integer buffers (BatchNorm's
``num_batches_tracked``) are copied. The averaged copy is what gets evaluated and saved.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

# averaged floats, the model's floats, averaged others, the model's others (copied as they are)
_Pairs = tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]


# where a module holds a tensor (its _parameters or _buffers dict, the name), the tensor then,
# and its storage then
_Slot = tuple[dict[str, Any], str, torch.Tensor, int]


def _slots(module: nn.Module) -> list[_Slot]:
    """Every parameter and buffer of ``module`` with where it is held."""
    return [
        (held, name, tensor, tensor.data_ptr())
        for owner in module.modules()
        for held in (owner._parameters, owner._buffers)
        for name, tensor in held.items()
        if tensor is not None
    ]


def _unchanged(slots: list[_Slot]) -> bool:
    """Whether each slot still holds the same tensor on the same storage."""
    return all(
        held.get(name) is tensor and tensor.data_ptr() == ptr for held, name, tensor, ptr in slots
    )


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside DataParallel / DistributedDataParallel wrappers."""
    parallel = (nn.DataParallel, nn.parallel.DistributedDataParallel)
    return model.module if isinstance(model, parallel) else model


class ModelEMA:
    """Averaged copy of ``model`` in ``.module`` (eval mode, no grads).

    ``updates`` counts the ``update`` calls so far (restored from a checkpoint to resume the
    ramp where it stopped).
    """

    def __init__(
        self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0, updates: int = 0
    ) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ModelEMA: decay must be in [0, 1), got {decay}")
        if tau <= 0:
            raise ValueError(f"ModelEMA: tau must be positive, got {tau}")
        source = _unwrap(model)
        self.module = copy.deepcopy(source).eval()
        if hasattr(source, "layer_graph"):  # GraphModule's deepcopy drops extra attributes
            self.module.layer_graph = source.layer_graph
        self.module.requires_grad_(False)
        self.decay = decay
        self.tau = tau
        self.updates = updates
        self._cache: tuple[nn.Module, list[_Slot], _Pairs] | None = None

    def decay_at(self, updates: int) -> float:
        """The decay used at update number ``updates`` (1 for the first call)."""
        return self.decay * (1.0 - math.exp(-updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current weights (call after optimizer.step)."""
        self.updates += 1
        d = self.decay_at(self.updates)
        averaged, current, copied, sources = self._pairs(_unwrap(model))
        # one foreach call per op instead of two per tensor (~300 tensors): the same
        # element-wise mul and add, so the same bits, in a tenth of the time
        torch._foreach_mul_(averaged, d)
        torch._foreach_add_(averaged, current, alpha=1.0 - d)
        for avg, new in zip(copied, sources, strict=True):
            avg.copy_(new)

    def _pairs(self, source: nn.Module) -> _Pairs:
        """The averaged and the model's tensors, matched by name: floating ones to average,
        the rest to copy. Built once per model and rebuilt when a tensor of either side was
        replaced or given new storage (``.to()``, a reassigned parameter): the lists hold the
        live tensors. The check walks stored references, not the module tree, which cost
        more than the update itself."""
        cache = self._cache
        if cache is not None and cache[0] is source and _unchanged(cache[1]):
            return cache[2]
        current = source.state_dict(keep_vars=True)
        averaged = self.module.state_dict(keep_vars=True)
        if current.keys() != averaged.keys():
            extra = sorted(current.keys() ^ averaged.keys())[:5]
            raise KeyError(f"ModelEMA.update: model and average differ in {extra}")
        pairs: _Pairs = ([], [], [], [])
        seen: set[int] = set()  # a tensor shared under two names is averaged once
        for name, avg in averaged.items():
            if avg.numel() and avg.data_ptr() in seen:
                continue
            seen.add(avg.data_ptr())
            avg, new = avg.detach(), current[name].detach()
            if avg.is_floating_point():  # a model in another float type: foreach promotes
                pairs[0].append(avg)
                pairs[1].append(new)
            else:
                pairs[2].append(avg)
                pairs[3].append(new)
        self._cache = (source, _slots(source) + _slots(self.module), pairs)
        return pairs

    def state_dict(self) -> dict[str, Any]:
        """Checkpoint entry: the averaged weights and the ramp state."""
        return {
            "module": self.module.state_dict(),
            "updates": self.updates,
            "decay": self.decay,
            "tau": self.tau,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
        self.decay = float(state.get("decay", self.decay))
        self.tau = float(state.get("tau", self.tau))
