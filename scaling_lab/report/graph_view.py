"""A readable listing of a graph: nodes with roles, shapes, params, RepConv placements and
the ports other nodes may read (``from: node.port``)."""

from __future__ import annotations

from scaling_lab.analyze.complexity import count_graph
from scaling_lab.graph.block_graph import BlockGraph
from scaling_lab.graph.lower import declared_ports
from scaling_lab.graph.registry import cfg_fields
from scaling_lab.layers.layer_graph import Layer, LayerGraph
from scaling_lab.ops.conv import RepConv


def _placements(layers: list[Layer]) -> str:
    marks = []
    for layer in layers:
        if isinstance(layer.op, RepConv):
            short = layer.name.rsplit(".", 1)[-1]
            marks.append(f"{short}:{'RepConv' if layer.op.identity else 'RepConvN'}")
    return " ".join(marks)


def _fields(node) -> str:
    return ", ".join(f"{k}={v}" for k, v in cfg_fields(node.cfg).items())


def render_graph(blocks: BlockGraph, layers: LayerGraph) -> str:
    """One line per node: name, type [role], inputs, output shape, params; then its fields,
    RepConv marks and ports."""
    counts = {c.name: c for c in count_graph(layers).per_layer}
    ports = declared_ports(blocks)
    by_node: dict[str, list[Layer]] = {}
    for layer in layers:
        by_node.setdefault(layer.node, []).append(layer)
    header = f"{'node':<12} {'type':<22} {'from':<18} {'out (c x h x w /s)':<22} {'params':>11}"
    lines = [
        f"{blocks.name}: img {layers.input_shape.h}, nc {blocks.nc}, form {layers.form}, "
        f"repconv {blocks.repconv or 'as written'}",
        header,
        "-" * len(header),
    ]
    for node in blocks.nodes:
        node_layers = by_node.get(node.name, [])
        if not node_layers:
            continue
        out = node_layers[-1].shape
        params = sum(counts[layer.name].params for layer in node_layers)
        shape = f"{out.c} x {out.h} x {out.w} /{out.stride}"
        sources = ",".join(node.inputs)
        lines.append(
            f"{node.name:<12} {node.type + ' [' + node.role[:5] + ']':<22} "
            f"{sources[:18]:<18} {shape:<22} {params:>11,}"
        )
        node_ports = "ports: " + ", ".join(ports[node.name]) if node.name in ports else ""
        parts = (_fields(node), _placements(node_layers), node_ports)
        detail = "  ".join(part for part in parts if part)
        if detail:
            lines.append(f"{'':<12} {detail}")
    total = count_graph(layers)
    lines.append(f"total: {total.params:,} params, {total.gflops:.2f} GFLOPs")
    return "\n".join(lines)
