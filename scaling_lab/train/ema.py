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

    def decay_at(self, updates: int) -> float:
        """The decay used at update number ``updates`` (1 for the first call)."""
        return self.decay * (1.0 - math.exp(-updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current weights (call after optimizer.step)."""
        self.updates += 1
        d = self.decay_at(self.updates)
        current = _unwrap(model).state_dict()
        averaged = self.module.state_dict()
        if current.keys() != averaged.keys():
            extra = sorted(current.keys() ^ averaged.keys())[:5]
            raise KeyError(f"ModelEMA.update: model and average differ in {extra}")
        seen: set[int] = set()  # a tensor shared under two names is averaged once
        for name, avg in averaged.items():
            if avg.numel() and avg.data_ptr() in seen:
                continue
            seen.add(avg.data_ptr())
            new = current[name].detach()
            if avg.is_floating_point():
                avg.mul_(d).add_(new.to(avg.dtype), alpha=1.0 - d)
            else:
                avg.copy_(new)

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
