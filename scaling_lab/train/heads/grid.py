"""Cell geometry of anchor-free heads: the levels' strides (from the model's layer graph), the
cells' grid indices and strides in the order the head's output flattens them (level by level,
row-major), and that flattening itself."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def level_strides(model: nn.Module) -> tuple[int, ...]:
    """Stride of each level the head's output layer reads (small first, as the spec lists)."""
    graph = model.layer_graph
    out = graph.output
    return tuple(int(graph[name].shape.stride) for name in out.inputs)


def level_sizes(img_hw: tuple[int, int], strides: tuple[int, ...]) -> list[tuple[int, int]]:
    """(h, w) of each level's map for an input of ``img_hw`` (stride-2 convs round up)."""
    return [(math.ceil(img_hw[0] / s), math.ceil(img_hw[1] / s)) for s in strides]


def cells(
    sizes: list[tuple[int, int]], strides: tuple[int, ...], device: torch.device
) -> tuple[Tensor, Tensor]:
    """Grid indices (N, 2) as (x, y) floats and strides (N,) of every cell, level by level."""
    xy, stride = [], []
    for (h, w), s in zip(sizes, strides):
        ys, xs = torch.meshgrid(
            torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij"
        )
        xy.append(torch.stack((xs, ys), -1).reshape(-1, 2).float())
        stride.append(torch.full((h * w,), float(s), device=device))
    return torch.cat(xy), torch.cat(stride)


def flatten_maps(maps: list[Tensor]) -> Tensor:
    """Training-mode level maps (B, C, H, W) -> (B, N, C), the eval output's layout."""
    return torch.cat([m.flatten(2).transpose(1, 2) for m in maps], 1)


def targets_px(targets: Tensor, images: Tensor) -> Tensor:
    """Targets (N, 6) [image, class, cx, cy, w, h] normalized -> the same in input pixels."""
    h, w = images.shape[-2:]
    targets = targets.float().reshape(-1, 6)
    scale = torch.tensor([w, h, w, h], device=targets.device, dtype=torch.float32)
    return torch.cat((targets[:, :2], targets[:, 2:6] * scale), 1)
