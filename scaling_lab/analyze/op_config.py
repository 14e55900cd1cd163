"""Op configurations: what a latency table is keyed by, read from a LayerGraph without torch.

An op's latency depends on the op itself (its kind and every field of its dataclass: channels,
kernel, stride, padding, groups, fused activation, bias...), the shapes it reads and writes,
and the run's dtype, batch and memory layout. ``OpConfig`` holds exactly that, and its ``key``
is the text a table stores: two layers with the same key cost the same, so a table measures
each key once (an ELAN's repeated 3x3 convs are one entry).

Features for the fallback fit (``macs``, ``bytes``) and its groups come from the op's own
rules (``Op.count``, the one the analytic counter uses, ``Op.fit_macs`` and ``Op.fit_group``),
so an op a user defines brings its cost rule with it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

from scaling_lab.device import DTYPE_BYTES
from scaling_lab.layers.layer_graph import Layer, LayerGraph
from scaling_lab.ops.base import Op, Shape

LAYOUTS = ("nchw", "nhwc")  # contiguous, channels-last


def op_text(op: Op) -> str:
    """The op with every field, ``Conv(c_in=3, c_out=32, k=3, ...)``: stable across runs
    (dataclass fields in declaration order), unlike an object's default repr."""
    if dataclasses.is_dataclass(op):
        fields = ", ".join(f"{f.name}={getattr(op, f.name)!r}" for f in dataclasses.fields(op))
        return f"{type(op).__name__}({fields})"
    return type(op).__name__


def shape_text(shape: Shape) -> str:
    return f"{shape.c}x{shape.h}x{shape.w}"


@dataclass(frozen=True)
class RunSettings:
    """What a whole table shares and every key carries: dtype, batch, memory layout."""

    dtype: str = "fp32"
    batch: int = 1
    layout: str = "nchw"

    def __post_init__(self) -> None:
        if self.dtype not in DTYPE_BYTES:
            raise ValueError(f"unknown dtype {self.dtype!r} (known: {', '.join(DTYPE_BYTES)})")
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown layout {self.layout!r} (known: {', '.join(LAYOUTS)})")

    @property
    def suffix(self) -> str:
        return f"{self.dtype} b{self.batch} {self.layout}"


@dataclass(frozen=True)
class OpConfig:
    """One op at its shapes under the run settings; ``op`` is kept to build it for timing."""

    op: Op
    inputs: tuple[Shape, ...]
    out: Shape
    run: RunSettings

    @property
    def kind(self) -> str:
        return self.op.kind

    @property
    def key(self) -> str:
        ins = ",".join(shape_text(s) for s in self.inputs)
        return f"{op_text(self.op)} in={ins} out={shape_text(self.out)} {self.run.suffix}"

    @property
    def group(self) -> str:
        """The fallback fit's group (``Op.fit_group``): the kind, refined by kernel and stride
        (and grouping for convs), whose costs scale alike; ``kind`` is the coarser group behind
        it."""
        return self.op.fit_group()

    def features(self) -> dict[str, float]:
        """What the fallback regresses on: the op's work (``Op.fit_macs``: MACs, or a
        max-pool's window reads) and bytes moved (inputs, output, weights)."""
        count = self.op.count(list(self.inputs), self.out)
        macs = self.op.fit_macs(list(self.inputs), self.out)
        elements = sum(s.elements for s in self.inputs) + self.out.elements
        size = DTYPE_BYTES[self.run.dtype]
        return {
            "macs": float(self.run.batch * macs),
            "bytes": float(size * (self.run.batch * elements + count.params)),
            "params": float(count.params),
        }


def layer_config(graph: LayerGraph, layer: Layer, run: RunSettings) -> OpConfig:
    return OpConfig(layer.op, tuple(graph.input_shapes(layer)), layer.shape, run)


def graph_configs(graph: LayerGraph, run: RunSettings) -> Iterator[tuple[Layer, OpConfig]]:
    """Every layer with its configuration, in graph order."""
    for layer in graph:
        yield layer, layer_config(graph, layer, run)


def distinct_configs(graph: LayerGraph, run: RunSettings) -> dict[str, OpConfig]:
    """The graph's distinct configurations by key, first occurrence first."""
    out: dict[str, OpConfig] = {}
    for _, config in graph_configs(graph, run):
        out.setdefault(config.key, config)
    return out
