"""Label assignment for YOLOv7 heads: a YOLO centre prior narrowed by a dynamic-k match on
the predictions (the "SimOTA" step of YOLOX, as the YOLOv7 reference uses it; §4.2).

Two rules, both vectorized over the whole batch (loops over pyramid levels, never over images
or targets; the reference rule also over its few tied rows, see Ties): ``assign_reference``
(``assign="reference"`` in the loss), the reference's rule, and ``assign``
(``assign="own_prior"``), where each target competes only for its own prior. ``AssignRule``
sets the prior (3 or 5 cells) and the dynamic-k pool (top 10 or 20 IoUs).

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
from torch.nn import functional

from scaling_lab.train.box_ops import box_iou

# (dx, dy): centre cell, left, up, right, down
OFFSETS = ((0, 0), (-1, 0), (0, -1), (1, 0), (0, 1))
IOU_COST_WEIGHT = 3.0
PROB_EPS = 1e-7


@dataclass(frozen=True)
class AssignRule:
    """How one set of labels is made: the centre prior and the dynamic-k pool."""

    neighbours: int  # 3: centre cell + its 2 nearest neighbours; 5: centre cell + all 4
    topk_iou: int  # dynamic k from the sum of this many best IoUs
    # False: every candidate of the prior is positive, no cost-based selection (the
    # reference's ``loss_ota: 0``, its YOLOv5-style ``ComputeLoss``)
    dynamic: bool = True

    def __post_init__(self) -> None:
        if self.neighbours not in (3, 5):
            raise ValueError(f"AssignRule: neighbours must be 3 or 5, got {self.neighbours}")
        if self.topk_iou < 1:
            raise ValueError(f"AssignRule: topk_iou must be >= 1, got {self.topk_iou}")


FINE = AssignRule(neighbours=3, topk_iou=10)  # the lead head's labels (fine)
COARSE = AssignRule(neighbours=5, topk_iou=20)  # relaxed: the auxiliary head's extra positives


@dataclass(frozen=True)
class Candidates:
    """Every target's candidate slots. Slot order is (level, anchor, offset)."""

    level: Tensor  # (K,) level of each slot
    anchor: Tensor  # (K,) anchor of each slot
    gi: Tensor  # (T, K) cell column (clamped into the grid where invalid)
    gj: Tensor  # (T, K) cell row
    valid: Tensor  # (T, K) bool: the anchor fits and the cell is part of the prior


@dataclass(frozen=True)
class Assignment:
    """Positives: one entry per assigned (prediction, target). ``assign`` lists every
    prediction at most once; ``assign_reference`` keeps the reference's repeats."""

    target: Tensor  # (P,) row in the targets tensor
    image: Tensor  # (P,)
    level: Tensor  # (P,)
    anchor: Tensor  # (P,)
    gj: Tensor  # (P,) cell row
    gi: Tensor  # (P,) cell column
    key: Tensor  # (P,) unique id of the prediction (image, level, anchor, cell)

    def __len__(self) -> int:
        return int(self.target.shape[0])

    @classmethod
    def empty(cls, device: torch.device) -> Assignment:
        z = torch.zeros(0, dtype=torch.long, device=device)
        return cls(z, z, z, z, z, z, z)

    def select(self, index: Tensor) -> Assignment:
        """The positives at ``index`` (a mask or indices)."""
        return Assignment(*(getattr(self, f.name)[index] for f in fields(self)))

    def cells(self) -> set[tuple[int, int, int, int, int]]:
        """(image, level, anchor, gj, gi) of every positive (for tests and inspection)."""
        rows = torch.stack((self.image, self.level, self.anchor, self.gj, self.gi), 1)
        return {tuple(r) for r in rows.tolist()}


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


def gather_predictions(
    maps: list[Tensor], image: Tensor, level: Tensor, anchor: Tensor, gj: Tensor, gi: Tensor
) -> Tensor:
    """Raw outputs (P, 5 + nc) of the predictions at (image, level, anchor, gj, gi)."""
    out = maps[0].new_empty(image.shape[0], maps[0].shape[-1])
    for index, pmap in enumerate(maps):
        at = level == index
        out[at] = pmap[image[at], anchor[at], gj[at], gi[at]]
    return out


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


def prediction_keys(
    image: Tensor, level: Tensor, anchor: Tensor, gj: Tensor, gi: Tensor, maps: list[Tensor]
) -> Tensor:
    """A unique integer per prediction: its flat index in the concatenated level maps."""
    device = image.device
    b, na = maps[0].shape[:2]
    hs = torch.tensor([m.shape[2] for m in maps], device=device)
    ws = torch.tensor([m.shape[3] for m in maps], device=device)
    sizes = b * na * hs * ws
    start = torch.cumsum(sizes, 0) - sizes
    h, w = hs[level], ws[level]
    return start[level] + ((image * na + anchor) * h + gj) * w + gi


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


def _xyxy(xywh: Tensor) -> Tensor:
    """(cx, cy, w, h) -> (x1, y1, x2, y2), the reference's arithmetic."""
    half = xywh[..., 2:4] / 2
    return torch.cat((xywh[..., :2] - half, xywh[..., :2] + half), -1)


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
    boxes = _xyxy(torch.cat((pxy, pwh), 1))[inverse]  # (V, 4)
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
    iou = _pairwise_iou(_xyxy(tgt[..., 2:6] * scale), pred_box)  # (B, R, C)
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
