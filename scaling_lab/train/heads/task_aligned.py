"""PP-YOLOE's label assigners, batched over images with padded targets, as PaddleDetection
(``ppdet/modeling/assigners``) computes them.

- Task-Aligned (TOOD, Feng et al. 2021; PP-YOLOE's default): alignment t = s^alpha x IoU^beta
  (s the predicted probability of the target's class, IoU of the predicted box; alpha 1,
  beta 6); each target takes the ``topk`` (13) cells of largest t among those whose centre is
  strictly inside its box; a cell taken by several targets goes to the one its *predicted*
  box overlaps most. Soft label: t / max t of the target x max IoU of the target's positives.
- ATSS (Zhang et al. 2020; the first epochs): per level the 9 cells whose anchor box (5 strides
  square at the cell centre) centres are nearest the target's centre; of those, the ones whose
  anchor IoU exceeds the mean + unbiased std of the candidates' IoUs and whose centre lies
  inside the target; a shared cell goes to the target its *anchor* overlaps most. Soft label:
  the IoU of the cell's predicted box with its target.

Boxes are (x1, y1, x2, y2) pixels; ``Assigned.labels`` is ``nc`` for background.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional

TAL_TOPK, TAL_ALPHA, TAL_BETA = 13, 1.0, 6.0
ATSS_TOPK = 9
ANCHOR_SCALE = 5.0  # ATSS anchor box side, in strides


@dataclass(frozen=True)
class Assigned:
    """Per cell (B, N): class (``nc`` = background), target box (B, N, 4) and soft class
    scores (B, N, nc); ``positive`` (B, n, N) 0/1: which target took which cell."""

    labels: Tensor
    boxes: Tensor
    scores: Tensor
    positive: Tensor


def batch_iou(a: Tensor, b: Tensor, eps: float = 1e-9) -> Tensor:
    """IoU (B, n, N) of boxes ``a`` (B, n, 4) with ``b`` (B, N, 4), corners."""
    a, b = a.unsqueeze(2), b.unsqueeze(1)
    top_left = torch.maximum(a[..., :2], b[..., :2])
    bottom_right = torch.minimum(a[..., 2:], b[..., 2:])
    overlap = (bottom_right - top_left).clamp(min=0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp(min=0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp(min=0).prod(-1)
    return overlap / (area_a + area_b - overlap + eps)


def points_inside(points: Tensor, boxes: Tensor, eps: float = 1e-9) -> Tensor:
    """(B, n, N) float: point (N, 2) strictly inside box (B, n, 4)."""
    x, y = points[:, 0][None, None], points[:, 1][None, None]
    deltas = torch.stack(
        (x - boxes[..., 0:1], y - boxes[..., 1:2], boxes[..., 2:3] - x, boxes[..., 3:4] - y), -1
    )
    return (deltas.min(-1).values > eps).to(boxes.dtype)


def _resolve(positive: Tensor, ious: Tensor) -> Tensor:
    """A cell positive for several targets keeps only the target of largest ``ious``."""
    shared = positive.sum(-2, keepdim=True) > 1
    if not bool(shared.any()):
        return positive
    best = functional.one_hot(ious.argmax(-2), ious.shape[-2]).transpose(1, 2).to(ious.dtype)
    return torch.where(shared.expand_as(positive), best, positive)


def _labels(
    positive: Tensor, gt_labels: Tensor, gt_boxes: Tensor, nc: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Class (nc where none), box and one-hot scores of each cell from its positive target."""
    index = positive.argmax(-2)  # (B, N)
    labels = torch.gather(gt_labels.squeeze(-1), 1, index)
    labels = torch.where(positive.sum(-2) > 0, labels, torch.full_like(labels, nc))
    boxes = torch.gather(gt_boxes, 1, index.unsqueeze(-1).expand(-1, -1, 4))
    scores = functional.one_hot(labels, nc + 1)[..., :nc].to(gt_boxes.dtype)
    return labels, boxes, scores


def _topk_mask(metric: Tensor, k: int, largest: bool) -> Tensor:
    """(…, N) 0/1: the ``k`` largest (smallest) entries along the last axis."""
    index = torch.topk(metric, k, dim=-1, largest=largest).indices
    return functional.one_hot(index, metric.shape[-1]).sum(-2).to(metric.dtype)


