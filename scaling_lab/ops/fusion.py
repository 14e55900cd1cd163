"""Re-parameterization arithmetic: trained weights of an op -> the weights of its fused form.

- Conv + BatchNorm -> conv with bias (``fuse_conv_bn``);
- RepConv (kxk+BN, 1x1+BN, optional identity BN) -> one kxk conv with bias (``fuse_repconv``,
  §4.1);
- Detect with implicit knowledge (YOLOR) -> plain 1x1 convs (``fold_implicit``).

Per-channel arithmetic (BN scales and shifts, summed biases, the small detection convs) runs
in float64; large kernels are scaled in the model's dtype (one rounding), so fusing a 150M
parameter model takes one to two seconds on a CPU. The ops' ``fuse_weights`` call the
``fused_*_state`` functions at the end.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import torch
from torch import nn

from scaling_lab.ops import modules

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


@torch.no_grad()
def fused_conv_state(module: modules.ConvBNAct) -> dict[str, Tensor]:
    """A Conv's fused state: BN folded into a bias; a conv without BN is copied as is."""
    if not isinstance(module.bn, nn.BatchNorm2d):
        return dict(module.state_dict())
    weight, bias = fuse_conv_bn(module.conv.weight, module.conv.bias, module.bn)
    return {"conv.weight": weight, "conv.bias": bias}


@torch.no_grad()
def fused_repconv_state(module: modules.RepConv) -> dict[str, Tensor]:
    """A RepConv's fused state: one kxk conv with bias (a ``ConvBNAct`` without BN)."""
    # each branch is Sequential(Conv2d, BatchNorm2d); torch types a Sequential's items as Module
    weight, bias = fuse_repconv(
        cast(nn.Conv2d, module.dense[0]),
        cast(nn.BatchNorm2d, module.dense[1]),
        cast(nn.Conv2d, module.point[0]),
        cast(nn.BatchNorm2d, module.point[1]),
        module.identity,
    )
    return {"conv.weight": weight, "conv.bias": bias}


@torch.no_grad()
def fused_detect_state(module: modules.Detect) -> dict[str, Tensor]:
    """The head's fused state: implicit knowledge folded into the lead convs; auxiliary convs
    and buffers copied (a deploy head without auxiliary convs reads only what it has)."""
    state: dict[str, Tensor] = {"anchors": module.anchors, "stride": module.stride}
    # the head's ModuleLists hold Conv2d, ImplicitAdd and ImplicitMul (torch types them as Module)
    for i, conv in enumerate(cast("Iterable[nn.Conv2d]", module.m)):
        add = cast(modules.ImplicitAdd, module.ia[i]).implicit if module.ia is not None else None
        mul = cast(modules.ImplicitMul, module.im[i]).implicit if module.im is not None else None
        state[f"m.{i}.weight"], state[f"m.{i}.bias"] = fold_implicit(
            conv.weight, conv.bias, add, mul
        )
    for i, conv in enumerate(cast("Iterable[nn.Conv2d]", module.aux)):
        weight, bias = conv.weight.detach(), modules.conv_bias(conv).detach()
        state[f"aux.{i}.weight"], state[f"aux.{i}.bias"] = weight, bias
    return state
