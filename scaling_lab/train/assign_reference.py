"""The reference's label assignment (``assign="reference"`` in the loss, the default).
``assign_own_prior`` holds the own-prior rule; ``assign`` what both share.

Reference rule (WongKinYiu/yolov7 ``ComputeLossOTA.build_targets`` with ``find_3_positive``;
``find_5_positive`` for the coarse labels of ``ComputeLossAuxOTA``); on identical inputs it
gives the reference's positives, with their multiplicity:

1. **Candidates.** Targets are in grid units (normalized coordinates times the level's grid
   size). Each anchor whose shape fits (``max(w/a_w, a_w/w, h/a_h, a_h/h) < anchor_t``, both
   in grid units) offers the centre cell and neighbours. 3-cell prior (``g = 0.5``): the left
   cell when ``gx % 1 < 0.5`` and ``gx > 1``, the right one when ``(W - gx) % 1 < 0.5`` and
   ``W - gx > 1``, likewise up and down; 5-cell prior (``g = 1``): left when ``gx > 1``, right
   when ``W - gx > 1``, ... A cell is ``int(gx -+ g)``, clamped into the grid, so a cell can
   come twice (a centre on a cell border, a clamped border box), and a prediction in two
   targets' priors is two candidates. Order: level, offset (centre, left, up, right, down),
   anchor, target, as the reference builds them.
2. **Pool per image.** Every target of an image is scored against every candidate of that
   image (all its targets' priors): a (images, targets, candidates) block, padded to the
   largest image and masked.
3. **Dynamic k** = ``max(1, int(sum of the top-n IoUs))`` over the image's candidates.
4. **Cost** = ``BCE(sqrt(sigmoid(cls) * sigmoid(obj)), one_hot)`` summed over classes (as
   ``sum_c BCE(x_c, 0) - x_k`` on the logit ``x`` of that score) ``+ 3 * -log(IoU + 1e-8)``,
   computed once per distinct prediction, so the copies of a prediction cost the same.
5. **Matching.** Each target takes its ``k`` cheapest candidates; a candidate taken by several
   targets goes to the image's target of lowest cost for it (over all targets of the image,
   as the reference's ``torch.min``). Candidates keep their multiplicity: a prediction reached
   twice can be positive twice (for one target or for two), and the loss counts it twice.

Ties. Equal costs come from copies of one prediction (step 4 makes them exactly equal), and
which copies a target takes matters when another target takes copies of the same prediction
(a copy taken by two targets goes to the cheaper one, a copy taken by one stays with it). The
reference takes a target's k cheapest with ``torch.topk(row, k, largest=False)``, whose choice
among equal values is its sort algorithm's (on CPU a partial sort or selection over the whole
row, on CUDA the lowest indices), so: a row whose k-th and (k+1)-th cheapest differ is decided
by value alone (one batched ``topk`` over the padded block); a row with equal costs across
its k boundary calls ``torch.topk`` on exactly the reference's row (the image's candidates,
in the reference's order, unpadded) with its own k, and so takes the same copies. Such rows
are few (about 30 of 240 targets, in about 15 calls grouped by image and k, at 30 boxes per
image, 640 px, batch 8): the one loop besides the levels. A candidate taken by several targets
goes to the first target (input order) of lowest cost, as the reference's ``torch.min``.
Costs are floats computed in another order than the reference's (a class sum, a padded
block), so two *different* predictions whose costs differ in the last bits could be ordered
differently; the recorded reference fixtures (``tests/fixtures/reference_assign``) and the
benchmark's agreement check show no such case.

Deviation: for non-square inputs the reference scales x by the image *height* when it builds
the cost; here x uses the width (identical for square inputs).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional

from scaling_lab.nn.postprocess import xywh_to_xyxy
from scaling_lab.train.assign import (
    IOU_COST_WEIGHT,
    Assignment,
    AssignRule,
    gather_predictions,
    prediction_keys,
)

# the reference's neighbour offsets, subtracted from the centre: centre, left, up, right, down
REFERENCE_OFFSETS = ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0))


def reference_candidates(
    targets: Tensor, grids: list[tuple[int, int]], anchors_grid: Tensor, anchor_t: float, g: float
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The reference's centre prior (``find_3_positive`` for ``g = 0.5``, ``find_5_positive``
    for ``g = 1``): flat (target, level, anchor, gj, gi) of every candidate, in the order
    level, offset, anchor, target.

    ``targets`` (T, 6) normalized; ``anchors_grid`` (L, na, 2) in grid units of each level.
    """
    device = targets.device
    offsets = torch.tensor(REFERENCE_OFFSETS, device=device) * g
    out = []
    for level, (h, w) in enumerate(grids):
        gain = torch.tensor([w, h], device=device, dtype=torch.float32)
        gxy, gwh = targets[:, 2:4] * gain, targets[:, 4:6] * gain
        ratio = gwh[None] / anchors_grid[level][:, None]  # (na, T, 2)
        fits = torch.maximum(ratio, 1.0 / ratio).amax(2) < anchor_t  # (na, T)
        gxi = gain - gxy
        low = (gxy % 1.0 < g) & (gxy > 1.0)  # left, up
        high = (gxi % 1.0 < g) & (gxi > 1.0)  # right, down
        ones = torch.ones_like(low[:, 0])
        use = torch.stack((ones, low[:, 0], low[:, 1], high[:, 0], high[:, 1]))  # (5, T)
        o, a, t = (use[:, None, :] & fits[None]).nonzero(as_tuple=True)
        cell = (gxy[t] - offsets[o]).long()
        gi, gj = cell[:, 0].clamp(0, w - 1), cell[:, 1].clamp(0, h - 1)
        out.append((t, torch.full_like(t, level), a, gj, gi))
    return tuple(torch.cat(parts) for parts in zip(*out))  # type: ignore[return-value]


