"""Where torch work runs: the one default-device rule, the device check, and the precision
names. Torch is imported inside the functions only, so the CLI and the torch-free packages can
name devices and dtypes without loading it."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Literal, get_args

from scaling_lab.spec.errors import SpecError

if TYPE_CHECKING:
    import torch

Dtype = Literal["fp32", "fp16", "bf16"]
DTYPES: tuple[str, ...] = get_args(Dtype)
TORCH_DTYPE_NAMES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}


def default_device() -> str:
    """``cuda`` when a CUDA device is usable, else ``cpu``: what every command runs on when
    the user names no device."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def gpu_count() -> int:
    """Usable CUDA devices on this machine (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_device(device: str) -> torch.device:
    """``cpu`` or a usable ``cuda:N`` (a bare ``cuda`` becomes ``cuda:0``); a ``SpecError``
    naming the field otherwise, since torch's own refusal is a multi-line traceback."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise SpecError(
            f"unknown device '{device}' (use cpu or cuda[:N])", field="device"
        ) from None
    if dev.type not in ("cpu", "cuda"):
        raise SpecError(f"unsupported device '{device}' (use cpu or cuda[:N])", field="device")
    if dev.type == "cpu":
        return dev
    if not torch.cuda.is_available():
        built = torch.version.cuda or "none"
        raise SpecError(
            f"CUDA was requested but no CUDA device is usable (torch {torch.__version__}, "
            f"built for CUDA {built}); use --device cpu",
            field="device",
        )
    index = dev.index or 0
    if index >= torch.cuda.device_count():
        raise SpecError(
            f"no CUDA device {index} (this machine has {torch.cuda.device_count()})",
            field="device",
        )
    return torch.device("cuda", index)


@functools.cache
def check_device(device: str) -> None:
    """A usable ``cpu`` / ``cuda[:N]``, checked before a model is moved there."""
    resolve_device(device)


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a precision name (``fp16`` -> ``torch.float16``)."""
    import torch

    if name not in TORCH_DTYPE_NAMES:
        raise SpecError(f"unknown dtype '{name}' (known: {', '.join(DTYPES)})", field="dtype")
    return getattr(torch, TORCH_DTYPE_NAMES[name])
