"""The YOLO ``Detect`` head family (YOLOv7, and the anchor-based YOLOv4/v5/R heads that share
it): ``YoloV7Loss`` with its assigners (``train/loss.py``, unchanged), the reference's gain
scaling, and the head's own decode (``Detect`` decodes in eval mode)."""

from __future__ import annotations

from scaling_lab.train.heads import HeadFamily, register_head
from scaling_lab.train.loss import YoloV7Loss
from scaling_lab.train.recipe_fit import scale_loss_gains


def _fit_gains(hyp: dict, *, n_levels: int, nc: int, img_size: int) -> dict:
    return scale_loss_gains(hyp, n_levels=n_levels, nc=nc, img_size=img_size)


YOLOV7 = register_head(
    HeadFamily(
        name="yolov7",
        block_types=("detect", "aux_detect"),
        loss=YoloV7Loss,
        decode=None,
        fit_gains=_fit_gains,
    )
)
