"""The fused (deploy) form of a LayerGraph: what re-parameterization produces.

Each op says what it fuses into (``Op.fused``): BatchNorm folds into a conv bias, a RepConv
becomes one plain conv, implicit knowledge folds into the detection convs. Auxiliary heads
are kept if present (the deploy graph has none: they are dropped before fusing). Shapes are
unchanged; only parameter layouts change.
"""

from __future__ import annotations

from dataclasses import replace

from scaling_lab.layers.layer_graph import LayerGraph
from scaling_lab.ops.head import Detect


def fuse_layers(graph: LayerGraph) -> LayerGraph:
    """Every layer in its fused form; marked ``deploy`` (or ``fused`` if aux heads remain)."""
    has_aux = any(isinstance(layer.op, Detect) and layer.op.aux_c_ins for layer in graph)
    form = "fused" if has_aux else "deploy"
    return graph.replace_ops({layer.name: layer.op.fused() for layer in graph}, form=form)


def drop_aux_layers(graph: LayerGraph) -> LayerGraph:
    """The LayerGraph without auxiliary heads: each Detect keeps its lead inputs only, and
    every layer the output no longer reads is pruned (names and order kept).

    The LayerGraph-level twin of ``transforms.deploy.drop_aux_heads``: lowering the pruned
    BlockGraph gives the same layers (a test checks it on every zoo model).
    """
    layers = []
    for layer in graph:
        op = layer.op
        if isinstance(op, Detect) and op.aux_c_ins:
            layer = replace(layer, op=op.without_aux(), inputs=layer.inputs[: len(op.c_ins)])
        layers.append(layer)
    needed = {layers[-1].name}
    for layer in reversed(layers):
        if layer.name in needed:
            needed.update(layer.inputs)
    return replace(graph, layers=tuple(layer for layer in layers if layer.name in needed))


def deploy_layer_graph(graph: LayerGraph) -> LayerGraph:
    """The deploy LayerGraph of a training-form one: aux heads dropped, every op fused."""
    return fuse_layers(drop_aux_layers(graph))
