"""What machine and software a run trained on: its card, stored with every training run and
named in the sweep reports.

CPU training is bit-identical only on the same machine and software: another CPU runs other
kernels (ATen dispatches by the ISA it finds, oneDNN and MKL pick their own code paths), so a
table made elsewhere differs within the seed noise. The card names what decides that: the CPU
model, the ISA ATen dispatches to, the cap put on oneDNN's ISA and MKL's code path (none
unless the environment sets one), the torch and oneDNN versions and the threads.
"""

from __future__ import annotations

import functools
import os
import platform
import re
from pathlib import Path
from typing import Any

# environment variables that pin kernels to an ISA (see docs/experiments.md, Machines)
ISA_PINS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_CBWR")


def cpu_name() -> str:
    """The CPU model name (``/proc/cpuinfo`` on Linux), else what platform knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


@functools.cache
def _onednn_version() -> str:
    import torch

    found = re.search(r"(?:MKL-DNN|oneDNN)[^\n]*?v(\d+(?:\.\d+)+)", torch.__config__.show())
    return found.group(1) if found else "unknown"


def machine_card() -> dict[str, Any]:
    """The machine and software of this process, as plain JSON values."""
    import torch

    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "aten_isa": torch.backends.cpu.get_cpu_capability(),
        "isa_pins": {name: os.environ[name] for name in ISA_PINS if os.environ.get(name)},
        "torch": str(torch.__version__),
        "onednn": _onednn_version(),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }


def machine_line(card: dict[str, Any]) -> str:
    """One line naming a card: what a report lists per machine the runs trained on."""
    pins = ", ".join(f"{k}={v}" for k, v in sorted((card.get("isa_pins") or {}).items()))
    return (
        f"{card.get('cpu', '?')} ({card.get('aten_isa', '?')}"
        + (f"; pinned {pins}" if pins else "")
        + f"), torch {card.get('torch', '?')}, oneDNN {card.get('onednn', '?')}, "
        f"{card.get('threads', '?')} thread(s)"
    )
