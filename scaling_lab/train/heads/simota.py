"""SimOTA label assignment (YOLOX, Ge et al. 2021, §2.3 "SimOTA"), per image, as the public
YOLOX code (Megvii-BaseDetection/YOLOX 0.3.0, ``YOLOXHead.get_assignments``) computes it.

1. Centre prior (``Prior``): a cell is a candidate of a target when the cell centre lies
   strictly within ``radius`` strides of the target centre, in x and in y (``CURRENT``: 1.5,
   the public code since 0.3.0); ``LEGACY`` (the code before, 0.1-0.2, as the paper
   describes it): within 2.5 strides *or* inside the box. Candidates of any target compete
   for every target.
2. Cost of (target, candidate): BCE of sqrt(sigmoid(cls) * sigmoid(obj)) against the one-hot
   class, summed over classes, + 3 x -log(IoU + 1e-8), + ``outside_cost`` (1e6; ``LEGACY``
   1e5) where the candidate is outside that target's own prior (``LEGACY``: not both inside
   the box and within 2.5 strides).
3. Dynamic k: per target, the sum of its 10 largest IoUs, truncated to an integer, at least 1;
   the target takes its k cheapest candidates.
4. A candidate taken by several targets goes to the cheapest of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional

IOU_COST = 3.0
TOPK_IOU = 10


@dataclass(frozen=True)
class Prior:
    """Which cells a target may take: within ``radius`` strides of its centre, and with
    ``in_box`` the cells inside its box too (candidates: either; own prior: both)."""

    radius: float
    in_box: bool
    outside_cost: float


CURRENT = Prior(radius=1.5, in_box=False, outside_cost=1e6)  # YOLOX 0.3.0
LEGACY = Prior(radius=2.5, in_box=True, outside_cost=1e5)  # YOLOX 0.1-0.2, the paper's


@dataclass(frozen=True)
class Match:
    """The positives of one image: cell index, target index (within the image) and the IoU of
    the cell's predicted box with its target."""

    cell: Tensor
    target: Tensor
    iou: Tensor


def pairwise_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of every box of ``a`` (G, 4) with every box of ``b`` (N, 4), (cx, cy, w, h)."""
    top_left = torch.max(a[:, None, :2] - a[:, None, 2:] / 2, b[:, :2] - b[:, 2:] / 2)
    bottom_right = torch.min(a[:, None, :2] + a[:, None, 2:] / 2, b[:, :2] + b[:, 2:] / 2)
    overlaps = (top_left < bottom_right).to(a.dtype).prod(dim=2)
    inter = torch.prod(bottom_right - top_left, 2) * overlaps
    area_a, area_b = torch.prod(a[:, 2:], 1), torch.prod(b[:, 2:], 1)
    return inter / (area_a[:, None] + area_b - inter)


def _inside(cx: Tensor, cy: Tensor, gt: Tensor, half_w: Tensor, half_h: Tensor) -> Tensor:
    """(G, N): the cell centre strictly inside the rectangle of these half sides around the
    target centre."""
    gx, gy = gt[:, 0:1], gt[:, 1:2]
    deltas = torch.stack(
        (cx - (gx - half_w), cy - (gy - half_h), (gx + half_w) - cx, (gy + half_h) - cy)
    )
    return deltas.min(dim=0).values > 0.0


def centre_prior(
    gt: Tensor, cell_xy: Tensor, stride: Tensor, prior: Prior
) -> tuple[Tensor, Tensor]:
    """(G, N) candidates and own prior of each target (see ``Prior``)."""
    cx = ((cell_xy[:, 0] + 0.5) * stride)[None]
    cy = ((cell_xy[:, 1] + 0.5) * stride)[None]
    reach = (stride * prior.radius)[None]
    near = _inside(cx, cy, gt, reach, reach)
    if not prior.in_box:
        return near, near
    box = _inside(cx, cy, gt, 0.5 * gt[:, 2:3], 0.5 * gt[:, 3:4])
    return near | box, near & box


@torch.no_grad()
def simota(
    boxes: Tensor,
    cls_logits: Tensor,
    obj_logits: Tensor,
    gt_boxes: Tensor,
    gt_classes: Tensor,
    cell_xy: Tensor,
    stride: Tensor,
    *,
    prior: Prior = CURRENT,
) -> Match:
    """Positives of one image. ``boxes`` (N, 4) decoded (cx, cy, w, h) pixels, logits (N, nc)
    and (N, 1), ``gt_boxes`` (G, 4) pixels, ``gt_classes`` (G,), cells as ``grid.cells``."""
    nc = cls_logits.shape[1]
    reach, own = centre_prior(gt_boxes, cell_xy, stride, prior)
    candidate = reach.any(0)
    empty = boxes.new_zeros(0, dtype=torch.long)
    if not bool(candidate.any()):
        return Match(empty, empty, boxes.new_zeros(0))
    inside = own[:, candidate]
    ious = pairwise_iou(gt_boxes.float(), boxes[candidate].float())
    one_hot = functional.one_hot(gt_classes.long(), nc).float()
    score = (
        cls_logits[candidate].float().sigmoid() * obj_logits[candidate].float().sigmoid()
    ).sqrt()
    n_gt, n_cand = ious.shape
    cls_cost = functional.binary_cross_entropy(
        score.unsqueeze(0).repeat(n_gt, 1, 1),
        one_hot.unsqueeze(1).repeat(1, n_cand, 1),
        reduction="none",
    ).sum(-1)
    cost = cls_cost + IOU_COST * -torch.log(ious + 1e-8) + prior.outside_cost * (~inside)
    taken = _match(cost, ious)
    fg = taken.sum(0) > 0
    cell = candidate.nonzero().squeeze(1)[fg]
    target = taken[:, fg].argmax(0)
    iou = (taken * ious).sum(0)[fg]
    return Match(cell, target, iou)


def _match(cost: Tensor, ious: Tensor) -> Tensor:
    """(G, C) 0/1: each target's k cheapest candidates, a shared candidate to the cheapest."""
    taken = torch.zeros_like(cost, dtype=torch.uint8)
    top = torch.topk(ious, min(TOPK_IOU, ious.shape[1]), dim=1).values
    ks = torch.clamp(top.sum(1).int(), min=1).tolist()
    for g, k in enumerate(ks):
        taken[g][torch.topk(cost[g], k=k, largest=False).indices] = 1
    shared = taken.sum(0) > 1
    if bool(shared.any()):
        cheapest = cost[:, shared].argmin(0)
        taken[:, shared] = 0
        taken[cheapest, shared] = 1
    return taken
