"""Multi-GPU plumbing for torchrun: ranks from the environment, process group, collectives.

``torchrun --nproc_per_node N -m scaling_lab.cli train ...`` sets ``LOCAL_RANK``, ``RANK`` and
``WORLD_SIZE``; without them the run is a single process (rank -1, world size 1), the
reference's convention. Only rank 0 (or -1) writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = -1  # global rank; -1 when not distributed
    local_rank: int = -1
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank in (-1, 0)


def dist_info_from_env() -> DistInfo:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size)


def setup(info: DistInfo, device: str) -> torch.device:
    """Start the process group (nccl on CUDA, gloo on CPU); return this rank's device."""
    if not info.enabled:
        return torch.device(device)
    if device.startswith("cuda"):
        torch.cuda.set_device(info.local_rank)
        dev = torch.device("cuda", info.local_rank)
        backend = "nccl"
    else:
        dev = torch.device("cpu")
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return dev


def teardown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()


def gather_to_main(info: DistInfo, obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` as a list on rank 0 (None elsewhere); ``[obj]`` when single."""
    if not info.enabled:
        return [obj]
    gathered: list[Any] = [None] * info.world_size
    dist.all_gather_object(gathered, obj)
    return gathered if info.is_main else None


def broadcast_from_main(info: DistInfo, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