def _pairwise_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of xyxy boxes ``a`` (..., N, 4) against ``b`` (..., M, 4): (..., N, M), without an
    epsilon (the reference's ``box_iou``)."""
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    low = torch.maximum(a[..., :, None, :2], b[..., None, :, :2])
    high = torch.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    inter = (high - low).clamp(min=0).prod(-1)
    return inter / (area_a[..., :, None] + area_b[..., None, :] - inter)


def _pad_index(group: Tensor, n_groups: int) -> tuple[Tensor, Tensor, int]:
    """For entries sorted by ``group``: their position within the group, the group sizes and
    the largest size."""
    counts = group.bincount(minlength=n_groups)
    start = torch.cumsum(counts, 0) - counts
    position = torch.arange(group.shape[0], device=group.device) - start[group]
    return position, counts, int(counts.max()) if group.numel() else 0


def _cheapest_k(cost: Tensor, k: Tensor, n_cols: Tensor) -> Tensor:
    """(B, R, C) bool: the ``k`` (B, R) cheapest of the first ``n_cols[b]`` columns of every
    row, as the reference's ``torch.topk(row, k, largest=False)`` takes them.

    The ``max(k) + 1`` cheapest of every row (``torch.topk``) decide every row whose k-th and
    (k+1)-th cheapest differ. A row with equal costs across its k boundary (copies of one
    prediction) calls ``torch.topk`` on exactly the reference's row (the image's candidates,
    unpadded) with its own ``k``, so that the copies it takes, and hence which copies another
    target can still take, are the reference's; such rows are few and are called in groups of
    one image and one ``k``.
    """
    n_images, n_rows, width = cost.shape
    flat, flat_k = cost.flatten(0, 1), k.flatten()
    chosen = torch.zeros(flat.shape, dtype=torch.bool, device=cost.device)
    k_max = int(flat_k.max()) if flat_k.numel() else 0
    if k_max == 0:
        return chosen.view(n_images, n_rows, width)
    m = min(k_max + 1, width)
    values, index = flat.topk(m, dim=1, largest=False)  # ascending
    chosen.scatter_(1, index, torch.arange(m, device=cost.device) < flat_k[:, None])
    row_cols = n_cols.repeat_interleave(n_rows)
    inside = (flat_k > 0) & (flat_k < row_cols) & (flat_k < m)
    if inside.any():
        at = flat_k.clamp(1, max(m - 1, 1))[:, None]
        last, after = values.gather(1, at - 1)[:, 0], values.gather(1, at)[:, 0]
        tied = (inside & (last == after)).nonzero()[:, 0]
        if tied.numel():
            groups = torch.stack((tied // n_rows, flat_k[tied]), 1)
            for image, kk in groups.unique(dim=0).tolist():
                rows = tied[(groups[:, 0] == image) & (groups[:, 1] == kk)]
                cols = int(n_cols[image])
                picked = flat[rows, :cols].topk(kk, dim=1, largest=False).indices
                chosen[rows] = False
                chosen[rows[:, None], picked] = True
    return chosen.view(n_images, n_rows, width)


@dataclass(frozen=True)
class _Pool:
    """The reference's candidates of a batch, grouped by image with the reference's order kept
    within an image: flat (V,) fields, and each candidate's column in its image's block."""

    t: Tensor  # (V,) row in the targets tensor of the target whose prior offered it
    level: Tensor
    anchor: Tensor
    gj: Tensor
    gi: Tensor
    image: Tensor
    col: Tensor  # (V,) column in its image's (B, C) block
    counts: Tensor  # (B,) candidates per image
    n_cols: int  # C: the most candidates of one image


def _reference_pool(
    targets: Tensor,
    targets_in: Tensor,
    grids: list[tuple[int, int]],
    anchors_grid: Tensor,
    anchor_t: float,
    rule: AssignRule,
    n_images: int,
) -> _Pool | None:
    """The candidates of the targets ``targets_in`` (step 1), pooled per image (step 2): the
    columns of the per-image cost blocks. None where no target has one."""
    g = 0.5 if rule.neighbours == 3 else 1.0
    t, level, anchor, gj, gi = reference_candidates(
        targets[targets_in], grids, anchors_grid, anchor_t, g
    )
    t = targets_in[t]
    if t.numel() == 0:
        return None
    image = targets[t, 0].long()
    order = image.argsort(stable=True)
    t, level, anchor, gj, gi, image = (x[order] for x in (t, level, anchor, gj, gi, image))
    col, counts, n_cols = _pad_index(image, n_images)
    return _Pool(t, level, anchor, gj, gi, image, col, counts, n_cols)


def _target_rows(image_of: Tensor, targets_in: Tensor, n_images: int) -> Tensor:
    """(B, R) the targets of every image in input order, -1 where padded: the rows of the
    per-image cost blocks (input order decides the reference's ``torch.min`` ties)."""
    rows_t = targets_in[image_of[targets_in].argsort(stable=True)]
    row, _, n_rows = _pad_index(image_of[rows_t], n_images)
    row_target = torch.full((n_images, n_rows), -1, dtype=torch.long, device=image_of.device)
    row_target[image_of[rows_t], row] = rows_t
    return row_target


def _score_predictions(
    maps: list[Tensor], pool: _Pool, key: Tensor, strides: Tensor, anchors_grid: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Each distinct prediction decoded and scored once, so that its copies cost exactly the
    same (step 4): the xyxy box of every candidate (V, 4), the class-score logits (U, nc) and
    their background cost (U,) of every distinct prediction, and each candidate's (V,)."""
    unique_key, inverse = key.unique(return_inverse=True)
    first = torch.full_like(unique_key, key.shape[0])
    first.scatter_reduce_(0, inverse, torch.arange(key.shape[0], device=key.device), "amin")
    u_level, u_anchor, u_gj, u_gi = (x[first] for x in (pool.level, pool.anchor, pool.gj, pool.gi))
    raw = gather_predictions(maps, pool.image[first], u_level, u_anchor, u_gj, u_gi).float()
    stride = strides[u_level][:, None]
    grid = torch.stack((u_gi, u_gj), 1)
    pxy = (raw[:, :2].sigmoid() * 2.0 - 0.5 + grid) * stride
    pwh = (raw[:, 2:4].sigmoid() * 2) ** 2 * anchors_grid[u_level, u_anchor] * stride
    boxes = xywh_to_xyxy(torch.cat((pxy, pwh), 1))[inverse]  # (V, 4)
    score = (raw[:, 5:].sigmoid() * raw[:, 4:5].sigmoid()).sqrt()
    logit = torch.log(score / (1 - score))  # (U, nc)
    background = functional.binary_cross_entropy_with_logits(
        logit, torch.zeros_like(logit), reduction="none"
    ).sum(-1)  # the class cost of a target, but for its own class's term
    return boxes, logit, background, inverse


def _candidate_blocks(
    pool: _Pool, boxes: Tensor, inverse: Tensor, n_images: int
) -> tuple[Tensor, Tensor, Tensor]:
    """The candidates laid out as (B, C) blocks, one row of columns per image: which columns
    are real, their predicted boxes (B, C, 4) and their distinct predictions."""
    shape = (n_images, pool.n_cols)
    col_valid = torch.zeros(shape, dtype=torch.bool, device=boxes.device)
    col_valid[pool.image, pool.col] = True
    pred_box = boxes.new_zeros(*shape, 4)
    pred_box[pool.image, pool.col] = boxes
    col_unique = torch.zeros(shape, dtype=torch.long, device=boxes.device)
    col_unique[pool.image, pool.col] = inverse
    return col_valid, pred_box, col_unique


def _reference_k(iou: Tensor, row_valid: Tensor, topk: int, n_cols: int) -> Tensor:
    """(B, R) dynamic k of every target (step 3): ``max(1, int(sum of its top IoUs))``, 0 for
    the padded rows."""
    top = iou.topk(min(topk, n_cols), dim=2).values
    k = top.sum(2).int().clamp(min=1)
    return torch.where(row_valid, k, torch.zeros((), dtype=k.dtype, device=k.device))


def _reference_cost(
    iou: Tensor,
    cls: Tensor,
    col_unique: Tensor,
    logit: Tensor,
    background: Tensor,
    pair_valid: Tensor,
) -> Tensor:
    """(B, R, C) cost of every (target, candidate) of an image (step 4), infinite where padded:
    the background class cost less the target class's logit, plus the weighted IoU cost."""
    own = logit[col_unique[:, None, :], cls[:, :, None]]  # (B, R, C): x_k of the target's class
    cost = background[col_unique][:, None, :] - own - IOU_COST_WEIGHT * torch.log(iou + 1e-8)
    return torch.where(pair_valid, cost, torch.full((), float("inf"), device=cost.device))


def _resolve_takers(
    chosen: Tensor, cost: Tensor, pool: _Pool, row_target: Tensor
) -> tuple[Tensor, Tensor]:
    """The positives of the chosen (B, R, C) block (step 5): (candidate, target) of every
    column taken, a column taken by several targets going to the first target of lowest cost
    (the reference's ``torch.min``), ordered by level as the reference's output."""
    n_images, _, n_cols = chosen.shape
    takers = chosen.sum(1)  # (B, C)
    cheapest = cost.argmin(1)
    owner = torch.where(takers > 1, cheapest, chosen.int().argmax(1))
    b, c = (takers > 0).nonzero(as_tuple=True)
    flat = torch.full((n_images, n_cols), -1, dtype=torch.long, device=chosen.device)
    flat[pool.image, pool.col] = torch.arange(pool.image.shape[0], device=chosen.device)
    index = flat[b, c]
    target = row_target[b, owner[b, c]]
    by_level = pool.level[index].argsort(stable=True)
    return index[by_level], target[by_level]


@torch.no_grad()
def assign_reference(
    maps: list[Tensor],
    targets: Tensor,
    img_hw: tuple[int, int],
    strides: Tensor,
    anchors: Tensor,
    anchor_t: float,
    rule: AssignRule,
) -> Assignment:
    """Positives of one head by the reference's rule (module docstring), from ``maps``' raw
    predictions: one entry per reference positive, in the reference's order (level, image,
    candidate), repeats kept.

    ``maps``: L tensors (B, na, H, W, 5 + nc); ``targets`` (T, 6) [image, class, cx, cy, w, h]
    *normalized*; ``img_hw`` the input's (height, width); ``strides`` (L,); ``anchors``
    (L, na, 2) in input pixels.
    """
    device = maps[0].device
    n_images = maps[0].shape[0]
    targets = targets.to(device=device, dtype=torch.float32).reshape(-1, 6)
    image_of = targets[:, 0].long()
    targets_in = ((image_of >= 0) & (image_of < n_images)).nonzero()[:, 0]
    if targets_in.numel() == 0:
        return Assignment.empty(device)
    strides = strides.to(device).float()
    anchors_grid = anchors.to(device).float() / strides[:, None, None]
    grids = [(m.shape[2], m.shape[3]) for m in maps]
    pool = _reference_pool(targets, targets_in, grids, anchors_grid, anchor_t, rule, n_images)
    if pool is None:
        return Assignment.empty(device)
    key = prediction_keys(pool.image, pool.level, pool.anchor, pool.gj, pool.gi, maps)
    if not rule.dynamic:  # ``loss_ota: 0``: every candidate (YOLOv5-style), repeats kept
        return Assignment(pool.t, pool.image, pool.level, pool.anchor, pool.gj, pool.gi, key)
    row_target = _target_rows(image_of, targets_in, n_images)
    row_valid = row_target >= 0
    tgt = targets[row_target.clamp(min=0)]  # (B, R, 6)
    boxes, logit, background, inverse = _score_predictions(maps, pool, key, strides, anchors_grid)
    col_valid, pred_box, col_unique = _candidate_blocks(pool, boxes, inverse, n_images)

    h, w = img_hw
    scale = torch.tensor([w, h, w, h], device=device, dtype=torch.float32)
    iou = _pairwise_iou(xywh_to_xyxy(tgt[..., 2:6] * scale), pred_box)  # (B, R, C)
    pair_valid = row_valid[:, :, None] & col_valid[:, None, :]
    iou = torch.where(pair_valid, iou, torch.zeros((), device=device))
    k = _reference_k(iou, row_valid, rule.topk_iou, pool.n_cols)
    cls = tgt[..., 1].long().clamp(0, logit.shape[1] - 1)  # (B, R)
    cost = _reference_cost(iou, cls, col_unique, logit, background, pair_valid)

    chosen = _cheapest_k(cost, k, pool.counts) & pair_valid
    index, target = _resolve_takers(chosen, cost, pool, row_target)
    return Assignment(
        target,
        *(x[index] for x in (pool.image, pool.level, pool.anchor, pool.gj, pool.gi, key)),
    )