@torch.no_grad()
def task_aligned(
    scores: Tensor,
    pred_boxes: Tensor,
    points: Tensor,
    gt_labels: Tensor,
    gt_boxes: Tensor,
    gt_mask: Tensor,
    nc: int,
) -> Assigned:
    """TAL. ``scores`` (B, N, nc) probabilities, ``pred_boxes`` (B, N, 4) pixels, ``points``
    (N, 2) cell centres in pixels, ``gt_labels`` (B, n, 1) long, ``gt_mask`` (B, n, 1)."""
    ious = batch_iou(gt_boxes, pred_boxes)
    class_scores = torch.gather(
        scores.transpose(1, 2), 1, gt_labels.expand(-1, -1, scores.shape[1])
    )
    metric = class_scores.pow(TAL_ALPHA) * ious.pow(TAL_BETA)
    inside = points_inside(points, gt_boxes)
    k = min(TAL_TOPK, metric.shape[-1])  # the public code needs >= 13 cells
    in_topk = _topk_mask(metric * inside, k, largest=True) * gt_mask
    positive = _resolve(in_topk * inside * gt_mask, ious)
    labels, boxes, one_hot = _labels(positive, gt_labels, gt_boxes, nc)
    metric = metric * positive
    max_metric = metric.max(-1, keepdim=True).values
    max_iou = (ious * positive).max(-1, keepdim=True).values
    soft = (metric / (max_metric + 1e-9) * max_iou).max(-2).values.unsqueeze(-1)
    return Assigned(labels, boxes, one_hot * soft, positive)


def anchor_boxes(points: Tensor, stride: Tensor) -> Tensor:
    """ATSS anchors (N, 4): a square of ``ANCHOR_SCALE`` strides at each cell centre."""
    half = (ANCHOR_SCALE * stride * 0.5)[:, None]
    return torch.cat((points - half, points + half), 1)


@torch.no_grad()
def atss(
    anchors: Tensor,
    level_cells: list[int],
    pred_boxes: Tensor,
    gt_labels: Tensor,
    gt_boxes: Tensor,
    gt_mask: Tensor,
    nc: int,
) -> Assigned:
    """ATSS. ``anchors`` (N, 4) from ``anchor_boxes``, ``level_cells`` the cells per level in
    the order of ``anchors``; the rest as ``task_aligned``."""
    batch, n_gt = gt_boxes.shape[:2]
    ious = batch_iou(gt_boxes.reshape(1, -1, 4), anchors[None], eps=1e-10).reshape(batch, n_gt, -1)
    gt_centre = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2
    anchor_centre = (anchors[:, :2] + anchors[:, 2:]) / 2
    distance = (gt_centre.unsqueeze(2) - anchor_centre[None, None]).norm(2, dim=-1)
    in_topk, chosen, start = [], [], 0
    for count in level_cells:
        part = distance[..., start : start + count]
        k = min(ATSS_TOPK, count)  # the public code needs >= 9 cells per level
        index = torch.topk(part, k, dim=-1, largest=False).indices
        chosen.append(index + start)
        in_topk.append(functional.one_hot(index, count).sum(-2).to(ious.dtype) * gt_mask)
        start += count
    in_topk_all = torch.cat(in_topk, -1)
    candidates = ious * in_topk_all
    picked = torch.gather(candidates, 2, torch.cat(chosen, -1))
    threshold = picked.mean(-1, keepdim=True) + picked.std(-1, keepdim=True)
    in_topk_all = torch.where(candidates > threshold, in_topk_all, torch.zeros_like(in_topk_all))
    inside = points_inside(anchor_centre, gt_boxes)
    positive = _resolve(in_topk_all * inside * gt_mask, ious)
    labels, boxes, one_hot = _labels(positive, gt_labels, gt_boxes, nc)
    pred_iou = (batch_iou(gt_boxes, pred_boxes) * positive).max(-2).values.unsqueeze(-1)
    return Assigned(labels, boxes, one_hot * pred_iou, positive)
