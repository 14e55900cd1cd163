"""Primitive layers with inferred shapes: the form that is counted, fused and built.

Each op is a small frozen dataclass; a ``Layer`` ties an op to its name, inputs and output
shape. Nothing here imports torch, so counting a model takes milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class Shape:
    """Output of a layer for one image: channels, height, width, and stride to the input."""

    c: int
    h: int
    w: int
    stride: int


@dataclass(frozen=True)
class Conv:
    """Conv2d, then BatchNorm (training form) or a bias (fused form), then activation."""

    c_in: int
    c_out: int
    k: int = 1
    s: int = 1
    p: int = 0
    groups: int = 1
    act: str = "silu"
    bn: bool = True
    bias: bool = False


@dataclass(frozen=True)
class RepConv:
    """RepVGG-style conv (§4.1): 3x3+BN, 1x1+BN and, where shapes allow and planned, identity BN."""

    c_in: int
    c_out: int
    k: int = 3
    s: int = 1
    groups: int = 1
    act: str = "silu"
    identity: bool = False


@dataclass(frozen=True)
class BatchNormAct:
    """A standalone BatchNorm + activation (CSPDarknet normalizes its concat). Kept as is when
    fused: no single conv produces all of its channels."""

    c: int
    act: str = "silu"


@dataclass(frozen=True)
class MaxPool:
    k: int
    s: int
    p: int


@dataclass(frozen=True)
class Upsample:
    scale: int = 2
    mode: str = "nearest"


@dataclass(frozen=True)
class Concat:
    """Channel concatenation in input order."""


@dataclass(frozen=True)
class GroupConcat:
    """Concatenation regrouped by cardinality (E-ELAN shuffle, §3.1).

    Each input holds ``groups`` equal chunks; the output lists chunk 0 of every input, then
    chunk 1 of every input, ...; a following ``groups``-grouped conv then sees one
    cardinality's features per group.
    """

    groups: int


@dataclass(frozen=True)
class Merge:
    """Merge cardinality: split channels into ``groups`` chunks and sum them (E-ELAN)."""

    groups: int


@dataclass(frozen=True)
class Add:
    """Elementwise sum of inputs with equal shapes (residual shortcut)."""


@dataclass(frozen=True)
class Reorg:
    """Space-to-depth: every 2x2 pixel block becomes 4 channels (the P6 models' stem)."""


@dataclass(frozen=True)
class Chunk:
    """Channel slice ``index`` of ``groups`` equal slices (Darknet's grouped route, YOLOv4-tiny)."""

    groups: int
    index: int


@dataclass(frozen=True)
class GlobalAvgPool:
    """Mean over height and width: c x 1 x 1 (the squeeze of squeeze-excitation)."""


@dataclass(frozen=True)
class Mul:
    """Elementwise product; a 1x1 input is broadcast over the other's height and width
    (channel attention: features x gate)."""


@dataclass(frozen=True)
class Outputs:
    """The model output of a decoupled head: in training mode the per-level maps; in eval mode
    each level flattened to (B, H*W, C) and all levels concatenated, (B, N, C)."""


@dataclass(frozen=True)
class Detect:
    """YOLO detection head: a 1x1 conv per level, with implicit knowledge (§ YOLOR) if asked.

    Training form: ImplicitA added before and ImplicitM multiplied after each lead conv, plus
    plain 1x1 convs on the auxiliary inputs. Fused form: implicit folded into the conv.
    """

    nc: int
    anchors: tuple[tuple[float, ...], ...]
    strides: tuple[int, ...]
    c_ins: tuple[int, ...]
    aux_c_ins: tuple[int, ...] = ()
    implicit: bool = True

    @property
    def n_anchors(self) -> int:
        return len(self.anchors[0]) // 2

    @property
    def n_outputs(self) -> int:
        """Outputs per anchor: box (4), objectness (1), classes."""
        return self.nc + 5


Op = (
    Conv
    | RepConv
    | BatchNormAct
    | MaxPool
    | Upsample
    | Concat
    | GroupConcat
    | Merge
    | Add
    | Reorg
    | Chunk
    | GlobalAvgPool
    | Mul
    | Outputs
    | Detect
)


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
        return type(self.op).__name__.lower()


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

    def __iter__(self):
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
