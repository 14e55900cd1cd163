"""The own-prior label assignment (``assign="own_prior"`` in the loss): each target competes
only for its own prior. ``assign_reference`` holds the reference's rule; ``assign`` what
both share.

Own-prior rule (``assign``):

1. **Candidates** (centre prior). For every target and every level, each anchor whose shape
   fits the target (``max(w/a_w, a_w/w, h/a_h, a_h/h) < anchor_t``) offers the cell holding
   the target centre plus neighbouring cells:

   - ``neighbours=3`` (fine labels): the nearer horizontal and the nearer vertical neighbour
     (left if the centre lies in the left half of its cell, right if in the right half, and
     likewise up/down), i.e. the 3 cells nearest to the centre;
   - ``neighbours=5`` (coarse labels): all four neighbours.

   Neighbours outside the grid are dropped. A slot is (level, anchor, offset); every target
   has ``K = levels * anchors * 5`` slots and a ``valid`` mask.

2. **Dynamic k**: ``k = max(1, int(sum of the top-n IoUs))`` between the target and the
   boxes its candidates predict (n = 10 for fine labels, 20 for coarse ones).

3. **Cost** per (target, candidate): ``BCE(sqrt(sigmoid(cls) * sigmoid(obj)), one_hot)``
   summed over classes, plus ``3 * -log(IoU + 1e-8)``. Each target takes its ``k``
   cheapest candidates.

4. **One target per prediction**: a prediction (image, level, anchor, cell) chosen by several
   targets keeps only the cheapest one.

Its deviations from the reference rule:

- The reference pools the candidates of all targets of an image, so a target may also be
  matched to (and take its top-k IoUs from) cells in another target's prior. Here a target
  only competes for its own prior: the cost is a (targets, K) matrix for the whole batch
  instead of one (targets, candidates of the image) matrix per image. For isolated objects
  the two agree (other priors have IoU 0 with the target); they differ only for overlapping
  objects.
- The reference keeps duplicate columns (the same prediction reached from two targets'
  priors, or twice through the clamped centre cell), so a prediction can end up positive for
  two targets, or twice for one; here step 4 works on the prediction itself, so every
  prediction is positive at most once.
- The reference's neighbour test works on the unclamped coordinate (``gx > 1``,
  ``(W - gx) % 1 < g``): it doubles the centre cell of a centre on a cell border or on the
  image border and drops the neighbour of a centre exactly one cell from the border; here a
  neighbour is kept exactly when it lies inside the grid, and each cell comes once.
- The reference builds the cost with the image height for x and y (square inputs); here x
  uses the width and y the height, so rectangular inputs work.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

from scaling_lab.train.assign import (
    IOU_COST_WEIGHT,
    Assignment,
    AssignRule,
    gather_predictions,
    prediction_keys,
)
from scaling_lab.train.box_ops import box_iou

# (dx, dy): centre cell, left, up, right, down
OFFSETS = ((0, 0), (-1, 0), (0, -1), (1, 0), (0, 1))
PROB_EPS = 1e-7


@dataclass(frozen=True)
class Candidates:
    """Every target's candidate slots. Slot order is (level, anchor, offset)."""

    level: Tensor  # (K,) level of each slot
    anchor: Tensor  # (K,) anchor of each slot
    gi: Tensor  # (T, K) cell column (clamped into the grid where invalid)
    gj: Tensor  # (T, K) cell row
    valid: Tensor  # (T, K) bool: the anchor fits and the cell is part of the prior


def candidate_cells(
    centres: Tensor,
    sizes: Tensor,
    grids: list[tuple[int, int]],
    strides: Tensor,
    anchors: Tensor,
    anchor_t: float,
    neighbours: int,
) -> Candidates:
    """The centre prior of T targets.

    ``centres`` and ``sizes`` (T, 2) are in input pixels; ``grids`` the (H, W) of each level;
    ``strides`` (L,); ``anchors`` (L, na, 2) in input pixels.
    """
    device = centres.device
    n_targets, (n_levels, na) = centres.shape[0], anchors.shape[:2]
    offsets = torch.tensor(OFFSETS, device=device)  # (5, 2)
    gis, gjs, valids = [], [], []
    for level, (h, w) in enumerate(grids):
        g = centres / strides[level]
        cell = g.floor()
        frac = g - cell
        limit = torch.tensor([w - 1, h - 1], device=device)
        cell = torch.minimum(cell.long().clamp(min=0), limit)
        cells = cell[:, None, :] + offsets  # (T, 5, 2)
        inside = ((cells >= 0) & (cells <= limit)).all(-1)
        if neighbours == 3:
            ones = torch.ones_like(frac[:, 0], dtype=torch.bool)
            near = (ones, frac[:, 0] < 0.5, frac[:, 1] < 0.5, frac[:, 0] > 0.5, frac[:, 1] > 0.5)
            inside = inside & torch.stack(near, 1)
        ratio = sizes[:, None, :] / anchors[level]  # (T, na, 2)
        fits = torch.maximum(ratio, 1 / ratio).amax(-1) < anchor_t  # (T, na)
        valid = fits[:, :, None] & inside[:, None, :]  # (T, na, 5)
        cells = torch.minimum(cells.clamp(min=0), limit)
        gis.append(cells[:, None, :, 0].expand(-1, na, -1).reshape(n_targets, -1))
        gjs.append(cells[:, None, :, 1].expand(-1, na, -1).reshape(n_targets, -1))
        valids.append(valid.reshape(n_targets, -1))
    per_level = na * len(OFFSETS)
    level = torch.arange(n_levels, device=device).repeat_interleave(per_level)
    anchor = torch.arange(na, device=device).repeat_interleave(len(OFFSETS)).repeat(n_levels)
    return Candidates(level, anchor, torch.cat(gis, 1), torch.cat(gjs, 1), torch.cat(valids, 1))


