"""The PP-YOLOE head family (Xu et al. 2022): ET-head decode with distribution focal
regression, the Task-Aligned / ATSS assigners (``task_aligned.py``) and the loss of
PaddleDetection's ``PPYOLOEHead.get_loss``, with its recipe.

Decode, per cell (centre p = (grid index + 0.5), in strides; raw [4 x (reg_max + 1) distance
bins, classes]): each side's distance is the softmax of its bins . (0, 1, ..., reg_max) (the
integral), the box (p - left/top, p + right/bottom) x stride; classes through a sigmoid.
PP-YOLOE has no objectness: the NMS reads it as 1 (one class: the class probability).

Loss over the batch, with S = the sum of the soft class targets (at least 1):

- classes: varifocal loss (alpha 0.75, gamma 2) of the probabilities against the assigner's
  soft scores, summed, / S;
- box: GIoU loss of the positives (in strides) weighted by their soft score, / S, x 2.5;
- DFL: cross-entropy of each side's bins against the two bins around the target distance
  (clipped to reg_max - 0.01), weighted linearly, mean over sides, x soft score, / S, x 0.5.

The assigner is ATSS for the first third of the epochs (the public config: 100 of 300) and
Task-Aligned after. ``items`` report [2.5 GIoU + 0.5 DFL, 0, classes, total]; the trainer's
loss is the total x batch / 64 (as for YOLOX: the public per-batch mean at a nominal 64).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional

from scaling_lab.train.heads import HeadFamily, prediction_convs, prior_bias, register_head
from scaling_lab.train.heads.grid import cells, flatten_maps, level_sizes, level_strides, targets_px
from scaling_lab.train.heads.task_aligned import Assigned, anchor_boxes, atss, task_aligned

WEIGHTS = {"cls": 1.0, "iou": 2.5, "dfl": 0.5}
VFL_ALPHA, VFL_GAMMA = 0.75, 2.0
NOMINAL_BATCH = 64
STATIC_EPOCHS_FRACTION = 100 / 300  # ATSS before Task-Aligned (ppyoloe_crn.yml)


def reg_max_of(model: nn.Module) -> int:
    """reg_max from the head's output channels: 4 x (reg_max + 1) + nc."""
    graph = model.layer_graph
    channels = graph[graph.output.inputs[0]].shape.c
    return (channels - int(graph.meta["nc"])) // 4 - 1


def distances(raw_bins: Tensor, reg_max: int) -> Tensor:
    """(..., 4 x (reg_max + 1)) bin logits -> (..., 4) expected distances (the integral)."""
    bins = raw_bins.reshape(*raw_bins.shape[:-1], 4, reg_max + 1).softmax(-1)
    project = torch.arange(reg_max + 1, device=raw_bins.device, dtype=bins.dtype)
    return bins @ project


def boxes_from(centre: Tensor, ltrb: Tensor) -> Tensor:
    """Corners from centres and (left, top, right, bottom) distances, same units."""
    return torch.cat((centre - ltrb[..., :2], centre + ltrb[..., 2:]), -1)


def decode(model: nn.Module, raw: Tensor, img_hw: tuple[int, int]) -> Tensor:
    """Eval output (B, N, 4 (reg_max + 1) + nc) -> (B, N, 5 + nc) [cx, cy, w, h, 1, classes]."""
    strides, reg_max = level_strides(model), reg_max_of(model)
    cell_xy, stride = cells(level_sizes(img_hw, strides), strides, raw.device)
    n_bins = 4 * (reg_max + 1)
    corners = boxes_from(cell_xy + 0.5, distances(raw[..., :n_bins], reg_max)) * stride[:, None]
    xywh = torch.cat(
        ((corners[..., :2] + corners[..., 2:]) / 2, corners[..., 2:] - corners[..., :2]), -1
    )
    probs = raw[..., n_bins:].sigmoid()
    obj = probs if probs.shape[-1] == 1 else torch.ones_like(probs[..., :1])
    return torch.cat((xywh, obj, probs), -1)


def pad_targets(gts: Tensor, batch: int) -> tuple[Tensor, Tensor, Tensor]:
    """Pixel targets (N, 6) -> labels (B, n, 1), corner boxes (B, n, 4) and a mask (B, n, 1)."""
    counts = [int((gts[:, 0] == b).sum()) for b in range(batch)]
    n = max([*counts, 0])
    labels = torch.zeros(batch, n, 1, dtype=torch.long, device=gts.device)
    boxes = torch.zeros(batch, n, 4, device=gts.device)
    mask = torch.zeros(batch, n, 1, device=gts.device)
    for b, count in enumerate(counts):
        mine = gts[gts[:, 0] == b]
        labels[b, :count, 0] = mine[:, 1].long()
        boxes[b, :count] = torch.cat(
            (mine[:, 2:4] - mine[:, 4:6] / 2, mine[:, 2:4] + mine[:, 4:6] / 2), 1
        )
        mask[b, :count] = 1.0
    return labels, boxes, mask


