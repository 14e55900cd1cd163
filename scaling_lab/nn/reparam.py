"""Re-parameterization: a trained training-form model -> its deploy model with equal outputs.

The deploy architecture is the LayerGraph without auxiliary heads, each op in its fused form
(``layers.fuse.deploy_layer_graph``). Layer names survive both steps, so every deploy layer's
weights come from the training layer of the same name, computed by that layer's op
(``Op.fuse_weights``: Conv + BN, RepConv and implicit knowledge are folded there, with the
arithmetic in ``ops.fusion``).
"""

from __future__ import annotations

import torch
from torch import fx, nn

from scaling_lab.layers.fuse import deploy_layer_graph
from scaling_lab.layers.layer_graph import LayerGraph
from scaling_lab.nn.fx_build import build_module
from scaling_lab.nn.heap import reserve_heap
from scaling_lab.nn.memory import activation_bytes


def _check_target(source: LayerGraph, target: LayerGraph) -> None:
    """Every target layer must be the fused form of the source layer with the same name."""
    expected = deploy_layer_graph(source)
    index = {layer.name: layer for layer in expected}
    for layer in target:
        ref = index.get(layer.name)
        if ref is None:
            raise ValueError(f"reparameterize: deploy layer '{layer.name}' not in the model")
        if (ref.op, ref.inputs, ref.shape) != (layer.op, layer.inputs, layer.shape):
            raise ValueError(
                f"reparameterize: deploy layer '{layer.name}' is {layer.op} on {layer.inputs}, "
                f"but fusing the model's layer gives {ref.op} on {ref.inputs}"
            )


def _model_dtype_device(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return t.dtype, t.device
    return torch.get_default_dtype(), torch.device("cpu")


def _load_fused(dst: nn.Module, state: dict[str, torch.Tensor], name: str) -> list[str]:
    """Copy the computed state into the deploy module; returns the keys written."""
    wanted = dst.state_dict()
    unknown = [key for key in wanted if key not in state]
    if unknown:
        raise RuntimeError(f"reparameterize: '{name}' computed no value for {unknown[:5]}")
    for key, target in wanted.items():
        target.copy_(state[key])
    return list(wanted)


@torch.no_grad()
def reparameterize(
    model: fx.GraphModule, layer_graph_deploy: LayerGraph | None = None
) -> fx.GraphModule:
    """The deploy module of a training-form model, with weights fused so outputs are equal in
    eval mode (auxiliary heads dropped; they are not run in eval anyway).

    ``model`` must carry ``.layer_graph`` (models from ``build_module``/``create_model`` do).
    ``layer_graph_deploy`` defaults to ``deploy_layer_graph(model.layer_graph)``; if given,
    each of its layers must be the fused form of the model's layer of that name. The result
    is in eval mode, on the model's device and dtype, with ``.layer_graph`` set. The input
    model is not changed.
    """
    source = getattr(model, "layer_graph", None)
    if not isinstance(source, LayerGraph):
        raise TypeError(
            "reparameterize: the model has no .layer_graph (build it with build_module or "
            "create_model; note that copy.deepcopy of a GraphModule drops it)"
        )
    if layer_graph_deploy is None:
        target = deploy_layer_graph(source)
    else:
        _check_target(source, layer_graph_deploy)
        target = layer_graph_deploy
    dtype, device = _model_dtype_device(model)
    fused = build_module(target).to(device=device, dtype=dtype)
    fused_modules = dict(fused.named_modules())
    written: set[str] = set()
    for layer in target:
        if layer.name not in fused_modules:
            continue  # a plain function in the forward (concat, add, reorg, ...)
        src = model.get_submodule(layer.name)
        state = source[layer.name].op.fuse_weights(src)
        keys = _load_fused(fused_modules[layer.name], state, layer.name)
        written.update(f"{layer.name}.{key}" for key in keys)
    missing = set(fused.state_dict()) - written
    if missing:  # a fresh random init left in place would be a silent error
        raise RuntimeError(f"reparameterize: no weights computed for {sorted(missing)[:5]}")
    fused.eval()
    fused.layer_graph = target
    # the deploy module is what gets timed and served: free heap for one image's activations
    # and as much again for the kernels' scratch buffers (untouched until a forward needs
    # them), after its weights so that they do not take it (heap.py)
    reserve_heap(2 * activation_bytes(target))
    return fused
