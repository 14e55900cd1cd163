"""Box geometry for the loss and the label assigners: IoU and CIoU of boxes given as
(cx, cy, w, h), elementwise with broadcasting (no pairwise matrices: callers line boxes up).

CIoU (Zheng et al., "Distance-IoU Loss", AAAI 2020):

    CIoU = IoU - rho^2 / c^2 - alpha * v
    v     = 4 / pi^2 * (atan(w_gt / h_gt) - atan(w / h))^2
    alpha = v / (1 - IoU + v)

with rho the distance between the centres and c the diagonal of the smallest box enclosing
both. As in the YOLOv5/YOLOv7 recipe, ``alpha`` is a constant for the gradient (computed
under ``no_grad``), so only the distance and aspect terms themselves carry gradients.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scaling_lab.nn.postprocess import xywh_corners

EPS = 1e-7


def _inter_union(a: Tensor, b: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    (a1, a2), (b1, b2) = xywh_corners(a), xywh_corners(b)
    overlap = (torch.minimum(a2, b2) - torch.maximum(a1, b1)).clamp(min=0)
    inter = overlap[..., 0] * overlap[..., 1]
    union = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter + eps
    return inter, union


def box_iou(a: Tensor, b: Tensor, eps: float = EPS) -> Tensor:
    """IoU of boxes ``a`` and ``b`` (..., 4) in (cx, cy, w, h), broadcast elementwise."""
    inter, union = _inter_union(a, b, eps)
    return inter / union


def box_ciou(pred: Tensor, target: Tensor, eps: float = EPS) -> Tensor:
    """Complete IoU of ``pred`` against ``target`` (..., 4) in (cx, cy, w, h), elementwise.

    In [-1.5, 1]: equal boxes give 1; the loss is ``1 - CIoU``.
    """
    inter, union = _inter_union(pred, target, eps)
    iou = inter / union
    (p1, p2), (t1, t2) = xywh_corners(pred), xywh_corners(target)
    enclose = torch.maximum(p2, t2) - torch.minimum(p1, t1)
    diag2 = enclose[..., 0] ** 2 + enclose[..., 1] ** 2 + eps
    rho2 = ((pred[..., :2] - target[..., :2]) ** 2).sum(-1)
    v = (4 / math.pi**2) * (
        torch.atan(target[..., 2] / (target[..., 3] + eps))
        - torch.atan(pred[..., 2] / (pred[..., 3] + eps))
    ) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / diag2 + alpha * v)
