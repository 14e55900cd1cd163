"""The training recipe (hyper-parameters) of the paper's reference implementation, per size.

Values transcribed from the reference's ``data/hyp.scratch.{tiny,p5,p6}.yaml``: the edge-GPU
model (YOLOv7-tiny) trains with weaker augmentation and a stronger classification/objectness
gain; P5 (YOLOv7, YOLOv7-X) and P6 (W6/E6/D6/E6E) share one recipe except for the final
learning-rate fraction. The paper (§5.1 and appendix) trains every model from scratch on COCO.
"""

from __future__ import annotations

from scaling_lab.data.errors import DataError

# Shared by every size; each size below overrides a few of these.
_COMMON: dict[str, float] = {
    # optimizer: SGD with Nesterov momentum, one-cycle (cosine) schedule from lr0 to lr0 * lrf
    "lr0": 0.01,
    "lrf": 0.1,
    "momentum": 0.937,
    "weight_decay": 0.0005,
    # warmup: linear ramps over the first epochs (bias lr falls from warmup_bias_lr to lr0)
    "warmup_epochs": 3.0,
    "warmup_momentum": 0.8,
    "warmup_bias_lr": 0.1,
    # loss gains: box (1 - IoU), classification BCE, objectness BCE, and BCE positive weights
    "box": 0.05,
    "cls": 0.3,
    "cls_pw": 1.0,
    "obj": 0.7,
    "obj_pw": 1.0,
    "iou_t": 0.20,  # IoU training threshold (unused by the anchor-ratio assigner)
    "anchor_t": 4.0,  # a target matches an anchor when both wh ratios are below this
    "fl_gamma": 0.0,  # focal-loss gamma; 0 = plain BCE
    "label_smoothing": 0.0,
    # colour augmentation: random gains on hue, saturation, value (fractions)
    "hsv_h": 0.015,
    "hsv_s": 0.7,
    "hsv_v": 0.4,
    # geometric augmentation (random affine / perspective after the mosaic)
    "degrees": 0.0,  # rotation, +/- degrees
    "translate": 0.2,  # translation, +/- fraction of the image size
    "scale": 0.9,  # scale gain, 1 +/- this
    "shear": 0.0,  # shear, +/- degrees
    "perspective": 0.0,  # perspective, +/- fraction (0 to 0.001)
    "flipud": 0.0,  # probability of an up-down flip
    "fliplr": 0.5,  # probability of a left-right flip
    # sample composition
    "mosaic": 1.0,  # probability of a 4-image mosaic
    "mixup": 0.15,  # probability of blending two mosaics
    "copy_paste": 0.0,  # segment copy-paste (needs masks; not implemented here)
    "paste_in": 0.15,  # object paste-in of the reference (not implemented by the data loader)
    # label assignment: 1 = the paper's lead-guided OTA assigner (§4.2), 0 = plain YOLOv5-style
    "loss_ota": 1,
    # weight of the auxiliary heads' loss terms relative to the lead heads (P6 models)
    "aux_weight": 0.25,
}

_SIZES: dict[str, dict[str, float]] = {
    # YOLOv7-tiny: final lr fraction 0.01, cls/obj gains 0.5/1.0, milder scale/translate/mixup
    "tiny": {
        "lrf": 0.01,
        "cls": 0.5,
        "obj": 1.0,
        "translate": 0.1,
        "scale": 0.5,
        "mixup": 0.05,
        "paste_in": 0.05,
    },
    # YOLOv7 / YOLOv7-X
    "p5": {},
    # YOLOv7-W6 / E6 / D6 / E6E: the P5 recipe with a higher final lr fraction
    "p6": {"lrf": 0.2},
}


def default_hyp(model_size: str) -> dict:
    """The reference recipe for ``tiny``, ``p5`` or ``p6`` models, as a fresh dict."""
    key = model_size.lower()
    if key not in _SIZES:
        raise DataError(
            f"unknown model size '{model_size}' (expected one of: {', '.join(_SIZES)})",
            field="model_size",
        )
    return {**_COMMON, **_SIZES[key]}
