"""The recipe fitted to a model, as the reference's train.py does: which default
hyper-parameters suit it (``tiny``, ``p5``, ``p6``) and its loss gains scaled to its levels,
classes and image size."""

from __future__ import annotations

from torch import nn


def scale_loss_gains(hyp: dict, *, n_levels: int, nc: int, img_size: int) -> dict:
    """The reference's loss-gain scaling (train.py): box by 3 / levels, cls by classes / 80
    and 3 / levels, obj by (img / 640)^2 and 3 / levels. The criterion gets the scaled copy."""
    out = dict(hyp)
    if "box" in out:
        out["box"] = out["box"] * 3.0 / n_levels
    if "cls" in out:
        out["cls"] = out["cls"] * nc / 80.0 * 3.0 / n_levels
    if "obj" in out:
        out["obj"] = out["obj"] * (img_size / 640) ** 2 * 3.0 / n_levels
    return out


def detect_head(model: nn.Module) -> nn.Module | None:
    from scaling_lab.ops.modules import Detect

    return next((m for m in model.modules() if isinstance(m, Detect)), None)


def model_size(model: nn.Module) -> str:
    """``tiny``, ``p5`` or ``p6``: which default hyperparameters fit the model."""
    name = model.layer_graph.name.lower()
    if "tiny" in name:
        return "tiny"
    head = detect_head(model)
    return "p6" if head is not None and float(head.stride.max()) >= 64 else "p5"
