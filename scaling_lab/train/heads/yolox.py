"""The YOLOX head family (Ge et al. 2021): anchor-free decode of the decoupled head, SimOTA
(``simota.py``) and the loss of the public code (Megvii-BaseDetection/YOLOX 0.3.0,
``YOLOXHead.get_losses``), with its recipe.

Decode, per cell (grid index g, stride s; raw [tx, ty, tw, th, obj, classes]):
centre = (t_xy + g) * s, size = exp(t_wh) * s, objectness and classes through a sigmoid.

Loss over the batch, with F the number of positives (at least 1):

- box: ``5 x sum(1 - IoU^2) / F`` between the positives' boxes and their targets;
- objectness: BCE of every cell's logit against 1 at positives, 0 elsewhere, summed, / F;
- classes: BCE of the positives' logits against one-hot x the positive's IoU (detached), / F;
- L1 (the last epochs without augmentation: 15 of 300, scaled to the run's epochs): |raw box
  - (centre / s - g, log(size / s + 1e-8))| summed over the positives' 4 values, / F.

``items`` report [5 x IoU + L1, objectness, classes, total] as the public code sums them. The
trainer's loss is that total x batch / 64: with the trainer's accumulation to a nominal batch
of 64, one optimizer step then follows the gradient of the public code's batch-64 mean.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional

from scaling_lab.train.heads import HeadFamily, prediction_convs, prior_bias, register_head
from scaling_lab.train.heads.grid import cells, flatten_maps, level_sizes, level_strides, targets_px
from scaling_lab.train.heads.simota import CURRENT, LEGACY, Match, simota

REG_WEIGHT = 5.0
NOMINAL_BATCH = 64
L1_EPOCHS_FRACTION = 15 / 300  # the public recipe's no-augmentation epochs: 15 of 300


def decode_boxes(raw: Tensor, cell_xy: Tensor, stride: Tensor) -> Tensor:
    """Raw box columns (..., N, 4) -> (cx, cy, w, h) pixels."""
    s = stride[:, None].to(raw.dtype)
    return torch.cat(((raw[..., :2] + cell_xy.to(raw.dtype)) * s, torch.exp(raw[..., 2:4]) * s), -1)


def decode(model: nn.Module, raw: Tensor, img_hw: tuple[int, int]) -> Tensor:
    """Eval output (B, N, 5 + nc) raw -> boxes in pixels, objectness and class probabilities."""
    strides = level_strides(model)
    cell_xy, stride = cells(level_sizes(img_hw, strides), strides, raw.device)
    if cell_xy.shape[0] != raw.shape[1]:
        raise ValueError(f"YOLOX decode: {raw.shape[1]} cells, the levels give {cell_xy.shape[0]}")
    return torch.cat((decode_boxes(raw, cell_xy, stride), raw[..., 4:].sigmoid()), -1)


def l1_epochs(epochs: int) -> int:
    """Epochs at the end of a run of ``epochs`` that add the L1 term and train on plain
    images (the public trainer's ``no_aug_epochs``: mosaic, mixup and affine closed)."""
    return round(epochs * L1_EPOCHS_FRACTION)


class YoloxLoss:
    """YOLOX's loss (module docstring); ``use_l1`` switches the L1 term on (``set_epoch``)."""

    def __init__(self, model: nn.Module | None, hyp: dict, **settings: Any) -> None:
        """``settings`` the trainer passes for other heads are ignored; without a model,
        ``strides`` and ``nc`` must be given (tests). ``hyp['simota_legacy']`` 1 takes the
        centre prior of YOLOX 0.1-0.2 (``simota.LEGACY``), 0 (the default) 0.3.0's."""
        if model is not None:
            self.strides = level_strides(model)
            self.nc = int(model.layer_graph.meta["nc"])
        else:
            self.strides, self.nc = tuple(settings["strides"]), int(settings["nc"])
        self.use_l1 = False
        self.prior = LEGACY if hyp.get("simota_legacy", 0) else CURRENT

    def set_epoch(self, epoch: int, epochs: int) -> None:
        """The L1 term in the run's last ``l1_epochs(epochs)`` epochs, as the public trainer."""
        self.use_l1 = epoch >= epochs - l1_epochs(epochs)

    def __call__(
        self, outputs: list[Tensor], targets: Tensor, images: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``outputs``: training-mode maps (B, 5 + nc, H, W) per level; ``targets`` (N, 6)
        normalized. Returns (loss for the trainer, detached [box, obj, cls, total])."""
        parts = self.losses(outputs, targets, images)
        box = parts["iou"] + parts["l1"]
        total = box + parts["obj"] + parts["cls"]
        items = torch.stack((box, parts["obj"], parts["cls"], total)).detach()
        return total * outputs[0].shape[0] / NOMINAL_BATCH, items

    def losses(self, outputs: list[Tensor], targets: Tensor, images: Tensor) -> dict[str, Tensor]:
        """The public code's terms: ``iou`` (x 5), ``obj``, ``cls``, ``l1`` and ``num_fg``;
        in float32 outside autocast (SimOTA's BCE of probabilities refuses CUDA autocast)."""
        with torch.autocast(outputs[0].device.type, enabled=False):
            raw = flatten_maps(outputs).float()
            sizes = [(int(m.shape[-2]), int(m.shape[-1])) for m in outputs]
            cell_xy, stride = cells(sizes, self.strides, raw.device)
            boxes = decode_boxes(raw[..., :4], cell_xy, stride)
            gts = targets_px(targets.to(raw.device), images)
            matches = self.assign(raw, boxes, gts, cell_xy, stride)
            return self._terms(raw, boxes, gts, matches, cell_xy, stride)

    def assign(
        self, raw: Tensor, boxes: Tensor, gts: Tensor, cell_xy: Tensor, stride: Tensor
    ) -> list[Match]:
        """SimOTA positives of each image of the batch."""
        out = []
        for b in range(raw.shape[0]):
            mine = gts[gts[:, 0] == b]
            if len(mine) == 0:
                empty = torch.zeros(0, dtype=torch.long, device=raw.device)
                out.append(Match(empty, empty, raw.new_zeros(0)))
                continue
            out.append(
                simota(
                    boxes[b].detach(),
                    raw[b, :, 5:].detach(),
                    raw[b, :, 4:5].detach(),
                    mine[:, 2:6],
                    mine[:, 1],
                    cell_xy,
                    stride,
                    prior=self.prior,
                )
            )
        return out

    def _terms(
        self,
        raw: Tensor,
        boxes: Tensor,
        gts: Tensor,
        matches: list[Match],
        cell_xy: Tensor,
        stride: Tensor,
    ) -> dict[str, Tensor]:
        obj_target = torch.zeros_like(raw[..., 4])
        pred, target, raw_box, cls_logit, cls_target, cells_pos = [], [], [], [], [], []
        for b, match in enumerate(matches):
            mine = gts[gts[:, 0] == b]
            obj_target[b, match.cell] = 1.0
            pred.append(boxes[b, match.cell])
            raw_box.append(raw[b, match.cell, :4])
            cls_logit.append(raw[b, match.cell, 5:])
            gt = mine[match.target]
            target.append(gt[:, 2:6])
            one_hot = functional.one_hot(gt[:, 1].long(), self.nc).float()
            cls_target.append(one_hot * match.iou[:, None])
            cells_pos.append(match.cell)
        n_fg = max(sum(len(m.cell) for m in matches), 1)
        pred_t, target_t = torch.cat(pred), torch.cat(target)
        iou_loss = REG_WEIGHT * (1 - _iou_elementwise(pred_t, target_t) ** 2).sum() / n_fg
        obj = functional.binary_cross_entropy_with_logits(raw[..., 4], obj_target, reduction="sum")
        cls = functional.binary_cross_entropy_with_logits(
            torch.cat(cls_logit), torch.cat(cls_target), reduction="sum"
        )
        l1 = raw.new_zeros(())
        if self.use_l1:
            index = torch.cat(cells_pos)
            s, g = stride[index][:, None], cell_xy[index]
            l1_target = torch.cat(
                (target_t[:, :2] / s - g, torch.log(target_t[:, 2:] / s + 1e-8)), 1
            )
            l1 = (torch.cat(raw_box) - l1_target).abs().sum() / n_fg
        return {
            "iou": iou_loss,
            "obj": obj / n_fg,
            "cls": cls / n_fg,
            "l1": l1,
            "num_fg": torch.tensor(n_fg),
        }


def _iou_elementwise(a: Tensor, b: Tensor) -> Tensor:
    """IoU of row i of ``a`` with row i of ``b`` (cx, cy, w, h), the public IoU loss's form."""
    top_left = torch.max(a[:, :2] - a[:, 2:] / 2, b[:, :2] - b[:, 2:] / 2)
    bottom_right = torch.min(a[:, :2] + a[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2)
    overlaps = (top_left < bottom_right).to(a.dtype).prod(dim=1)
    inter = torch.prod(bottom_right - top_left, 1) * overlaps
    union = torch.prod(a[:, 2:], 1) + torch.prod(b[:, 2:], 1) - inter
    return inter / (union + 1e-16)


# The public YOLOX-S recipe (exps/default/yolox_s.py and yolox_base.py), in the trainer's keys:
# lr 0.01 per 64 images, momentum 0.9, weight decay 5e-4, 5 warm-up epochs, cosine to 5% of
# lr, mosaic and mixup always, rotation 10 degrees, translate 0.1, shear 2, flips 0.5.
RECIPE = {
    "lr0": 0.01,
    "lrf": 0.05,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "warmup_epochs": 5.0,
    "mixup": 1.0,
    "degrees": 10.0,
    "translate": 0.1,
    "shear": 2.0,
    "simota_legacy": 0.0,  # 1: the SimOTA centre prior of YOLOX 0.1-0.2 (simota.LEGACY)
}

PRIOR_PROB = 0.01


@torch.no_grad()
def init_head(model: nn.Module) -> None:
    """The public head's start (``YOLOXHead.initialize_biases``): class and objectness biases
    at the logit of 0.01. Per level the lowering emits the class, box, objectness convs."""
    convs = prediction_convs(model)
    for i in range(0, len(convs), 3):
        for conv in (convs[i], convs[i + 2]):
            conv.bias.fill_(prior_bias(PRIOR_PROB))


YOLOX = register_head(
    HeadFamily(
        name="yolox",
        block_types=("yolox_head",),
        loss=YoloxLoss,
        init=init_head,
        decode=decode,
        recipe=RECIPE,
        plain_epochs=l1_epochs,
    )
)