class PpyoloeLoss:
    """PP-YOLOE's loss (module docstring); ``static`` picks ATSS (``set_epoch``)."""

    def __init__(self, model: nn.Module | None, hyp: dict, **settings: Any) -> None:
        """Without a model, ``strides``, ``nc`` and ``reg_max`` must be given (tests)."""
        if model is not None:
            self.strides, self.reg_max = level_strides(model), reg_max_of(model)
            self.nc = int(model.layer_graph.meta["nc"])
        else:
            self.strides, self.nc = tuple(settings["strides"]), int(settings["nc"])
            self.reg_max = int(settings["reg_max"])
        self.static = False

    def set_epoch(self, epoch: int, epochs: int) -> None:
        """ATSS in the first third of the run (100 of 300 epochs), Task-Aligned after."""
        self.static = epoch < round(epochs * STATIC_EPOCHS_FRACTION)

    def __call__(
        self, outputs: list[Tensor], targets: Tensor, images: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``outputs``: training-mode maps (B, 4 (reg_max + 1) + nc, H, W) per level."""
        parts = self.losses(outputs, targets, images)
        box = WEIGHTS["iou"] * parts["iou"] + WEIGHTS["dfl"] * parts["dfl"]
        cls = WEIGHTS["cls"] * parts["cls"]
        total = box + cls
        items = torch.stack((box, torch.zeros_like(box), cls, total)).detach()
        return total * outputs[0].shape[0] / NOMINAL_BATCH, items

    def losses(self, outputs: list[Tensor], targets: Tensor, images: Tensor) -> dict[str, Tensor]:
        """The public terms, unweighted: ``cls``, ``iou``, ``dfl``; and ``assigned``."""
        with torch.autocast(outputs[0].device.type, enabled=False):
            raw = flatten_maps(outputs).float()
            sizes = [(int(m.shape[-2]), int(m.shape[-1])) for m in outputs]
            cell_xy, stride = cells(sizes, self.strides, raw.device)
            n_bins = 4 * (self.reg_max + 1)
            centre_s = cell_xy + 0.5  # cell centres in strides
            pred_s = boxes_from(centre_s, distances(raw[..., :n_bins], self.reg_max))
            scores = raw[..., n_bins:].sigmoid()
            gts = targets_px(targets.to(raw.device), images)
            assigned = self.assign(scores, pred_s, centre_s, stride, sizes, gts)
            parts = self._terms(raw[..., :n_bins], scores, pred_s, centre_s, stride, assigned)
        return {**parts, "assigned": assigned}  # type: ignore[dict-item]

    def assign(
        self,
        scores: Tensor,
        pred_s: Tensor,
        centre_s: Tensor,
        stride: Tensor,
        sizes: list[tuple[int, int]],
        gts: Tensor,
    ) -> Assigned:
        """The positives and soft targets of the batch (pixels in, pixels out)."""
        labels, boxes, mask = pad_targets(gts, scores.shape[0])
        pred_px = pred_s.detach() * stride[:, None]
        points = centre_s * stride[:, None]
        if labels.shape[1] == 0:
            empty = torch.zeros(scores.shape[0], 0, scores.shape[1], device=scores.device)
            bg = torch.full(scores.shape[:2], self.nc, dtype=torch.long, device=scores.device)
            return Assigned(bg, torch.zeros_like(pred_px), torch.zeros_like(scores), empty)
        if self.static:
            counts = [h * w for h, w in sizes]
            return atss(anchor_boxes(points, stride), counts, pred_px, labels, boxes, mask, self.nc)
        return task_aligned(scores.detach(), pred_px, points, labels, boxes, mask, self.nc)

    def _terms(
        self,
        bins: Tensor,
        scores: Tensor,
        pred_s: Tensor,
        centre_s: Tensor,
        stride: Tensor,
        assigned: Assigned,
    ) -> dict[str, Tensor]:
        one_hot = functional.one_hot(assigned.labels, self.nc + 1)[..., : self.nc].float()
        weight = VFL_ALPHA * scores.pow(VFL_GAMMA) * (1 - one_hot) + assigned.scores * one_hot
        cls = (weighted_bce(scores, assigned.scores) * weight).sum()
        score_sum = assigned.scores.sum().clamp(min=1.0)
        positive = assigned.labels != self.nc
        if not bool(positive.any()):
            zero = bins.sum() * 0.0
            return {"cls": cls / score_sum, "iou": zero, "dfl": zero}
        target_s = assigned.boxes / stride[:, None]
        box_weight = assigned.scores.sum(-1)[positive]
        giou = giou_loss(pred_s[positive], target_s[positive])
        ltrb = torch.cat((centre_s - target_s[..., :2], target_s[..., 2:] - centre_s), -1)
        ltrb = ltrb.clamp(0, self.reg_max - 0.01)[positive]
        dfl = dfl_loss(bins[positive].reshape(-1, 4, self.reg_max + 1), ltrb)
        return {
            "cls": cls / score_sum,
            "iou": (giou * box_weight).sum() / score_sum,
            "dfl": (dfl * box_weight).sum() / score_sum,
        }


def weighted_bce(prob: Tensor, target: Tensor) -> Tensor:
    """Elementwise BCE of probabilities, logs clamped at -100 (as torch's and Paddle's); written
    out because the varifocal weight carries gradient, as in PaddleDetection."""
    log_p = torch.log(prob).clamp(min=-100)
    log_not_p = torch.log(1 - prob).clamp(min=-100)
    return -(target * log_p + (1 - target) * log_not_p)


def giou_loss(pred: Tensor, target: Tensor, eps: float = 1e-10) -> Tensor:
    """1 - GIoU of corner boxes, row by row (PaddleDetection's GIoULoss)."""
    top_left = torch.maximum(pred[:, :2], target[:, :2])
    bottom_right = torch.minimum(pred[:, 2:], target[:, 2:])
    overlap = (bottom_right - top_left).clamp(min=0).prod(-1)
    area_p = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])
    area_t = (target[:, 2] - target[:, 0]) * (target[:, 3] - target[:, 1])
    union = area_p + area_t - overlap + eps
    hull = torch.maximum(pred[:, 2:], target[:, 2:]) - torch.minimum(pred[:, :2], target[:, :2])
    hull_area = hull[:, 0] * hull[:, 1] + eps
    return 1 - (overlap / union - (hull_area - union) / hull_area)


