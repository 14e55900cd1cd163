"""Generate a torch.fx GraphModule from a LayerGraph.

The forward is generated Python code (``model.code`` shows it): a straight line of module
calls and functions, with no per-call interpretation of the graph, so it runs as fast as a
hand-written module. Each op gives its own torch form (``Op.build``).
"""

from __future__ import annotations

from torch import fx, nn

from scaling_lab.layers.layer_graph import Layer, LayerGraph
from scaling_lab.nn.heap import settle_heap_thresholds
from scaling_lab.nn.memory import check_fits
from scaling_lab.ops.base import TorchCall


def _emit(
    graph: fx.Graph, layer: Layer, args: list[fx.Node], submodules: dict[str, nn.Module]
) -> fx.Node:
    form = layer.op.build()
    call_args = (args,) if layer.op.takes_list else tuple(args)
    if isinstance(form, nn.Module):
        submodules[layer.name] = form
        return graph.call_module(layer.name, call_args)
    if isinstance(form, TorchCall):
        return graph.call_function(form.fn, (*call_args, *form.args))
    raise TypeError(
        f"build: op {type(layer.op).__name__} of layer '{layer.name}' gave {form!r}, "
        "not an nn.Module or a TorchCall"
    )


def _class_name(name: str) -> str:
    cleaned = "".join(ch if ch.isalnum() else "_" for ch in name)
    return cleaned if cleaned[:1].isalpha() else f"Model_{cleaned}"


def build_module(graph: LayerGraph) -> fx.GraphModule:
    """Build the LayerGraph as a module; parameter names follow layer names. A model whose
    weights and one image's activations would not fit in memory is refused first."""
    check_fits(graph)
    settle_heap_thresholds()  # no heap trimming inside each CPU forward (heap.py)
    fx_graph = fx.Graph()
    env: dict[str, fx.Node] = {"input": fx_graph.placeholder("x")}
    submodules: dict[str, nn.Module] = {}
    for layer in graph:
        env[layer.name] = _emit(fx_graph, layer, [env[i] for i in layer.inputs], submodules)
    fx_graph.output(env[graph.output.name])
    model = fx.GraphModule(submodules, fx_graph, class_name=_class_name(graph.name))
    model.layer_graph = graph  # the exact graph this module was built from
    return model
