"""Evaluating trained weights: the EMA model (and its fused deploy form) during training, and a
checkpoint from the command line (``lab eval``).

A model is always rebuilt from the spec text a checkpoint carries, then its weights loaded;
``fused`` evaluates ``reparameterize(model)`` (BatchNorm, RepConv and implicit knowledge
folded, auxiliary heads dropped), whose outputs equal the training form's in eval mode.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scaling_lab.device import check_device, default_device
from scaling_lab.eval_protocol import CONF_THRES, IOU_THRES
from scaling_lab.train.backends import Backends, ann_file
from scaling_lab.train.checkpoint import CheckpointError, check_checkpoint, load_checkpoint
from scaling_lab.train.heads import with_decode


def plain_number(value: Any) -> Any:
    """numpy scalars as Python int or float, NaN (no objects of a size) as None: valid JSON."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value) if math.isfinite(float(value)) else None
    return value


def fitness(metrics: dict[str, float]) -> float:
    """The reference's model-selection score: 0.1 AP50 + 0.9 AP50:95."""
    return 0.1 * float(metrics.get("AP50", 0.0)) + 0.9 * float(metrics.get("AP", 0.0))


def model_from_spec(spec_text: str, *, img_size: int | None = None) -> nn.Module:
    """Build the training-form module from stored spec text (``img_size`` overrides)."""
    from scaling_lab.models import create_model, get_block_graph
    from scaling_lab.spec import parse_spec

    graph = get_block_graph(parse_spec(spec_text, source="checkpoint spec"), img_size=img_size)
    return create_model(graph)


def model_from_checkpoint(
    ckpt: dict[str, Any], *, weights: str = "ema", img_size: int | None = None
) -> nn.Module:
    """The module of a checkpoint in eval mode: EMA weights (``weights="ema"``, the default
    and what training evaluates) or the raw model's (``"model"``)."""
    model = model_from_spec(ckpt["spec"], img_size=img_size)
    use_ema = weights == "ema" and bool(ckpt.get("ema"))
    state = ckpt["ema"]["module"] if use_ema else ckpt["model"]
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:  # weights of another model
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"damaged checkpoint: its weights do not fit its spec ({reason[:200]})",
            field="ema" if use_ema else "model",
        ) from None
    return model.eval()


def evaluate_model(
    model: nn.Module,
    loader: Any,
    ann: Any,
    *,
    backends: Backends,
    device: str | torch.device = "cpu",
    half: bool = False,
    fused: bool = False,
    conf_thres: float = CONF_THRES,
    iou_thres: float = IOU_THRES,
    save_json: str | Path | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """AP metrics of ``model`` (or of its fused deploy form when ``fused``) on ``loader``.

    The evaluator must leave the model's weights as they are (the real one runs fp16 under
    autocast); the model's train/eval mode is restored afterwards.
    """
    from scaling_lab.nn.reparam import reparameterize

    target = reparameterize(model) if fused else model
    was_training = target.training
    target.eval()
    try:
        return backends.get_evaluate()(
            with_decode(target),  # anchor-free heads: their family's decode (train/heads)
            loader,
            ann,
            conf_thres=conf_thres,
            iou_thres=iou_thres,
            device=str(device),
            half=half,
            save_json=str(save_json) if save_json is not None else None,
            progress=progress,
        )
    finally:
        target.train(was_training)


def evaluate_checkpoint(
    weights: str | Path,
    data: str,
    *,
    img_size: int | None = None,
    fused: bool = False,
    device: str | None = None,
    batch_size: int = 32,
    workers: int = 0,
    conf_thres: float = CONF_THRES,
    iou_thres: float = IOU_THRES,
    save_json: str | Path | None = None,
    progress: bool = True,
    backends: Backends | None = None,
) -> dict[str, Any]:
    """``lab eval``: AP of a checkpoint's EMA weights (fused when asked) on ``data``'s val
    split. Returns the metrics plus what was evaluated (model, image size, form)."""
    backends = backends or Backends()
    device = device or default_device()
    check_device(device)
    ckpt = load_checkpoint(weights)
    path = Path(weights) / "weights" / "last.pt" if Path(weights).is_dir() else Path(weights)
    check_checkpoint(ckpt, path)
    try:
        model = model_from_checkpoint(ckpt, img_size=img_size).to(device)
    except CheckpointError as exc:
        raise exc.located(str(weights)) from None
    img = img_size or model.layer_graph.input_shape.h
    info = backends.get_resolve_data()(data)
    loader = backends.get_build_dataloader()(
        info,
        "val",
        img_size=img,
        batch_size=batch_size,
        augment=False,
        hyp=ckpt.get("hyp"),
        workers=workers,
        seed=0,
        shuffle=False,
    )
    metrics = evaluate_model(
        model,
        loader,
        ann_file(info, "val"),
        backends=backends,
        device=device,
        half=str(device).startswith("cuda"),
        fused=fused,
        conf_thres=conf_thres,
        iou_thres=iou_thres,
        save_json=save_json,
        progress=progress,
    )
    return {
        "weights": str(weights),
        "model": model.layer_graph.name,
        "img_size": img,
        "form": "deploy (fused)" if fused else "training (EMA)",
        "epochs_done": ckpt.get("epoch"),  # epochs completed when the checkpoint was written
        **{k: plain_number(v) for k, v in metrics.items()},
    }
