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

Activations above the cap (yolov7's 50 MiB ones at 640 px) are still mapped afresh on every
call, unless the heap has a free block that large: glibc looks in its free lists before it
maps. ``reserve_heap`` makes one: it grows the heap by the bytes one image's activations take
(30 MiB blocks, below the threshold), allocates one more block above them and keeps it, and
frees the rest. glibc never trims below a live block, so the reserve stays in the process as
free heap, untouched (no resident memory) until a forward uses it, and then kept like any
heap memory. A larger model built later grows it; a smaller one leaves it as it is.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys

import torch

GLIBC_THRESHOLD_CAP = 32 << 20  # DEFAULT_MMAP_THRESHOLD_MAX on 64-bit glibc
SETTLING_BLOCK = GLIBC_THRESHOLD_CAP - (64 << 10)  # a chunk just under the cap, with headers
RESERVE_BLOCK = 30 << 20  # below the settled threshold: served from the heap
_reserve = {"bytes": 0, "pins": []}  # the largest reserve made in this process and its pins


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


def _heap_end() -> int:
    """The program break: the heap's end (``sbrk(0)``, a read-only query)."""
    libc = ctypes.CDLL(None)
    libc.sbrk.restype, libc.sbrk.argtypes = ctypes.c_void_p, [ctypes.c_long]
    return int(libc.sbrk(0))


def reserve_heap(nbytes: int) -> int:
    """Keep at least ``nbytes`` of free heap below a pinned block (see the module); the bytes
    reserved in this process so far (0 where glibc's rule does not apply)."""
    if nbytes <= _reserve["bytes"] or not settle_heap_thresholds():
        return _reserve["bytes"]
    count = -(-nbytes // RESERVE_BLOCK)
    try:
        blocks = [torch.empty(RESERVE_BLOCK, dtype=torch.uint8) for _ in range(count + 1)]
    except RuntimeError:  # no address space for it (strict overcommit): keep nothing
        return _reserve["bytes"]
    pin = blocks.pop()
    on_heap = all(b.data_ptr() < pin.data_ptr() for b in blocks) and pin.data_ptr() < _heap_end()
    if not on_heap:  # the heap could not grow (glibc mapped the blocks): nothing to keep
        return _reserve["bytes"]
    _reserve["pins"].append(pin)
    _reserve["bytes"] = nbytes
    return nbytes
