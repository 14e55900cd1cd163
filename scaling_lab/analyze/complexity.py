"""Analytic params and MACs per layer, computed from the LayerGraph without torch.

Conventions (the paper's): ``macs`` counts, for every convolution (detection convs included)
at the real input shape and batch 1, its weight multiply-accumulates plus one add per output
element where the conv has a bias; GFLOPs = 2 x GMACs. This is the rule the paper's FLOPs
column follows (it reproduces YOLOv7, -X and -E6E to the printed digit, and every other
YOLOv7 row within 0.45%). Other
element-wise work (BatchNorm, activations, upsampling, implicit add/multiply, decoding) is not
in ``macs``. thop 0.1.1 counts conv weights without the bias add, plus BatchNorm and
upsampling: ``weight_macs + thop_extra_ops`` equals its total exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

from scaling_lab.layers.layer_graph import Layer, LayerGraph
from scaling_lab.ops.base import Shape


@dataclass(frozen=True)
class LayerCount:
    """Params and MACs of one layer, plus the element-wise ops thop also counts there."""

    name: str
    kind: str
    params: int
    macs: int  # weight multiply-accumulates + bias adds (the paper's rule)
    bias_adds: int = 0
    thop_extra_ops: int = 0

    @property
    def weight_macs(self) -> int:
        return self.macs - self.bias_adds


@dataclass(frozen=True)
class Complexity:
    """Totals for a graph, with the context that makes them meaningful."""

    model: str
    img_size: int
    nc: int
    form: str
    params: int
    macs: int
    bias_adds: int
    thop_extra_ops: int
    per_layer: tuple[LayerCount, ...]
    counter: str = "analytic"

    @property
    def weight_macs(self) -> int:
        """Multiply-accumulates of conv weights alone (no bias adds)."""
        return self.macs - self.bias_adds

    @property
    def thop_equivalent(self) -> int:
        """What thop 0.1.1 reports for the built module (same conventions, exactly)."""
        return self.weight_macs + self.thop_extra_ops

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    @property
    def gflops(self) -> float:
        return 2 * self.macs / 1e9

    @property
    def params_m(self) -> float:
        return self.params / 1e6


def count_layer(layer: Layer, in_shapes: list[Shape]) -> LayerCount:
    """Params and MACs of one layer, as its op declares them (``Op.count``)."""
    c = layer.op.count(in_shapes, layer.shape)
    return LayerCount(layer.name, layer.kind, c.params, c.macs, c.bias_adds, c.thop_extra_ops)


def count_graph(graph: LayerGraph) -> Complexity:
    """Analytic params and MACs of every layer and in total."""
    per_layer = tuple(count_layer(layer, graph.input_shapes(layer)) for layer in graph)
    return Complexity(
        model=graph.name,
        img_size=graph.input_shape.h,
        nc=graph.meta.get("nc", 0),
        form=graph.form,
        params=sum(c.params for c in per_layer),
        macs=sum(c.macs for c in per_layer),
        bias_adds=sum(c.bias_adds for c in per_layer),
        thop_extra_ops=sum(c.thop_extra_ops for c in per_layer),
        per_layer=per_layer,
    )
