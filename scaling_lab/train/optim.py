"""The optimizer (the paper's SGD, or Adam / AdamW) with the YOLOv7 recipe's parameter groups,
warm-up, lr schedule and gradient accumulation.

Everything here is a pure function of the step counters, so a resumed run recomputes the same
learning rates, momenta and accumulation counts without any scheduler state:

- three parameter groups (the reference order): ``no_decay`` (BatchNorm weights, implicit
  knowledge and other 1-d or scalar weights), ``decay`` (conv / linear weights, weight decay
  scaled by the nominal batch), ``bias`` (every bias, no decay);
- the schedule factor ``lf(epoch)``: cosine from 1 to ``lrf`` over the run (``one_cycle``), or
  linear; the lr of every group is ``lr0 * lf(epoch)``;
- warm-up over the first ``n_warmup`` steps (``max(warmup_epochs * steps_per_epoch,
  warmup_min_steps)``): lrs rise linearly from 0 (the bias group falls from
  ``warmup_bias_lr``) to ``lr0 * lf(epoch)``, momentum rises from ``warmup_momentum`` and the
  accumulation count from 1 to ``nominal_batch / batch_size``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from scaling_lab.train.choices import OPTIMIZERS

GROUP_NAMES = ("no_decay", "decay", "bias")


def split_parameters(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Trainable parameters by group: ``no_decay``, ``decay``, ``bias``.

    A parameter named ``bias`` goes to ``bias``; BatchNorm weights and every other weight of
    dimension < 2 (implicit knowledge, scales) to ``no_decay``; conv and linear kernels to
    ``decay``. Every trainable parameter lands in exactly one group.
    """
    groups: dict[str, list[nn.Parameter]] = {name: [] for name in GROUP_NAMES}
    seen: set[int] = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            if name == "bias":
                groups["bias"].append(param)
            elif isinstance(module, nn.modules.batchnorm._BatchNorm) or param.dim() < 2:
                groups["no_decay"].append(param)
            elif param.dim() >= 2 and name == "weight":
                groups["decay"].append(param)
            else:  # other learned tensors (implicit knowledge with shape (1, C, 1, 1), ...)
                groups["no_decay"].append(param)
    return groups


def accumulate_steps(batch_size: int, nominal_batch: int) -> int:
    """Batches whose gradients add up before one optimizer step (nominal batch 64)."""
    return max(round(nominal_batch / batch_size), 1)


def scaled_weight_decay(weight_decay: float, batch_size: int, nominal_batch: int) -> float:
    """The reference scales decay by the batch actually stepped over the nominal one."""
    return weight_decay * batch_size * accumulate_steps(batch_size, nominal_batch) / nominal_batch


def build_optimizer(
    model: nn.Module,
    hyp: dict,
    *,
    kind: str = "sgd",
    batch_size: int,
    nominal_batch: int = 64,
    fused: bool = False,
) -> torch.optim.Optimizer:
    """The optimizer over the three groups; ``initial_lr`` is ``lr0`` in every group.

    ``sgd``: Nesterov SGD with ``momentum`` (the paper's). ``adam`` / ``adamw``: ``momentum``
    is beta1 (beta2 0.999), as the reference's ``--adam`` sets it, and the warm-up leaves it
    alone (it ramps SGD's momentum only, as there); ``adam`` adds the decay to the gradient
    (L2), ``adamw`` decouples it. Adam wants smaller lrs than the SGD recipe's: set ``lr0``
    (1e-3) and ``warmup_bias_lr`` with it.

    ``fused``: torch's fused kernel (one pass over each tensor's weights and moments) in place
    of the foreach one. It rounds differently (weights differ in the last bits after a step),
    so it is a setting, not a default: a calibration holds only for runs with the same one.
    """
    groups = split_parameters(model)
    decay = scaled_weight_decay(float(hyp["weight_decay"]), batch_size, nominal_batch)
    param_groups = [
        {"params": groups["no_decay"], "name": "no_decay", "weight_decay": 0.0},
        {"params": groups["decay"], "name": "decay", "weight_decay": decay},
        {"params": groups["bias"], "name": "bias", "weight_decay": 0.0},
    ]
    lr0 = float(hyp["lr0"])
    for group in param_groups:
        group["initial_lr"] = lr0
    param_groups = [g for g in param_groups if g["params"]]
    momentum = float(hyp["momentum"])
    # foreach: one update per parameter group instead of a Python loop over tensors, which
    # torch picks only on CUDA by default. On the CPU it gives the same weights to the bit
    # (checked for SGD and Adam, benchmarks/search_throughput.py) and a faster step; the fused
    # kernel is faster still (Adam on yolov7-tiny, one thread: 4.9 vs 17.8 ms), other bits
    impl = {"fused": True} if fused else {"foreach": True}
    if kind == "sgd":
        return torch.optim.SGD(param_groups, lr=lr0, momentum=momentum, nesterov=True, **impl)
    if kind in ("adam", "adamw"):
        adam = torch.optim.Adam if kind == "adam" else torch.optim.AdamW
        return adam(param_groups, lr=lr0, betas=(momentum, 0.999), **impl)
    raise ValueError(f"unknown optimizer '{kind}' (known: {', '.join(OPTIMIZERS)})")