def decode_boxes(raw: Tensor, gi: Tensor, gj: Tensor, stride: Tensor, anchor_wh: Tensor) -> Tensor:
    """Predicted (cx, cy, w, h) in input pixels, the head's decoder: xy = (2 s - 0.5 + cell)
    * stride, wh = (2 s)^2 * anchor, s the sigmoid of the raw output."""
    xy = (raw[..., :2].sigmoid() * 2 - 0.5 + torch.stack((gi, gj), -1)) * stride[..., None]
    wh = (raw[..., 2:4].sigmoid() * 2) ** 2 * anchor_wh
    return torch.cat((xy, wh), -1)


def dynamic_k(ious: Tensor, topk: int) -> Tensor:
    """(T,) positives per target: int(sum of its ``topk`` best IoUs), at least 1."""
    if ious.shape[1] == 0:
        return torch.ones(ious.shape[0], dtype=torch.long, device=ious.device)
    best = ious.topk(min(topk, ious.shape[1]), dim=1).values
    return best.sum(1).long().clamp(min=1)


def class_cost(obj_logit: Tensor, cls_logits: Tensor, cls: Tensor) -> Tensor:
    """BCE of ``y = sqrt(sigmoid(cls) * sigmoid(obj))`` against the target's one-hot class,
    summed over classes: ``sum_c -log(1 - y_c) + log(1 - y_k) - log(y_k)``.

    ``obj_logit`` (...), ``cls_logits`` (..., nc), ``cls`` (...) the target class (broadcast).
    """
    y = (cls_logits.sigmoid() * obj_logit.sigmoid()[..., None]).sqrt()
    y = y.clamp(PROB_EPS, 1 - PROB_EPS)
    neg = -torch.log1p(-y)
    index = cls.expand(obj_logit.shape)[..., None]
    y_k, neg_k = y.gather(-1, index)[..., 0], neg.gather(-1, index)[..., 0]
    return neg.sum(-1) - neg_k - torch.log(y_k)


def lowest_k(cost: Tensor, k: Tensor) -> Tensor:
    """(T, K) bool: the ``k[t]`` cheapest slots of each row (ties: lower slot first)."""
    order = cost.argsort(dim=1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(cost.shape[1], device=cost.device).expand_as(order))
    return ranks < k[:, None]


def first_per_key(key: Tensor, priority: Tensor) -> Tensor:
    """Indices keeping, for every distinct ``key``, the entry of lowest ``priority`` (ties:
    the earlier entry)."""
    order = priority.argsort(stable=True)
    order = order[key[order].argsort(stable=True)]
    sorted_keys = key[order]
    first = torch.ones_like(sorted_keys, dtype=torch.bool)
    first[1:] = sorted_keys[1:] != sorted_keys[:-1]
    return order[first]


@torch.no_grad()
def assign(
    maps: list[Tensor],
    targets: Tensor,
    strides: Tensor,
    anchors: Tensor,
    anchor_t: float,
    rule: AssignRule,
) -> Assignment:
    """Positives of one head from its (or another head's) raw level maps.

    ``maps``: L tensors (B, na, H, W, 5 + nc); ``targets`` (T, 6) [image, class, cx, cy, w, h]
    in input pixels; ``strides`` (L,); ``anchors`` (L, na, 2) in input pixels.
    """
    device = maps[0].device
    if targets.shape[0] == 0:
        return Assignment.empty(device)
    targets = targets.to(device=device, dtype=torch.float32)
    image, cls = targets[:, 0].long(), targets[:, 1].long()
    grids = [(m.shape[2], m.shape[3]) for m in maps]
    strides, anchors = strides.float(), anchors.float()
    cand = candidate_cells(
        targets[:, 2:4], targets[:, 4:6], grids, strides, anchors, anchor_t, rule.neighbours
    )
    # work on the valid (target, slot) pairs only, then back to (T, K) for the per-target
    # top-k steps
    t, slot = cand.valid.nonzero(as_tuple=True)
    level, anchor = cand.level[slot], cand.anchor[slot]
    gj, gi = cand.gj[t, slot], cand.gi[t, slot]
    raw = gather_predictions(maps, image[t], level, anchor, gj, gi).float()  # (V, 5 + nc)
    boxes = decode_boxes(raw, gi, gj, strides[level], anchors[level, anchor])
    iou = box_iou(targets[t, 2:6], boxes)
    cost = class_cost(raw[:, 4], raw[:, 5:], cls[t]) - IOU_COST_WEIGHT * torch.log(iou + 1e-8)
    ious = torch.zeros(cand.valid.shape, device=device)
    ious[t, slot] = iou
    costs = torch.full(cand.valid.shape, float("inf"), device=device)
    costs[t, slot] = cost
    if rule.dynamic:
        chosen = lowest_k(costs, dynamic_k(ious, rule.topk_iou))[t, slot]
        t, level, anchor, gj, gi, cost = (x[chosen] for x in (t, level, anchor, gj, gi, cost))
    key = prediction_keys(image[t], level, anchor, gj, gi, maps)
    keep = first_per_key(key, cost)
    return Assignment(t, image[t], level, anchor, gj, gi, key).select(keep)


def union(primary: Assignment, extra: Assignment) -> Assignment:
    """Positives of either; a prediction in both keeps ``primary``'s target."""
    names = [f.name for f in fields(Assignment)]
    both = Assignment(*(torch.cat((getattr(primary, n), getattr(extra, n))) for n in names))
    priority = torch.cat((torch.zeros_like(primary.key), torch.ones_like(extra.key)))
    return both.select(first_per_key(both.key, priority))
