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

from scaling_lab.layers import layer_graph as lg

# thop (0.1.1) counts an affine BatchNorm as 4 ops per element, nearest upsampling as 1 per
# output element, and activations, pooling, concat and add as 0.
THOP_BN_OPS_PER_ELEMENT = 4


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


def _conv_params(c_in: int, c_out: int, k: int, groups: int) -> int:
    return c_out * (c_in // groups) * k * k


def _count_conv(op: lg.Conv, out: lg.Shape) -> tuple[int, int, int, int]:
    params = _conv_params(op.c_in, op.c_out, op.k, op.groups)
    params += op.c_out if op.bias else 0
    params += 2 * op.c_out if op.bn else 0  # BN weight and bias (running stats are buffers)
    pixels = out.h * out.w
    macs = pixels * op.c_out * (op.c_in // op.groups) * op.k * op.k
    elements = pixels * op.c_out
    bias_adds = elements if op.bias else 0
    extra = THOP_BN_OPS_PER_ELEMENT * elements if op.bn else 0
    return params, macs + bias_adds, bias_adds, extra


def _count_repconv(op: lg.RepConv, out: lg.Shape) -> tuple[int, int, int, int]:
    dense = _conv_params(op.c_in, op.c_out, op.k, op.groups)
    point = _conv_params(op.c_in, op.c_out, 1, op.groups)
    params = dense + point + 4 * op.c_out + (2 * op.c_in if op.identity else 0)
    pixels = out.h * out.w
    macs = pixels * (dense + point)
    elements = pixels * op.c_out
    n_bn = 3 if op.identity else 2
    return params, macs, 0, THOP_BN_OPS_PER_ELEMENT * elements * n_bn


def _count_detect(op: lg.Detect, in_shapes: list[lg.Shape]) -> tuple[int, int, int, int]:
    n_out = op.n_anchors * op.n_outputs
    params = macs = bias_adds = 0
    for i, shape in enumerate(in_shapes):
        params += shape.c * n_out + n_out  # 1x1 conv with bias
        macs += shape.h * shape.w * shape.c * n_out
        bias_adds += shape.h * shape.w * n_out
        if i < len(op.c_ins) and op.implicit:
            params += shape.c + n_out  # ImplicitA (per input channel) and ImplicitM
    return params, macs + bias_adds, bias_adds, 0


# Data movement, pooling and element-wise joins: no params, no MACs, nothing thop counts (the
# global average pool and the product are functions in the built forward, not modules).
_FREE_OPS = (
    lg.MaxPool,
    lg.Concat,
    lg.GroupConcat,
    lg.Merge,
    lg.Add,
    lg.Reorg,
    lg.Chunk,
    lg.GlobalAvgPool,
    lg.Mul,
    lg.Outputs,
)


def count_layer(layer: lg.Layer, in_shapes: list[lg.Shape]) -> LayerCount:
    """Params and MACs of one layer; an op this counter does not know is an error."""
    op = layer.op
    if isinstance(op, lg.Conv):
        params, macs, bias_adds, extra = _count_conv(op, layer.shape)
    elif isinstance(op, lg.RepConv):
        params, macs, bias_adds, extra = _count_repconv(op, layer.shape)
    elif isinstance(op, lg.Detect):
        params, macs, bias_adds, extra = _count_detect(op, in_shapes)
    elif isinstance(op, lg.BatchNormAct):
        elements = layer.shape.c * layer.shape.h * layer.shape.w
        params, macs, bias_adds, extra = 2 * op.c, 0, 0, THOP_BN_OPS_PER_ELEMENT * elements
    elif isinstance(op, lg.Upsample):
        params, macs, bias_adds, extra = 0, 0, 0, layer.shape.c * layer.shape.h * layer.shape.w
    elif isinstance(op, _FREE_OPS):
        params, macs, bias_adds, extra = 0, 0, 0, 0
    else:  # refuse to count zero for something unknown (a common trap of op counters)
        raise TypeError(
            f"analytic counter: no rule for op {type(op).__name__} (layer '{layer.name}')"
        )
    return LayerCount(layer.name, layer.kind, params, macs, bias_adds, extra)


def count_graph(graph: lg.LayerGraph) -> Complexity:
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