def lr_factor(epoch: int, epochs: int, lrf: float, schedule: str = "cosine") -> float:
    """``lf(epoch)``: 1 at epoch 0, falling to ``lrf`` (cosine reaches it after ``epochs``,
    linear at the last epoch)."""
    if schedule == "cosine":
        return ((1 - math.cos(epoch * math.pi / epochs)) / 2) * (lrf - 1) + 1
    if schedule == "linear":
        return (1 - epoch / max(epochs - 1, 1)) * (1.0 - lrf) + lrf
    raise ValueError(f"unknown lr schedule '{schedule}' (known: cosine, linear)")


@dataclass(frozen=True)
class Schedule:
    """Learning rate, momentum and accumulation as functions of (epoch, global step)."""

    hyp: dict
    epochs: int
    steps_per_epoch: int
    batch_size: int
    nominal_batch: int = 64
    schedule: str = "cosine"
    warmup_min_steps: int = 1000

    @property
    def n_warmup(self) -> int:
        """Warm-up steps: ``warmup_epochs`` epochs, at least ``warmup_min_steps`` (0: none)."""
        warmup = float(self.hyp.get("warmup_epochs", 0.0))
        if warmup <= 0:
            return 0
        return max(round(warmup * self.steps_per_epoch), self.warmup_min_steps)

    def factor(self, epoch: int) -> float:
        return lr_factor(epoch, self.epochs, float(self.hyp["lrf"]), self.schedule)

    def accumulate(self, step: int) -> int:
        """Batches per optimizer step at global step ``step`` (ramps up during warm-up)."""
        full = accumulate_steps(self.batch_size, self.nominal_batch)
        n = self.n_warmup
        if n and step <= n:
            return max(
                1, int(np.interp(step, [0, n], [1, self.nominal_batch / self.batch_size]).round())
            )
        return full

    def lr(self, group: str, epoch: int, step: int) -> float:
        """The lr of ``group`` at ``epoch`` and global step ``step``."""
        target = float(self.hyp["lr0"]) * self.factor(epoch)
        n = self.n_warmup
        if n and step <= n:
            start = float(self.hyp.get("warmup_bias_lr", 0.0)) if group == "bias" else 0.0
            return float(np.interp(step, [0, n], [start, target]))
        return target

    def momentum(self, step: int) -> float:
        momentum = float(self.hyp["momentum"])
        n = self.n_warmup
        if n and step <= n:
            start = float(self.hyp.get("warmup_momentum", momentum))
            return float(np.interp(step, [0, n], [start, momentum]))
        return momentum

    def apply(self, optimizer: torch.optim.Optimizer, epoch: int, step: int) -> None:
        """Set every group's lr (and momentum) for this step."""
        momentum = self.momentum(step)
        for group in optimizer.param_groups:
            group["lr"] = self.lr(group.get("name", "decay"), epoch, step)
            if "momentum" in group:
                group["momentum"] = momentum