def dfl_loss(bins: Tensor, target: Tensor) -> Tensor:
    """Distribution focal loss (Li et al. 2020) of (P, 4, reg_max + 1) logits against (P, 4)
    distances: the two neighbouring bins, weighted by closeness, mean over the sides."""
    left = target.floor().long()
    weight_left = (left + 1).float() - target
    logits = bins.reshape(-1, bins.shape[-1])
    ce_left = functional.cross_entropy(logits, left.reshape(-1), reduction="none").view_as(target)
    ce_right = functional.cross_entropy(logits, (left + 1).reshape(-1), reduction="none").view_as(
        target
    )
    return (ce_left * weight_left + ce_right * (1 - weight_left)).mean(-1)


# The public PP-YOLOE-S recipe (configs/ppyoloe: optimizer_300e.yml, ppyoloe_reader.yml), in
# the trainer's keys: lr 0.01, momentum 0.9, weight decay 5e-4, 5 warm-up epochs from 0, no
# mosaic or mixup (random distort, expand, crop, flip only).
RECIPE = {
    "lr0": 0.01,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "warmup_epochs": 5.0,
    "warmup_bias_lr": 0.0,
    "mosaic": 0.0,
    "mixup": 0.0,
    "paste_in": 0.0,
}

PRIOR_PROB = 0.01


@torch.no_grad()
def init_head(model: nn.Module) -> None:
    """The public head's start (``PPYOLOEHead._init_weights``): the class and distance
    predictions with zero weights, class biases at the logit of 0.01, distance biases 1. Per
    level the lowering emits the class, then the distance conv."""
    convs = prediction_convs(model)
    for i in range(0, len(convs), 2):
        cls, reg = convs[i], convs[i + 1]
        for conv, bias in ((cls, prior_bias(PRIOR_PROB)), (reg, 1.0)):
            conv.weight.zero_()
            conv.bias.fill_(bias)


PPYOLOE = register_head(
    HeadFamily(
        name="ppyoloe",
        block_types=("ppyoloe_head",),
        loss=PpyoloeLoss,
        init=init_head,
        decode=decode,
        recipe=RECIPE,
    )
)
