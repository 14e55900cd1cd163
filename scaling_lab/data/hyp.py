"""The training recipe (hyper-parameters) of the paper's reference implementation, per size.

Values transcribed from the reference's ``data/hyp.scratch.{tiny,p5,p6}.yaml``: the edge-GPU
model (YOLOv7-tiny) trains with weaker augmentation and a stronger classification/objectness
gain; P5 (YOLOv7, YOLOv7-X) and P6 (W6/E6/D6/E6E) share one recipe except for the final
learning-rate fraction. The paper (§5.1 and appendix) trains every model from scratch on COCO.
"""

from __future__ import annotations

import math
from pathlib import Path

from scaling_lab.data.errors import DataError
from scaling_lab.limits import MAX_TEXT_BYTES

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
    "iou_t": 0.20,  # read by nothing, in the reference too (only its evolve bounds name it)
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
    "scale": 0.9,  # scale gain from U(1 - scale, 1.1 + scale), as the reference draws it
    "shear": 0.0,  # shear, +/- degrees
    "perspective": 0.0,  # perspective, +/- fraction (0 to 0.001)
    "flipud": 0.0,  # probability of an up-down flip
    "fliplr": 0.5,  # probability of a left-right flip
    # sample composition
    "mosaic": 1.0,  # probability of a mosaic
    "mosaic9": 0.2,  # share of 9-image mosaics (hard-coded 0.2 in the reference; not in its files)
    "mixup": 0.15,  # probability of blending two mosaics
    "copy_paste": 0.0,  # per masked object: mirror it left-right within the mosaic
    "paste_in": 0.15,  # probability of pasting objects cut from other images (needs masks)
    # label assignment: 1 = the OTA assigner (dynamic k), 0 = every prior candidate (YOLOv5-style)
    "loss_ota": 1,
}

# The values each hyper-parameter may take, [low, high]: outside them torch refuses the
# optimizer (a negative lr or momentum, a traceback), a probability is no probability
# (mosaic: 2), or the recipe silently trains nothing (anchor_t < 1 matches no target).
_INF = math.inf
_PROBABILITY = (0.0, 1.0)
HYP_RANGES: dict[str, tuple[float, float]] = {
    **dict.fromkeys(("lr0", "lrf", "weight_decay", "warmup_epochs", "warmup_bias_lr"), (0, _INF)),
    **dict.fromkeys(("momentum", "warmup_momentum"), (0.0, 0.999)),  # Adam's beta1 is < 1
    **dict.fromkeys(("box", "cls", "cls_pw", "obj", "obj_pw", "fl_gamma"), (0, _INF)),
    "iou_t": _PROBABILITY,
    "anchor_t": (1.0, _INF),  # a width or height ratio, never below 1
    "label_smoothing": _PROBABILITY,
    **dict.fromkeys(("hsv_h", "hsv_s", "hsv_v", "translate", "perspective"), _PROBABILITY),
    "degrees": (0, 180),
    "shear": (0, 90),
    "scale": (0.0, 0.999),  # gains from 1 - scale: 1 or more would shrink images to nothing
    **dict.fromkeys(
        ("flipud", "fliplr", "mosaic", "mosaic9", "mixup", "copy_paste", "paste_in"), _PROBABILITY
    ),
    "loss_ota": (0, 1),
}


def hyp_problem(key: str, value: float) -> str | None:
    """What is wrong with a hyper-parameter's (finite) value, or None."""
    low, high = HYP_RANGES.get(key, (-_INF, _INF))
    if not low <= value <= high:
        upper = "" if high == _INF else f" and at most {high:g}"
        return f"must be at least {low:g}{upper}, got {value:g}"
    if key == "loss_ota" and value not in (0, 1):
        return f"must be 0 or 1, got {value:g}"
    return None


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


def read_hyp_file(path: str | Path) -> dict[str, float]:
    """A hyper-parameter file in the reference's format (``data/hyp.scratch.*.yaml``: one
    ``key: number`` per line) as overrides of the recipe; an unknown key or a value that is not
    a finite number is an error naming the file and the key."""
    import yaml

    from scaling_lab.errors import UserError, shown
    from scaling_lab.spec.yaml_lines import check_yaml_size, read_text_file

    text = read_text_file(Path(path), "hyp file", max_bytes=MAX_TEXT_BYTES, error=DataError)
    try:  # nesting, aliases and integer length bounded before yaml builds anything
        check_yaml_size(text, str(path))
    except UserError as exc:  # a syntax error reads as below, whichever reader found it
        reason = exc.reason.replace("malformed YAML", "not valid YAML", 1)
        raise DataError(reason, source=path, line=exc.line, field=exc.field) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DataError(f"not valid YAML: {str(exc).splitlines()[0]}", source=path) from None
    if not isinstance(data, dict):
        raise DataError("expected 'key: value' lines", source=path)
    known = default_hyp("p5")
    out: dict[str, float] = {}
    for key, value in data.items():
        if key not in known:
            raise DataError(
                f"unknown hyper-parameter '{key}' (known: {', '.join(known)})",
                source=path,
                field=str(key),
            )
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not math.isfinite(value):
            raise DataError(f"must be a finite number, got {shown(value)}", source=path, field=key)
        problem = hyp_problem(key, value)
        if problem:
            raise DataError(problem, source=path, field=key)
        out[key] = float(value)
    return out
