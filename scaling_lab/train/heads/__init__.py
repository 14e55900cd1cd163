"""Head families: what trains and decodes a detection head, declared in one place per family.

A family (one module here: ``yolov7``, ``yolox``, ``ppyoloe``) names the head block types it
serves and gives their loss (with its label assignment), their box decoder and the recipe
defaults the public implementation trains them with. The trainer, the evaluator and the
ONNX export ask ``head_family(model)``: the loss follows the model's head, never a user flag.
A new head family is one new module that calls ``register_head``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from scaling_lab.errors import UserError

Decoder = Callable[[nn.Module, Tensor, tuple[int, int]], Tensor]


@dataclass(frozen=True)
class HeadFamily:
    """One head family. ``loss(model, hyp, **settings)`` builds the criterion the trainer
    calls as ``(outputs, targets, images) -> (loss, [box, obj, cls, total])``; ``decode(model,
    raw, (h, w))`` turns the model's eval output into (B, N, 5 + nc) rows [cx, cy, w, h (input
    pixels), objectness, class probabilities] for the NMS, ``None`` where the model decodes
    itself (the YOLO ``Detect``); ``recipe`` overrides the default hyper-parameters;
    ``fit_gains(hyp, n_levels, nc, img_size)`` adapts the loss gains to the model; ``init``
    sets a fresh model's prediction layers as the public implementation initializes them;
    ``plain_epochs(epochs)`` is how many of a run's last epochs train on plain images (no
    mosaic, mixup or affine: YOLOX's last 15 of 300)."""

    name: str
    block_types: tuple[str, ...]
    loss: Callable[..., Any]
    decode: Decoder | None = None
    recipe: dict[str, float] = field(default_factory=dict)
    fit_gains: Callable[..., dict] | None = None
    init: Callable[[nn.Module], None] | None = None  # a fresh model's head, as the public code
    plain_epochs: Callable[[int], int] | None = None


# what a plain-image epoch turns off: every sample one letterboxed image, flips and HSV kept
PLAIN_IMAGES = {
    "mosaic": 0.0,
    "mixup": 0.0,
    "degrees": 0.0,
    "translate": 0.0,
    "scale": 0.0,
    "shear": 0.0,
    "perspective": 0.0,
}


_FAMILIES: dict[str, HeadFamily] = {}


def register_head(family: HeadFamily) -> HeadFamily:
    """Add ``family`` for each of its block types; a block type served twice is an error."""
    for block_type in family.block_types:
        if block_type in _FAMILIES:
            raise ValueError(f"head block type '{block_type}' already has a head family")
        _FAMILIES[block_type] = family
    return family


def _load_families() -> None:
    from scaling_lab.train.heads import ppyoloe, yolov7, yolox  # noqa: F401  (they register)


def head_family(model: nn.Module) -> HeadFamily:
    """The family of ``model``'s detection head: ``layer_graph.meta['head']``, the block type
    of a head with raw outputs; without it (a ``Detect`` head records none) the YOLO family."""
    _load_families()
    graph = getattr(model, "layer_graph", None)
    block_type = graph.meta.get("head") if graph is not None else None
    block_type = block_type or "detect"
    if block_type not in _FAMILIES:
        known = ", ".join(sorted(_FAMILIES))
        raise UserError(f"no loss for head block '{block_type}' (heads that train: {known})")
    return _FAMILIES[block_type]


def build_loss(model: nn.Module, hyp: dict, **settings: Any) -> Any:
    """The criterion of ``model``'s head family (the trainer's default ``criterion``)."""
    return head_family(model).loss(model, hyp, **settings)


def families() -> dict[str, HeadFamily]:
    """Every registered family by block type."""
    _load_families()
    return dict(_FAMILIES)


def prediction_convs(model: nn.Module) -> list[nn.Conv2d]:
    """The head's prediction convs (bias, no BatchNorm, no activation) in the order the head's
    lowering emits them, as torch modules."""
    graph = model.layer_graph
    head = graph.output.node
    modules = dict(model.named_modules())
    convs = []
    for layer in graph.layers:
        op = layer.op
        is_conv = layer.node == head and layer.kind == "conv"
        if is_conv and op.bias and not op.bn and op.act == "identity":
            convs.append(modules[f"{layer.name}.conv"])
    return convs


def prior_bias(prob: float) -> float:
    """The logit of ``prob``: a classifier bias that starts every cell at that probability."""
    return -math.log((1 - prob) / prob)


class Decoded(nn.Module):
    """``model`` whose eval-mode output is decoded by its head family (training mode and
    self-decoding models pass through unchanged): what the evaluator and an ONNX export run.
    ``layer_graph`` is the wrapped model's."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.layer_graph = getattr(model, "layer_graph", None)
        self._decode = head_family(model).decode
        self.train(model.training)

    def forward(self, images: Tensor) -> Any:
        out = self.model(images)
        if self.model.training or self._decode is None:  # the wrapped model's mode decides
            return out
        return self._decode(self.model, out, (int(images.shape[-2]), int(images.shape[-1])))


def with_decode(model: nn.Module) -> nn.Module:
    """``model`` itself when it decodes its own output, else wrapped in ``Decoded``."""
    if isinstance(model, Decoded) or head_family(model).decode is None:
        return model
    return Decoded(model)
