"""Keep glibc's heap from shrinking and regrowing inside every forward call on the CPU.

glibc serves a block below its mmap threshold from the heap and gives the heap's top back to
the OS when more than twice that threshold lies free there. The threshold is not fixed: it
starts at 128 KiB and rises to the size of the largest mmapped block freed so far, capped at
32 MiB. In a process that has run one forward of yolov7-tiny at 640 px it settles at the
largest activation freed, 13 MiB, so the heap is trimmed whenever 26 MiB at its top fall
free. A generated forward frees every activation at its last use, which empties the top of
the heap several times per call: each time the pages go back to the OS and the next
allocations fault them in again (about 24k minor faults and 20% of the latency per call,
``benchmarks/latency_processes.py``).

``settle_heap_thresholds`` allocates and frees one block just under the 32 MiB cap, once per
process, when a model is built. glibc's own rule then sets the threshold there (trimming
only above 64 MiB free at the top) before any forward runs, as it would after the first
block of that size any program frees. Nothing is configured (no ``mallopt``, no environment
variable), the pages of the block are never touched, and where the rule does not exist (other
C libraries) or thresholds were set explicitly (``MALLOC_MMAP_THRESHOLD_`` turns the rule
off) it changes nothing.
"""

from __future__ import annotations

import functools
import os
import sys

import torch

GLIBC_THRESHOLD_CAP = 32 << 20  # DEFAULT_MMAP_THRESHOLD_MAX on 64-bit glibc
SETTLING_BLOCK = GLIBC_THRESHOLD_CAP - (64 << 10)  # a chunk just under the cap, with headers


def _glibc() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (ValueError, OSError):
        return False


@functools.cache
def settle_heap_thresholds() -> bool:
    """Raise glibc's dynamic mmap / trim thresholds to their cap (once per process); True
    when done. The block is freed at once and its pages are never touched."""
    if not _glibc():
        return False
    block = torch.empty(SETTLING_BLOCK, dtype=torch.uint8)
    del block
    return True
