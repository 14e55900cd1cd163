"""The fused (deploy) form of a LayerGraph: what re-parameterization produces.

BatchNorm folds into a conv bias, a RepConv becomes one plain conv, implicit knowledge folds
into the detection convs, auxiliary head convs are gone (``drop_aux_heads`` already pruned
their inputs). Shapes are unchanged; only parameter layouts change.
"""

from __future__ import annotations

from dataclasses import replace

from scaling_lab.layers import layer_graph as lg


def fused_op(op: lg.Op) -> lg.Op:
    """The deploy-time op that a training-form op re-parameterizes into."""
    if isinstance(op, lg.Conv):
        return replace(op, bn=False, bias=True)
    if isinstance(op, lg.RepConv):
        return lg.Conv(
            op.c_in, op.c_out, op.k, op.s, op.k // 2, op.groups, op.act, bn=False, bias=True
        )
    if isinstance(op, lg.Detect):
        return replace(op, implicit=False, aux_c_ins=())
    return op


def fuse_layers(graph: lg.LayerGraph) -> lg.LayerGraph:
    """Every layer in its fused form; the graph is marked ``deploy``."""
    detect = graph.output
    if isinstance(detect.op, lg.Detect) and detect.op.aux_c_ins:
        n_lead = len(detect.op.c_ins)
        graph = replace(
            graph, layers=(*graph.layers[:-1], replace(detect, inputs=detect.inputs[:n_lead]))
        )
    return graph.replace_ops({layer.name: fused_op(layer.op) for layer in graph}, form="deploy")
