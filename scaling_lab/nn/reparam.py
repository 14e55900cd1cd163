"""Re-parameterization: a trained training-form model -> its deploy model with equal outputs.

The deploy architecture is the LayerGraph without auxiliary heads (``drop_aux_layers``), each
op in its fused form (``fuse_layers``). Layer names survive both steps, so every deploy
layer's weights are computed from the training layer of the same name:

- Conv + BatchNorm -> conv with bias (``fuse_conv_bn``);
- RepConv (kxk+BN, 1x1+BN, optional identity BN) -> one kxk conv with bias (``fuse_repconv``,
  §4.1);
- Detect with implicit knowledge (YOLOR) -> plain 1x1 convs (``fold_implicit``).

Per-channel arithmetic (BN scales and shifts, summed biases, the small detection convs) runs
in float64; large kernels are scaled in the model's dtype (one rounding), so fusing a 150M
parameter model takes one to two seconds on a CPU.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import fx, nn

from scaling_lab.nn import modules
from scaling_lab.nn.fx_build import build_module
from scaling_lab.layers import layer_graph as lg
from scaling_lab.layers.fuse import fuse_layers

Tensor = torch.Tensor


def _wide(t: Tensor) -> Tensor:
    """``t`` in float64 for the per-channel arithmetic (float32 where the device lacks it)."""
    dtype = torch.float32 if t.device.type == "mps" else torch.float64
    return t.detach().to(dtype)


def _bn_scale_shift(bn: nn.BatchNorm2d, conv_bias: Tensor | None) -> tuple[Tensor, Tensor]:
    """Per output channel: s = gamma / sqrt(var + eps) and beta + s (b - mean), in float64."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("fuse_conv_bn: BatchNorm without running statistics cannot be folded")
    mean, var = _wide(bn.running_mean), _wide(bn.running_var)
    gamma = _wide(bn.weight) if bn.weight is not None else torch.ones_like(mean)
    beta = _wide(bn.bias) if bn.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + bn.eps)
    b = _wide(conv_bias) if conv_bias is not None else torch.zeros_like(mean)
    return scale, beta + (b - mean) * scale


def _per_out(weight: Tensor, v: Tensor) -> Tensor:
    """Scale a conv kernel per output channel, in the kernel's dtype."""
    return weight.detach() * v.to(weight.dtype).view(-1, *([1] * (weight.dim() - 1)))


