"""The fused (deploy) form of a LayerGraph: what re-parameterization produces.

BatchNorm folds into a conv bias, a RepConv becomes one plain conv, implicit knowledge folds
into the detection convs. Auxiliary heads are kept if present (the deploy graph has none:
``drop_aux_heads`` removes them before lowering). Shapes are unchanged; only parameter
layouts change.
"""

from __future__ import annotations

from dataclasses import replace

from scaling_lab.layers import layer_graph as lg


def fused_op(op: lg.Op) -> lg.Op:
    """The deploy-time op that a training-form op re-parameterizes into."""
    if isinstance(op, lg.Conv):
        return replace(op, bn=False, bias=True) if op.bn else op
    if isinstance(op, lg.RepConv):
        return lg.Conv(
            op.c_in, op.c_out, op.k, op.s, op.k // 2, op.groups, op.act, bn=False, bias=True
        )
    if isinstance(op, lg.Detect):
        return replace(op, implicit=False)
    return op


def fuse_layers(graph: lg.LayerGraph) -> lg.LayerGraph:
    """Every layer in its fused form; marked ``deploy`` (or ``fused`` if aux heads remain)."""
    has_aux = any(isinstance(layer.op, lg.Detect) and layer.op.aux_c_ins for layer in graph)
    form = "fused" if has_aux else "deploy"
    return graph.replace_ops({layer.name: fused_op(layer.op) for layer in graph}, form=form)
