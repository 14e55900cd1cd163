"""LayerGraph: primitive layers with inferred shapes, the form that is counted, fused and built.

A ``Layer`` ties an op (``scaling_lab.ops``) to its name, inputs and output shape. Nothing
here imports torch, so counting a model takes milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from scaling_lab.ops.base import Op, Shape


@dataclass(frozen=True)
class Layer:
    """A named op with its inputs (layer names, or 'input') and output shape."""

    name: str
    op: Op
    inputs: tuple[str, ...]
    shape: Shape
    node: str  # the BlockGraph node this layer came from

    @property
    def kind(self) -> str:
        return self.op.kind


@dataclass(frozen=True)
class LayerGraph:
    """Topologically ordered layers; the last one is the output (the head)."""

    name: str
    layers: tuple[Layer, ...]
    input_shape: Shape
    form: str = "training"  # training | deploy (fused, no auxiliary head)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {layer.name: layer for layer in self.layers})

    def __getitem__(self, name: str) -> Layer:
        return self._index[name]  # type: ignore[attr-defined]

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    @property
    def output(self) -> Layer:
        return self.layers[-1]

    def input_shapes(self, layer: Layer) -> list[Shape]:
        return [self.input_shape if i == "input" else self[i].shape for i in layer.inputs]

    def consumers(self) -> dict[str, list[Layer]]:
        """For each layer name, the layers that read its output."""
        out: dict[str, list[Layer]] = {layer.name: [] for layer in self.layers}
        for layer in self.layers:
            for src in layer.inputs:
                if src in out:
                    out[src].append(layer)
        return out

    def replace_ops(self, ops: dict[str, Op], form: str | None = None) -> LayerGraph:
        """A copy with some layers' ops swapped (shapes unchanged)."""
        layers = tuple(replace(layer, op=ops.get(layer.name, layer.op)) for layer in self.layers)
        return replace(self, layers=layers, form=form or self.form)