def fuse_conv_bn(weight: Tensor, bias: Tensor | None, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Fold an eval-mode BatchNorm into the conv before it.

    BN(Wx + b) = g (Wx + b - mu) / sqrt(var + eps) + beta, so with s = g / sqrt(var + eps):
    W' = s W (per output channel) and b' = beta + s (b - mu). Works for any kernel size and
    groups (the scale is per output channel). s and b' are computed in float64; the results
    are in the kernel's dtype.
    """
    if bn.num_features != weight.shape[0]:
        raise ValueError(
            f"fuse_conv_bn: BatchNorm has {bn.num_features} channels, conv {weight.shape[0]}"
        )
    scale, shift = _bn_scale_shift(bn, bias)
    return _per_out(weight, scale), shift.to(weight.dtype)


def identity_kernel(channels: int, k: int, groups: int = 1, like: Tensor | None = None) -> Tensor:
    """The kxk (grouped) conv kernel that copies its input: 1 at the centre tap of channel i.

    With ``groups`` groups each output channel o sees the ``channels // groups`` inputs of its
    group; its own channel is input ``o % (channels // groups)`` of that group.
    """
    per_group = channels // groups
    kernel = torch.zeros(channels, per_group, k, k)
    if like is not None:
        kernel = kernel.to(device=like.device, dtype=like.dtype)
    out = torch.arange(channels)
    kernel[out, out % per_group, k // 2, k // 2] = 1.0
    return kernel


def fuse_repconv(
    dense_conv: nn.Conv2d,
    dense_bn: nn.BatchNorm2d,
    point_conv: nn.Conv2d,
    point_bn: nn.BatchNorm2d,
    identity_bn: nn.BatchNorm2d | None = None,
) -> tuple[Tensor, Tensor]:
    """One kxk conv equal to BN(kxk conv) + BN(1x1 conv) [+ BN(x)] (RepVGG; paper §4.1).

    Convolution is linear in its kernel, so the branches add up once they share a shape: each
    branch is folded with its BN; the 1x1 kernel goes to the centre tap of the kxk one (this
    lines up because the kxk conv pads k // 2 and the 1x1 pads 0, at the same stride); the
    identity branch is its BN applied to the identity kernel (within each group). Biases add
    in float64; the kernel has the dense conv's shape, groups and dtype.
    """
    k = dense_conv.kernel_size[0]
    groups = dense_conv.groups
    if dense_conv.kernel_size != (k, k) or k % 2 == 0:
        raise ValueError(f"fuse_repconv: dense kernel must be square and odd, got {k}")
    if point_conv.kernel_size != (1, 1) or point_conv.groups != groups:
        raise ValueError("fuse_repconv: point branch must be a 1x1 conv with the dense groups")
    if dense_conv.padding != (k // 2, k // 2) or point_conv.padding != (0, 0):
        raise ValueError("fuse_repconv: expects kxk padding k // 2 and 1x1 padding 0")
    if dense_conv.stride != point_conv.stride:
        raise ValueError("fuse_repconv: branches must share the stride")
    scale, bias = _bn_scale_shift(dense_bn, dense_conv.bias)
    weight = _per_out(dense_conv.weight, scale)
    scale_p, shift_p = _bn_scale_shift(point_bn, point_conv.bias)
    weight[:, :, k // 2, k // 2] += _per_out(point_conv.weight, scale_p)[:, :, 0, 0]
    bias = bias + shift_p
    if identity_bn is not None:
        c_out = dense_conv.out_channels
        if dense_conv.in_channels != c_out or dense_conv.stride != (1, 1):
            raise ValueError("fuse_repconv: identity branch needs c_in == c_out and stride 1")
        scale_i, shift_i = _bn_scale_shift(identity_bn, None)
        weight += _per_out(identity_kernel(c_out, k, groups, like=weight), scale_i)
        bias = bias + shift_i
    return weight, bias.to(weight.dtype)


def fold_implicit(
    weight: Tensor, bias: Tensor | None, add: Tensor | None = None, mul: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Fold YOLOR implicit knowledge around a 1x1 conv: m * (W (x + a) + b) = W'x + b'.

    ImplicitA (``add``, per input channel) before the conv becomes bias: b += W a; ImplicitM
    (``mul``, per output channel) after it scales both: W *= m, b *= m. (YOLOR, as used by
    the YOLOv7 head; exact for unpadded convs, which the 1x1 detection convs are.) Computed in
    float64 (detection convs are small); results in the kernel's dtype.
    """
    w = _wide(weight)
    c_out, c_in_per_group = w.shape[:2]
    b = _wide(bias) if bias is not None else w.new_zeros(c_out)
    if add is not None:
        a = _wide(add).reshape(-1)
        if a.numel() != c_in_per_group:
            raise ValueError(
                f"fold_implicit: ImplicitA has {a.numel()} channels, conv reads {c_in_per_group}"
                " (grouped convs are not supported)"
            )
        b = b + w.sum(dim=(2, 3)) @ a
    if mul is not None:
        m = _wide(mul).reshape(-1)
        if m.numel() != c_out:
            raise ValueError(f"fold_implicit: ImplicitM has {m.numel()} channels, conv {c_out}")
        w = w * m.view(-1, 1, 1, 1)
        b = b * m
    return w.to(weight.dtype), b.to(weight.dtype)


def drop_aux_layers(graph: lg.LayerGraph) -> lg.LayerGraph:
    """The LayerGraph without auxiliary heads: each Detect keeps its lead inputs only, and
    every layer the output no longer reads is pruned (names and order kept).

    The LayerGraph-level twin of ``transforms.deploy.drop_aux_heads``: lowering the pruned
    BlockGraph gives the same layers.
    """
    layers = []
    for layer in graph:
        op = layer.op
        if isinstance(op, lg.Detect) and op.aux_c_ins:
            layer = replace(
                layer, op=replace(op, aux_c_ins=()), inputs=layer.inputs[: len(op.c_ins)]
            )
        layers.append(layer)
    needed = {layers[-1].name}
    for layer in reversed(layers):
        if layer.name in needed:
            needed.update(layer.inputs)
    return replace(graph, layers=tuple(layer for layer in layers if layer.name in needed))


def deploy_layer_graph(graph: lg.LayerGraph) -> lg.LayerGraph:
    """The deploy LayerGraph of a training-form one: aux heads dropped, every op fused."""
    return fuse_layers(drop_aux_layers(graph))


def _check_target(source: lg.LayerGraph, target: lg.LayerGraph) -> None:
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


def _conv_weights(op: lg.Op, module: nn.Module) -> tuple[Tensor, Tensor]:
    """The fused (weight, bias) of a training Conv or RepConv layer."""
    if isinstance(op, lg.RepConv):
        assert isinstance(module, modules.RepConv)
        return fuse_repconv(
            module.dense[0], module.dense[1], module.point[0], module.point[1], module.identity
        )
    assert isinstance(module, modules.ConvBNAct)
    conv = module.conv
    if isinstance(module.bn, nn.BatchNorm2d):
        return fuse_conv_bn(conv.weight, conv.bias, module.bn)
    weight = conv.weight.detach()  # already plain (no BN): copied as is
    return weight, conv.bias.detach() if conv.bias is not None else weight.new_zeros(len(weight))


def _copy_detect(src: modules.Detect, dst: modules.Detect) -> list[str]:
    """Fold the lead convs' implicit knowledge into ``dst``; returns the state keys written."""
    written = ["anchors", "stride"]
    for i, (conv_src, conv_dst) in enumerate(zip(src.m, dst.m, strict=True)):
        add = src.ia[i].implicit if src.ia is not None else None
        mul = src.im[i].implicit if src.im is not None else None
        w, b = fold_implicit(conv_src.weight, conv_src.bias, add, mul)
        conv_dst.weight.copy_(w)
        conv_dst.bias.copy_(b)
        written += [f"m.{i}.weight", f"m.{i}.bias"]
    dst.anchors.copy_(src.anchors)
    dst.stride.copy_(src.stride)
    return written


def _model_dtype_device(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return t.dtype, t.device
    return torch.get_default_dtype(), torch.device("cpu")


@torch.no_grad()
def reparameterize(
    model: fx.GraphModule, layer_graph_deploy: lg.LayerGraph | None = None
) -> fx.GraphModule:
    """The deploy module of a training-form model, with weights fused so outputs are equal in
    eval mode (auxiliary heads dropped; they are not run in eval anyway).

    ``model`` must carry ``.layer_graph`` (models from ``build_module``/``create_model`` do).
    ``layer_graph_deploy`` defaults to ``fuse_layers(drop_aux_layers(model.layer_graph))``;
    if given, each of its layers must be the fused form of the model's layer of that name.
    The result is in eval mode, on the model's device and dtype, with ``.layer_graph`` set.
    The input model is not changed.
    """
    source = getattr(model, "layer_graph", None)
    if not isinstance(source, lg.LayerGraph):
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
        dst = fused_modules[layer.name]
        src = model.get_submodule(layer.name)
        if isinstance(layer.op, lg.Conv):
            w, b = _conv_weights(source[layer.name].op, src)
            dst.conv.weight.copy_(w)
            keys = ["conv.weight"]
            if dst.conv.bias is not None:  # a bare conv (CSP split) stays without bias
                dst.conv.bias.copy_(b)
                keys.append("conv.bias")
        elif isinstance(layer.op, lg.Detect):
            keys = _copy_detect(src, dst)
        else:  # an op that fusing leaves alone: copy its state as is
            dst.load_state_dict(src.state_dict())
            keys = list(dst.state_dict())
        written.update(f"{layer.name}.{key}" for key in keys)
    missing = set(fused.state_dict()) - written
    if missing:  # a fresh random init left in place would be a silent error
        raise RuntimeError(f"reparameterize: no weights computed for {sorted(missing)[:5]}")
    fused.eval()
    fused.layer_graph = target
    return fused
