"""Mixed precision for training: which autocast type a device gets, and the model's outputs
back in fp32 before the loss.

CUDA trains under fp16 autocast with loss scaling, as the reference does. The CPU has no fast
fp16 convolutions, but oneDNN runs bf16 ones natively where the CPU has AVX512-BF16 or AMX
(about 1.5x a training step at 128 px on one Zen 4 core: ``benchmarks/train_step_precision.py``).
bf16 keeps fp32's exponent, so it needs no loss scaling, but its 8-bit mantissa would round the
box regression and the label assignment's IoUs, so the loss is computed in fp32 from the
outputs cast back.

Channels-last training is not offered: on the same machine (torch 2.14.1, oneDNN 3.12.0) a
channels-last 1x1 stride-2 convolution reading 3 to 8 channels corrupts the heap in its weight
gradient (RepConv stems), and keeping those layers NCHW did not stop it reliably.
"""

from __future__ import annotations

from typing import Any

import torch


def autocast_dtype(device: torch.device) -> torch.dtype:
    """fp16 on CUDA (the reference's AMP), bf16 elsewhere (the CPU's fast low precision)."""
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def to_float32(outputs: Any) -> Any:
    """``outputs`` (a tensor, or lists, tuples and dicts of them) with every floating tensor
    in fp32; other values unchanged."""
    if isinstance(outputs, torch.Tensor):
        return outputs.float() if outputs.is_floating_point() else outputs
    if isinstance(outputs, list | tuple):
        return type(outputs)(to_float32(o) for o in outputs)
    if isinstance(outputs, dict):
        return {key: to_float32(value) for key, value in outputs.items()}
    return outputs
