"""Lower a BlockGraph to a LayerGraph: each block's lowering function emits primitive layers."""

from __future__ import annotations

from scaling_lab.errors import shown
from scaling_lab.graph.block_graph import INPUT, BlockGraph, BlockNode
from scaling_lab.layers.builder import LayerBuilder
from scaling_lab.layers.layer_graph import Layer, LayerGraph
from scaling_lab.layers.plan_repconv import plan_repconv
from scaling_lab.limits import MAX_IMG_SIZE, MAX_NC
from scaling_lab.ops.base import Port, Shape
from scaling_lab.spec.errors import SpecError
from scaling_lab.spec.load import split_input

_PROBE_SIZE = 4096  # divisible by every stride a detector uses; finds the graph's max stride


class PortError(SpecError):
    """An input ``node.port`` names a port its node does not declare."""


def _read(
    ref: str, ports: dict[str, Port], lb: LayerBuilder, graph: BlockGraph, node: BlockNode
) -> Port:
    """The tensor an input names: a node's output, or a port its lowering emitted."""
    if ref in ports:
        return ports[ref]
    if ref in lb.read_ports:
        return lb.read_ports[ref]
    src, port = split_input(ref)
    known = lb.declared_ports.get(src, ())
    what = f"known: {', '.join(known)}" if known else f"'{src}' has no ports"
    raise PortError(
        f"unknown port '{port}' of '{src}' ({what})",
        source=graph.source,
        node=node.name,
        field="from",
        line=node.line,
    )


def _lower_at(graph: BlockGraph, img_size: int, builder: LayerBuilder | None = None) -> LayerGraph:
    lb = builder or LayerBuilder(graph.settings)
    image = Shape(graph.channels, img_size, img_size, 1)
    ports: dict[str, Port] = {INPUT: Port(INPUT, image)}
    wanted = graph.port_reads()
    for node in graph.nodes:
        inputs = [_read(ref, ports, lb, graph, node) for ref in node.inputs]
        lb.begin(node.name, wanted.get(node.name, ()))
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
        meta={"nc": graph.nc, "img_size": img_size, **_raw_head(graph, lb.layers)},
    )


def _raw_head(graph: BlockGraph, layers: list[Layer]) -> dict[str, str]:
    """``{"head": block type}`` for a head whose output is raw, not decoded by a ``Detect``:
    the trainer picks its loss and decoder by it (``train/heads``). A ``Detect`` head records
    nothing, so a training graph (``aux_detect``) and its deploy graph (``detect``) stay equal."""
    heads = [node.type for node in graph.nodes if node.block.head]
    if not heads or not layers or layers[-1].kind == "detect":
        return {}
    return {"head": heads[0]}


def declared_ports(graph: BlockGraph) -> dict[str, tuple[str, ...]]:
    """The ports each node's lowering declares (nodes without any left out)."""
    lb = LayerBuilder(graph.settings)
    _lower_at(graph, _PROBE_SIZE, lb)
    return dict(lb.declared_ports)


def check_ports(graph: BlockGraph) -> None:
    """Raise ``PortError`` for an input ``node.port`` that names no declared port; any other
    problem is left to ``lower`` (reported there with the real input size)."""
    try:
        _lower_at(graph, _PROBE_SIZE)
    except PortError:
        raise
    except SpecError:
        pass


def max_stride(graph: BlockGraph) -> int:
    """The largest downsampling factor in the graph (input sizes must be divisible by it)."""
    probe = _lower_at(graph, _PROBE_SIZE)
    return max(layer.shape.stride for layer in probe)


def lower(graph: BlockGraph, img_size: int | None = None) -> LayerGraph:
    """Lower at a square input size (the spec's default when None), checking divisibility."""
    img_size = graph.img_size if img_size is None else img_size
    if not 1 <= graph.nc <= MAX_NC:
        raise SpecError(
            f"must be 1 to {MAX_NC} (MAX_NC), got {shown(graph.nc)}",
            source=graph.source,
            field="nc",
        )
    if img_size < 1 or img_size > MAX_IMG_SIZE:
        raise SpecError(
            f"must be a positive integer up to {MAX_IMG_SIZE} (MAX_IMG_SIZE), "
            f"got {shown(img_size)}",
            source=graph.source,
            field="img_size",
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
