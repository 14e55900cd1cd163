"""The YOLOv7 training loss: lead head, and the auxiliary head of §4.2 (Fig. 5, Tables 6-8).

``assign`` picks the label assignment (``assign.py``); by default the default recipe's
(``recipe.default_assign()``: ``"reference"``), the same rule as ``lab train``:

- ``"reference"``: the reference's (WongKinYiu/yolov7): ``ComputeLossOTA``'s without
  auxiliary maps; with them (and ``aux_weight > 0``) ``ComputeLossAuxOTA``'s, whose lead
  head's dynamic k takes the top 20 IoUs and whose auxiliary head gets the coarse labels
  alone (5-cell prior, top 20 IoUs, from the lead predictions). A prediction the reference
  makes positive twice counts twice in the box and class means. On identical inputs the
  positives are the reference's and the loss equals its loss up to float rounding
  (``tests/train/test_reference_assign.py``). ``aux_assigner`` ``lead_guided`` and
  ``independent`` work as below with the reference's rule; the explicit upper bound
  (``aux_constraint``) is not applied: the reference has none.
- ``"own_prior"``: each target within its own prior, each prediction positive
  at most once, and the auxiliary rules below, with the deviations listed at the end.

Per head and level, on the positives of the head's label assignment:

- box: ``1 - CIoU`` between the decoded prediction and the target, in grid units of the
  level, averaged over the level's positives;
- objectness: BCE over every prediction of the level; the target is 0 except at positives,
  where it is the prediction's CIoU with its target (detached, clamped at 0: the reference
  uses the CIoU, not the plain IoU, for this soft label), times the level's balance
  ([4.0, 1.0, 0.4] for 3 levels, [4.0, 1.0, 0.25, 0.06] for 4);
- classes (only when nc > 1): BCE of the positives' class logits against the one-hot class
  (label smoothing optional), averaged over positives and classes.

The three sums are scaled by ``hyp['box']``, ``hyp['obj']``, ``hyp['cls']`` and the total is
multiplied by the batch size, as the reference does. The gains are used as given: the
reference's train.py first rescales them for the number of levels, classes and the image
size, and so does the trainer here (``scaling_lab.train.recipe_fit.scale_loss_gains``).

Auxiliary head (models built with ``aux_detect``; training mode returns the lead maps, then
the auxiliary maps of the same levels). ``aux_assigner`` (as written for ``own_prior``):

- ``independent`` (Fig. 5c): the auxiliary head gets its own assignment, computed from its
  own predictions with the lead head's rule (3-cell prior, dynamic k from the top 10 IoUs);
- ``lead_guided`` (Fig. 5d): the auxiliary head gets exactly the lead head's positives
  (same predictions, same targets);
- ``coarse_to_fine`` (Fig. 5e): fine labels (the lead assignment) for the lead head; coarse
  labels for the auxiliary head: the union of the fine positives and a relaxed assignment
  also computed from the *lead* predictions with the 5-cell prior and dynamic k from the top
  20 IoUs. The union keeps the fine target where both assign a prediction, so the coarse
  positives are always a superset of the fine ones.

In every mode an auxiliary positive's objectness target is the *auxiliary* prediction's own
CIoU (the reference's rule: the labels tell which predictions and which targets, each head
regresses its own IoU). The auxiliary box, objectness and class terms are weighted by
``aux_weight`` (0.25).

Upper-bound constraint (``aux_constraint``, Table 7). The paper caps the objectness a coarse
positive can reach by its distance from the object centre, so that the extra coarse cells
"cannot produce soft label perfectly". The rule used here: with ``d`` the Chebyshev
distance, in cells of the level, between the target centre and the centre of the positive's
cell, the auxiliary objectness target becomes ``min(CIoU, clamp(2 - d, 0, 1))``. The head's
decoder moves a box centre at most one cell from its cell centre (xy offset in (-0.5, 1.5)),
so ``d <= 1`` is a cell that can reach the target centre and keeps its target; beyond that
the cap falls linearly, to 0.5 at the farthest 5-prior cell (``d = 1.5``). The 3-cell prior
only has cells with ``d <= 1``, so fine positives are never capped (the fine labels' upper
bound stays above the coarse labels'), and with the ``independent`` and ``lead_guided``
assigners the flag changes nothing. The reference implementation has no explicit rule: there
the bound comes only from the decoder's limited reach.

Partial auxiliary head (E-ELAN, Table 8): which feature map the auxiliary head reads (one
cardinality group before the merge) is a matter of the model graph, not of this loss.

Deviations of ``own_prior`` from the reference (WongKinYiu/yolov7
``ComputeLossOTA``/``ComputeLossAuxOTA``), besides those of the assignment listed in
``assign.py``:

- the reference's auxiliary-head loss uses the top 20 IoUs for the lead head's dynamic k as
  well; here the lead head always uses 10 (as ``ComputeLossOTA``), and only the coarse
  labels use 20 (``fine_topk``/``coarse_topk`` change them);
- the reference trains the auxiliary head on the relaxed assignment alone; here the coarse
  labels are its union with the fine ones, so that every fine positive is also a coarse one
  (a larger candidate pool can push a fine positive out of a target's k cheapest or hand its
  prediction to another target: with random predictions about 15% of the fine positives are
  missing from the relaxed set alone);
- the reference's auxiliary loss has only the coarse-to-fine mode; ``independent``,
  ``lead_guided`` and the explicit constraint follow the paper's descriptions;
- losses are computed in float32 whatever the dtype of the outputs (mixed precision).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional

from scaling_lab.errors import UserError
from scaling_lab.ops.modules import Detect
from scaling_lab.train.assign import COARSE, FINE, Assignment, AssignRule
from scaling_lab.train.assign_own_prior import assign, union
from scaling_lab.train.assign_reference import assign_reference
from scaling_lab.train.box_ops import box_ciou
from scaling_lab.train.choices import ASSIGN_MODES, AUX_ASSIGNERS, AssignMode
from scaling_lab.train.recipe import default_assign

REFERENCE_AUX_TOPK = 20  # ComputeLossAuxOTA: the lead head's dynamic k from 20 IoUs too
BALANCE = {3: (4.0, 1.0, 0.4)}
BALANCE_DEFAULT = (4.0, 1.0, 0.25, 0.06, 0.02)
FOCAL_ALPHA = 0.25


def find_detect(model: nn.Module) -> Detect:
    """The model's YOLO head (the last ``Detect`` module)."""
    heads = [m for m in model.modules() if isinstance(m, Detect)]
    if not heads:
        raise UserError(
            "the YOLOv7 loss trains models with an anchor-based YOLO head (a Detect: "
            "blocks detect / aux_detect); this model has none"
        )
    return heads[-1]


