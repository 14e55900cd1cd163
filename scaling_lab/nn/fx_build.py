"""Generate a torch.fx GraphModule from a LayerGraph.

The forward is generated Python code (``model.code`` shows it): a straight line of module
calls and ``torch.cat``s, with no per-call interpretation of the graph, so it runs as fast
as a hand-written module.
"""

from __future__ import annotations

import operator

import torch
from torch import fx, nn

from scaling_lab.nn import modules
from scaling_lab.layers import layer_graph as lg


def _emit(
    graph: fx.Graph, layer: lg.Layer, args: list[fx.Node], submodules: dict[str, nn.Module]
) -> fx.Node:
    op = layer.op
    module = modules.make_module(op)
    if module is not None:
        submodules[layer.name] = module
        call_args = (args,) if isinstance(op, (lg.Detect, lg.Outputs)) else tuple(args)
        return graph.call_module(layer.name, call_args)
    if isinstance(op, lg.Concat):
        return graph.call_function(torch.cat, (args, 1))
    if isinstance(op, lg.GroupConcat):
        return graph.call_function(modules.group_concat, (args, op.groups))
    if isinstance(op, lg.Merge):
        return graph.call_function(modules.merge_groups, (args[0], op.groups))
    if isinstance(op, lg.Reorg):
        return graph.call_function(modules.reorg, (args[0],))
    if isinstance(op, lg.Chunk):
        return graph.call_function(modules.chunk, (args[0], op.groups, op.index))
    if isinstance(op, lg.GlobalAvgPool):
        return graph.call_function(modules.global_avg_pool, (args[0],))
    if isinstance(op, lg.Mul):
        return graph.call_function(operator.mul, (args[0], args[1]))
    if isinstance(op, lg.Add):
        out = args[0]
        for arg in args[1:]:
            out = graph.call_function(operator.add, (out, arg))
        return out
    raise TypeError(f"build: no module for op {type(op).__name__} (layer '{layer.name}')")


def _class_name(name: str) -> str:
    cleaned = "".join(ch if ch.isalnum() else "_" for ch in name)
    return cleaned if cleaned[:1].isalpha() else f"Model_{cleaned}"


def build_module(graph: lg.LayerGraph) -> fx.GraphModule:
    """Build the LayerGraph as a module; parameter names follow layer names."""
    fx_graph = fx.Graph()
    env: dict[str, fx.Node] = {"input": fx_graph.placeholder("x")}
    submodules: dict[str, nn.Module] = {}
    for layer in graph:
        env[layer.name] = _emit(fx_graph, layer, [env[i] for i in layer.inputs], submodules)
    fx_graph.output(env[graph.output.name])
    model = fx.GraphModule(submodules, fx_graph, class_name=_class_name(graph.name))
    model.layer_graph = graph  # the exact graph this module was built from
    return model
