"""Label assignment for YOLOv7 heads: a YOLO centre prior narrowed by a dynamic-k match on
the predictions (the "SimOTA" step of YOLOX, as the YOLOv7 reference uses it; §4.2).

Two rules, both vectorized over the whole batch, each in its own module:
``assign_reference.assign_reference`` (``assign="reference"`` in the loss), the reference's
rule, and ``assign_own_prior.assign`` (``assign="own_prior"``), where each target competes
only for its own prior. This module holds what both share: ``AssignRule`` sets the prior (3
or 5 cells) and the dynamic-k pool (top 10 or 20 IoUs), ``Assignment`` is the positives
either returns, and both gather and key the predictions the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

IOU_COST_WEIGHT = 3.0  # cost = class cost + IOU_COST_WEIGHT * -log(IoU + 1e-8)


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


def gather_predictions(
    maps: list[Tensor], image: Tensor, level: Tensor, anchor: Tensor, gj: Tensor, gi: Tensor
) -> Tensor:
    """Raw outputs (P, 5 + nc) of the predictions at (image, level, anchor, gj, gi)."""
    out = maps[0].new_empty(image.shape[0], maps[0].shape[-1])
    for index, pmap in enumerate(maps):
        at = level == index
        out[at] = pmap[image[at], anchor[at], gj[at], gi[at]]
    return out


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