def objectness_balance(n_levels: int) -> tuple[float, ...]:
    """Weight of each level's objectness loss (small stride first), as the reference."""
    if n_levels in BALANCE:
        return BALANCE[n_levels]
    if n_levels > len(BALANCE_DEFAULT):
        raise ValueError(f"YoloV7Loss: no objectness balance for {n_levels} levels")
    return BALANCE_DEFAULT[:n_levels]


def bce_loss(logits: Tensor, target: Tensor, pos_weight: Tensor, gamma: float) -> Tensor:
    """Mean BCE with logits; with ``gamma > 0`` the focal form (alpha 0.25)."""
    loss = functional.binary_cross_entropy_with_logits(
        logits, target, pos_weight=pos_weight, reduction="none"
    )
    if gamma > 0:
        p = logits.sigmoid()
        p_t = target * p + (1 - target) * (1 - p)
        alpha = target * FOCAL_ALPHA + (1 - target) * (1 - FOCAL_ALPHA)
        loss = loss * alpha * (1.0 - p_t) ** gamma
    return loss.mean()


class YoloV7Loss:
    """YOLOv7 loss with dynamic label assignment and an optional auxiliary head (see the
    module docstring for the exact rules)."""

    def __init__(
        self,
        model: nn.Module,
        hyp: dict,
        *,
        aux_assigner: str = "coarse_to_fine",
        aux_constraint: bool = True,
        aux_weight: float = 0.25,
        fine_topk: int | None = None,
        coarse_topk: int = COARSE.topk_iou,
        assign: AssignMode | None = None,
    ) -> None:
        if aux_assigner not in AUX_ASSIGNERS:
            raise ValueError(
                f"YoloV7Loss: aux_assigner must be one of {AUX_ASSIGNERS}, got {aux_assigner!r}"
            )
        assign = default_assign() if assign is None else assign
        if assign not in ASSIGN_MODES:
            raise ValueError(f"YoloV7Loss: assign must be one of {ASSIGN_MODES}, got {assign!r}")
        missing = [k for k in ("box", "obj", "cls", "cls_pw", "obj_pw", "anchor_t") if k not in hyp]
        if missing:
            raise KeyError(f"YoloV7Loss: hyp lacks {missing}")
        self.detect = find_detect(model)
        self.hyp = dict(hyp)
        self.nc, self.n_levels = self.detect.nc, self.detect.n_levels
        self.has_aux = len(self.detect.aux) > 0
        self.balance = objectness_balance(self.n_levels)
        self.aux_assigner, self.aux_constraint = aux_assigner, aux_constraint
        self.aux_weight = float(aux_weight)
        self.assign = assign
        self.fine_topk = fine_topk
        # the reference's loss_ota: 1 = dynamic (OTA) label assignment, 0 = every prior candidate
        self.dynamic = bool(hyp.get("loss_ota", 1))
        fine_k = FINE.topk_iou if fine_topk is None else fine_topk
        self.fine = AssignRule(FINE.neighbours, fine_k, self.dynamic)
        self.coarse = AssignRule(COARSE.neighbours, coarse_topk, self.dynamic)
        self.anchor_t = float(hyp["anchor_t"])
        self.gamma = float(hyp.get("fl_gamma", 0.0))
        eps = float(hyp.get("label_smoothing", 0.0))
        self.cls_pos, self.cls_neg = 1.0 - 0.5 * eps, 0.5 * eps

    def __call__(
        self, outputs: list[Tensor], targets: Tensor, images: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``outputs``: the model's training-mode maps (lead levels, then auxiliary levels);
        ``targets`` (N, 6) [image, class, cx, cy, w, h] normalized to the input; ``images``
        the input batch (only its size is used). Returns (total x batch size, detached
        [box, obj, cls, total])."""
        lead, aux = self._split(outputs)
        px, strides, anchors = self._geometry(lead[0].device, targets, images)
        labels = self._labels(lead, aux, targets, images, px, strides, anchors)
        box, obj, cls, _ = self._head(lead, labels["lead"], px, strides, anchors, cap=False)
        if aux:
            cap = self._capped()
            terms = self._head(aux, labels["aux"], px, strides, anchors, cap=cap)[:3]
            box, obj, cls = (x + self.aux_weight * y for x, y in zip((box, obj, cls), terms))
        box, obj, cls = box * self.hyp["box"], obj * self.hyp["obj"], cls * self.hyp["cls"]
        total = box + obj + cls
        batch = lead[0].shape[0]
        return total * batch, torch.stack((box, obj, cls, total)).detach()

    @torch.no_grad()
    def objectness_targets(
        self, outputs: list[Tensor], targets: Tensor, images: Tensor
    ) -> dict[str, list[Tensor]]:
        """The soft objectness targets the loss uses, per head (``'lead'``, ``'aux'``) and
        level, each (B, na, H, W): for inspection (Fig. 8) and tests."""
        lead, aux = self._split(outputs)
        px, strides, anchors = self._geometry(lead[0].device, targets, images)
        labels = self._labels(lead, aux, targets, images, px, strides, anchors)
        out = {"lead": self._head(lead, labels["lead"], px, strides, anchors, cap=False)[3]}
        if aux:
            cap = self._capped()
            out["aux"] = self._head(aux, labels["aux"], px, strides, anchors, cap=cap)[3]
        return out

    def _split(self, outputs: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        if isinstance(outputs, Tensor) or not all(o.dim() == 5 for o in outputs):
            raise ValueError("YoloV7Loss: expects the training-mode list of (B, na, H, W, C) maps")
        n = self.n_levels
        if len(outputs) == n:
            return list(outputs), []
        if len(outputs) == 2 * n:
            return list(outputs[:n]), list(outputs[n:])
        raise ValueError(f"YoloV7Loss: expected {n} or {2 * n} output maps, got {len(outputs)}")

    def _geometry(
        self, device: torch.device, targets: Tensor, images: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Targets in input pixels, strides and anchors (pixels) on ``device``."""
        h, w = images.shape[-2:]
        scale = torch.tensor([w, h, w, h], device=device, dtype=torch.float32)
        targets = targets.to(device=device, dtype=torch.float32).reshape(-1, 6)
        px = torch.cat((targets[:, :2], targets[:, 2:6] * scale), 1)
        strides = self.detect.stride.to(device).float()
        anchors = self.detect.anchors.to(device).float()
        return px, strides, anchors

    def _capped(self) -> bool:
        """Whether the auxiliary objectness targets get the explicit upper bound."""
        return self.aux_constraint and self.assign == "own_prior"

    def assign_labels(
        self, lead: list[Tensor], aux: list[Tensor], targets: Tensor, images: Tensor
    ) -> dict[str, Assignment]:
        """Positives of the lead head (``'lead'``) and, with auxiliary maps, of the auxiliary
        head (``'aux'``); ``targets`` (N, 6) normalized, ``images`` the batch (its size)."""
        px, strides, anchors = self._geometry(lead[0].device, targets, images)
        return self._labels(lead, aux, targets, images, px, strides, anchors)

    def _labels(
        self,
        lead: list[Tensor],
        aux: list[Tensor],
        targets: Tensor,
        images: Tensor,
        targets_px: Tensor,
        strides: Tensor,
        anchors: Tensor,
    ) -> dict[str, Assignment]:
        if self.assign == "reference":
            return self._reference_labels(lead, aux, targets, images, strides, anchors)
        t = self.anchor_t
        fine = assign(lead, targets_px, strides, anchors, t, self.fine)
        labels = {"lead": fine}
        if aux:
            if self.aux_assigner == "independent":
                labels["aux"] = assign(aux, targets_px, strides, anchors, t, self.fine)
            elif self.aux_assigner == "lead_guided":
                labels["aux"] = fine
            else:
                relaxed = assign(lead, targets_px, strides, anchors, t, self.coarse)
                labels["aux"] = union(fine, relaxed)
        return labels

    def _reference_labels(
        self,
        lead: list[Tensor],
        aux: list[Tensor],
        targets: Tensor,
        images: Tensor,
        strides: Tensor,
        anchors: Tensor,
    ) -> dict[str, Assignment]:
        """The reference's labels: ``ComputeLossOTA``'s without an auxiliary head, and with
        one (``aux_weight > 0``) ``ComputeLossAuxOTA``'s (lead dynamic k from 20 IoUs)."""
        trains_aux = bool(aux) and self.aux_weight > 0
        topk = REFERENCE_AUX_TOPK if trains_aux else FINE.topk_iou
        if self.fine_topk is not None:
            topk = self.fine_topk
        fine = AssignRule(FINE.neighbours, topk, self.dynamic)
        img_hw = (int(images.shape[-2]), int(images.shape[-1]))
        targets = targets.to(device=lead[0].device, dtype=torch.float32).reshape(-1, 6)

        def run(maps: list[Tensor], rule: AssignRule) -> Assignment:
            return assign_reference(maps, targets, img_hw, strides, anchors, self.anchor_t, rule)

        labels = {"lead": run(lead, fine)}
        if aux:
            if self.aux_assigner == "independent":
                labels["aux"] = run(aux, fine)
            elif self.aux_assigner == "lead_guided":
                labels["aux"] = labels["lead"]
            else:
                labels["aux"] = run(lead, self.coarse)
        return labels

    def _head(
        self,
        maps: list[Tensor],
        labels: Assignment,
        targets_px: Tensor,
        strides: Tensor,
        anchors: Tensor,
        *,
        cap: bool,
    ) -> tuple[Tensor, Tensor, Tensor, list[Tensor]]:
        """(box, obj, cls) loss sums of one head and its objectness targets per level."""
        device = maps[0].device
        zero = torch.zeros((), device=device)
        box, obj, cls = zero, zero, zero
        obj_pw = torch.tensor([self.hyp["obj_pw"]], device=device, dtype=torch.float32)
        cls_pw = torch.tensor([self.hyp["cls_pw"]], device=device, dtype=torch.float32)
        counts = labels.level.bincount(minlength=len(maps)).tolist() if len(labels) else []
        tobjs = []
        for level, pmap in enumerate(maps):
            tobj = torch.zeros(pmap.shape[:4], device=device, dtype=torch.float32)
            if counts and counts[level]:
                pos = labels.select(labels.level == level)
                b, a, gj, gi = pos.image, pos.anchor, pos.gj, pos.gi
                ps = pmap[b, a, gj, gi].float()
                stride = strides[level]
                cell = torch.stack((gi, gj), 1).float()
                target = targets_px[pos.target]
                pred_xy = ps[:, :2].sigmoid() * 2 - 0.5
                pred_wh = (ps[:, 2:4].sigmoid() * 2) ** 2 * anchors[level, a] / stride
                centre = target[:, 2:4] / stride  # grid units
                target_box = torch.cat((centre - cell, target[:, 4:6] / stride), 1)
                ciou = box_ciou(torch.cat((pred_xy, pred_wh), 1), target_box)
                box = box + (1.0 - ciou).mean()
                soft = ciou.detach().clamp(min=0)
                if cap:
                    soft = torch.minimum(soft, coarse_upper_bound(centre, cell))
                tobj[b, a, gj, gi] = soft
                if self.nc > 1:
                    tcls = torch.full_like(ps[:, 5:], self.cls_neg)
                    rows = torch.arange(len(pos), device=device)
                    tcls[rows, target[:, 1].long()] = self.cls_pos
                    cls = cls + bce_loss(ps[:, 5:], tcls, cls_pw, self.gamma)
            level_obj = bce_loss(pmap[..., 4].float(), tobj, obj_pw, self.gamma)
            obj = obj + level_obj * self.balance[level]
            tobjs.append(tobj)
        return box, obj, cls, tobjs


def coarse_upper_bound(centre: Tensor, cell: Tensor) -> Tensor:
    """Cap on the auxiliary objectness target: ``clamp(2 - d, 0, 1)``, ``d`` the Chebyshev
    distance in cells between the target centre and the centre of the cell (both (P, 2),
    grid units; ``cell`` is the cell's corner index)."""
    d = (centre - (cell + 0.5)).abs().amax(-1)
    return (2.0 - d).clamp(0.0, 1.0)
