"""Lower a BlockGraph to a LayerGraph: each block's lowering function emits primitive layers."""

from __future__ import annotations

from scaling_lab.graph.block_graph import INPUT, BlockGraph
from scaling_lab.layers.builder import LayerBuilder
from scaling_lab.layers.layer_graph import LayerGraph
from scaling_lab.layers.plan_repconv import plan_repconv
from scaling_lab.ops.base import Port, Shape
from scaling_lab.spec.errors import SpecError

_PROBE_SIZE = 4096  # divisible by every stride a detector uses; finds the graph's max stride


def _lower_at(graph: BlockGraph, img_size: int) -> LayerGraph:
    lb = LayerBuilder(graph.settings)
    image = Shape(graph.channels, img_size, img_size, 1)
    ports: dict[str, Port] = {INPUT: Port(INPUT, image)}
    for node in graph.nodes:
        lb.begin(node.name)
        inputs = [ports[name] for name in node.inputs]
        try:
            out = node.block.lower(node.cfg, inputs, lb)
        except SpecError as exc:
            raise SpecError(
                exc.reason,
                source=graph.source,
                node=exc.node or node.name,
                field=exc.field,
                line=node.line,
            ) from None
        ports[node.name] = lb.end(out)
    return LayerGraph(
        name=graph.name,
        layers=tuple(lb.layers),
        input_shape=image,
        meta={"nc": graph.nc, "img_size": img_size},
    )


def max_stride(graph: BlockGraph) -> int:
    """The largest downsampling factor in the graph (input sizes must be divisible by it)."""
    probe = _lower_at(graph, _PROBE_SIZE)
    return max(layer.shape.stride for layer in probe)


def lower(graph: BlockGraph, img_size: int | None = None) -> LayerGraph:
    """Lower at a square input size (the spec's default when None), checking divisibility."""
    img_size = graph.img_size if img_size is None else img_size
    if img_size < 1:
        raise SpecError(
            f"must be a positive integer, got {img_size}", source=graph.source, field="img_size"
        )
    try:
        stride = max_stride(graph)
    except SpecError:
        _lower_at(graph, img_size)  # report the structural error with the real sizes
        raise
    if img_size % stride:
        raise SpecError(
            f"input size {img_size} is not divisible by the model's max stride "
            f"{stride} (try {max(stride, round(img_size / stride) * stride)})",
            source=graph.source,
            field="img_size",
        )
    try:
        return plan_repconv(_lower_at(graph, img_size), graph.repconv)
    except SpecError as exc:
        raise SpecError(exc.reason, source=graph.source, field=exc.field) from None
