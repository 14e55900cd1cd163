"""Will a model fit? An estimate of the memory a module and its activations take, checked
against the memory left before anything is allocated (``--img 65536`` is refused in
milliseconds instead of driving the machine into swap or the OOM killer).

The estimate is deliberately generous to the user: float32 weights, and for a forward pass
without gradients half the sum of all layer outputs (fx frees a tensor after its last use);
with gradients every output twice (saved for backward) and weights four times (gradients,
momentum, EMA copy). The budget is ``MEMORY_FRACTION`` of the least of: available RAM, the
cgroup's limit minus its usage, and the process's address-space and data limits minus what
it uses already.
"""

from __future__ import annotations

import resource
from pathlib import Path

from scaling_lab.errors import UserError
from scaling_lab.layers.layer_graph import LayerGraph
from scaling_lab.limits import MEMORY_FRACTION

_FLOAT = 4  # bytes


def _read_kib(path: str, key: str) -> int | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_left() -> int | None:
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = Path("/sys/fs/cgroup/memory.current").read_text().strip()
    except OSError:
        return None
    if not limit.isdigit() or not used.isdigit():
        return None  # "max": no limit
    return int(limit) - int(used)


def _rlimit_left(which: int, used_key: str) -> int | None:
    soft, _ = resource.getrlimit(which)
    if soft == resource.RLIM_INFINITY:
        return None
    used = _read_kib("/proc/self/status", used_key) or 0
    return soft - used


def memory_left() -> int | None:
    """Bytes this process may still allocate (None where nothing can be measured)."""
    found = [
        _read_kib("/proc/meminfo", "MemAvailable"),
        _cgroup_left(),
        _rlimit_left(resource.RLIMIT_AS, "VmSize"),
        _rlimit_left(resource.RLIMIT_DATA, "VmData"),
    ]
    known = [v for v in found if v is not None]
    return max(0, min(known)) if known else None


def estimate_bytes(layers: LayerGraph, *, batch: int = 1, grad: bool = False) -> int:
    """Bytes of weights plus ``batch`` images' activations (see the module docstring)."""
    params = sum(layer.op.count(layers.input_shapes(layer), layer.shape).params for layer in layers)
    if grad:  # weights, gradients and two optimizer buffers; outputs kept for backward
        outputs = layers.input_shape.elements + sum(layer.shape.elements for layer in layers)
        return _FLOAT * (4 * params + 2 * batch * outputs)
    return _FLOAT * params + activation_bytes(layers, batch=batch)


def activation_bytes(layers: LayerGraph, *, batch: int = 1) -> int:
    """The activations' share of ``estimate_bytes`` (``batch`` images, inference)."""
    outputs = layers.input_shape.elements + sum(layer.shape.elements for layer in layers)
    return _FLOAT * (batch * outputs // 2)


def _gb(n: int) -> str:
    return f"{n / 2**30:.1f} GB"


def _device_left(device: str) -> int | None:
    if not str(device).startswith("cuda"):
        return memory_left()
    import torch

    if not torch.cuda.is_available():
        return None  # the device request itself is refused elsewhere
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return int(free)


def check_fits(
    layers: LayerGraph,
    *,
    batch: int = 1,
    grad: bool = False,
    device: str = "cpu",
    what: str = "the model",
) -> None:
    """Refuse (``UserError``) a model whose estimate exceeds the memory left on ``device``."""
    left = _device_left(device)
    if left is None:
        return
    need = estimate_bytes(layers, batch=batch, grad=grad)
    budget = int(left * MEMORY_FRACTION)
    if need > budget:
        size = layers.input_shape.h
        raise UserError(
            f"{what} needs about {_gb(need)} at {size}x{size} px, batch {batch}, more than the "
            f"{_gb(budget)} of memory left on {device}: use a smaller --img or batch",
            source=layers.name,
            field="img_size",
        )
