"""Convolution ops: Conv (+BN or bias, + activation), RepConv (§4.1) and a standalone BN."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from scaling_lab.ops.base import (
    Op,
    OpCount,
    Port,
    ReferenceNaming,
    Shape,
    require,
    windowed,
)
from scaling_lab.spec.activations import check_activation

# thop (0.1.1) counts an affine BatchNorm as 4 ops per element
THOP_BN_OPS_PER_ELEMENT = 4


def conv_params(c_in: int, c_out: int, k: int, groups: int) -> int:
    """Weights of a kxk (grouped) conv kernel."""
    return c_out * (c_in // groups) * k * k


# how the reference (WongKinYiu/yolov7, models/common.py) names their tensors
CONV_NAMING = ReferenceNaming("conv", "conv.weight", activation="act")  # conv, bn, act
REPCONV_NAMING = ReferenceNaming(  # rbr_identity, rbr_dense, rbr_1x1, act
    "repconv",
    "rbr_dense.0.weight",
    renames=(("dense.", "rbr_dense."), ("point.", "rbr_1x1."), ("identity.", "rbr_identity.")),
    fused_markers=("rbr_reparam.weight",),  # a RepConv the reference has already fused
    activation="act",
)


def conv_slice(op: Conv | RepConv, g: int) -> Conv | RepConv | None:
    """A conv computing one of ``g`` equal chunks of its outputs: fewer outputs reading the
    whole input, or, grouped, fewer groups reading the matching chunk of the input."""
    if op.c_out % g:
        return None
    if op.groups == 1:
        return replace(op, c_out=op.c_out // g)
    if op.groups % g == 0:
        return replace(op, c_in=op.c_in // g, c_out=op.c_out // g, groups=op.groups // g)
    return None


@dataclass(frozen=True)
class Conv(Op):
    """Conv2d, then BatchNorm (training form) or a bias (fused form), then activation."""

    c_in: int
    c_out: int
    k: int = 1
    s: int = 1
    p: int = 0
    groups: int = 1
    act: str = "silu"
    bn: bool = True
    bias: bool = False

    prefix = "cv"

    def infer_shape(self, inputs: Sequence[Port]) -> Shape:
        (x,) = inputs
        require(self.c_out >= 1, f"conv output channels must be >= 1, got {self.c_out}", "c")
        require(
            x.c % self.groups == 0 and self.c_out % self.groups == 0,
            f"groups={self.groups} must divide input channels {x.c} and output channels "
            f"{self.c_out}",
            "groups",
        )
        check_activation(self.act)
        return windowed(x, self.k, self.s, self.p, self.c_out)

    def count(self, inputs: Sequence[Shape], out: Shape) -> OpCount:
        params = conv_params(self.c_in, self.c_out, self.k, self.groups)
        params += self.c_out if self.bias else 0
        params += 2 * self.c_out if self.bn else 0  # BN weight and bias (stats are buffers)
        pixels = out.h * out.w
        macs = pixels * self.c_out * (self.c_in // self.groups) * self.k * self.k
        bias_adds = out.elements if self.bias else 0
        extra = THOP_BN_OPS_PER_ELEMENT * out.elements if self.bn else 0
        return OpCount(params, macs + bias_adds, bias_adds, extra)

    def fused(self) -> Conv:
        return replace(self, bn=False, bias=True) if self.bn else self

    def build(self) -> Any:
        from scaling_lab.ops import modules

        return modules.ConvBNAct(self)

    def fuse_weights(self, module: Any) -> dict[str, Any]:
        from scaling_lab.ops import fusion

        return fusion.fused_conv_state(module)

    def reference_naming(self) -> ReferenceNaming:
        return CONV_NAMING

    def channel_slice(self, g: int) -> Conv | RepConv | None:
        return conv_slice(self, g)

    def slice_input(self, j: int, g: int) -> tuple[int, int]:
        return (0, 1) if self.groups == 1 else (j, g)


@dataclass(frozen=True)
class RepConv(Op):
    """RepVGG-style conv (§4.1): kxk+BN, 1x1+BN and, where shapes allow and planned, an
    identity BN; fuses into one kxk conv with bias."""

    c_in: int
    c_out: int
    k: int = 3
    s: int = 1
    groups: int = 1
    act: str = "silu"
    identity: bool = False

    prefix = "rep"

    @property
    def can_identity(self) -> bool:
        return self.c_in == self.c_out and self.s == 1

    def infer_shape(self, inputs: Sequence[Port]) -> Shape:
        (x,) = inputs
        require(
            self.k % 2 == 1 and self.k >= 3,
            f"repconv kernel must be odd and >= 3, got {self.k}",
            "k",
        )
        require(
            not self.identity or self.can_identity,
            f"identity branch needs c_in == c_out and stride 1 "
            f"(got {self.c_in} -> {self.c_out}, stride {self.s})",
            "identity",
        )
        check_activation(self.act)
        return windowed(x, self.k, self.s, self.k // 2, self.c_out)

    def count(self, inputs: Sequence[Shape], out: Shape) -> OpCount:
        dense = conv_params(self.c_in, self.c_out, self.k, self.groups)
        point = conv_params(self.c_in, self.c_out, 1, self.groups)
        params = dense + point + 4 * self.c_out + (2 * self.c_in if self.identity else 0)
        n_bn = 3 if self.identity else 2
        extra = THOP_BN_OPS_PER_ELEMENT * out.elements * n_bn
        return OpCount(params, out.h * out.w * (dense + point), 0, extra)

    def fused(self) -> Conv:
        return Conv(
            self.c_in,
            self.c_out,
            self.k,
            self.s,
            self.k // 2,
            self.groups,
            self.act,
            bn=False,
            bias=True,
        )

    def build(self) -> Any:
        from scaling_lab.ops import modules

        return modules.RepConv(self)

    def fuse_weights(self, module: Any) -> dict[str, Any]:
        from scaling_lab.ops import fusion

        return fusion.fused_repconv_state(module)

    def reference_naming(self) -> ReferenceNaming:
        return REPCONV_NAMING

    def channel_slice(self, g: int) -> Conv | RepConv | None:
        return conv_slice(self, g)

    def slice_input(self, j: int, g: int) -> tuple[int, int]:
        return (0, 1) if self.groups == 1 else (j, g)


@dataclass(frozen=True)
class BatchNormAct(Op):
    """A standalone BatchNorm + activation (CSPDarknet normalizes its concat). Kept as is when
    fused: no single conv produces all of its channels."""

    c: int
    act: str = "silu"

    prefix = "bn"

    def infer_shape(self, inputs: Sequence[Port]) -> Shape:
        check_activation(self.act)
        return inputs[0].shape

    def count(self, inputs: Sequence[Shape], out: Shape) -> OpCount:
        return OpCount(2 * self.c, 0, 0, THOP_BN_OPS_PER_ELEMENT * out.elements)

    def build(self) -> Any:
        from scaling_lab.ops import modules

        return modules.bn_act(self.c, self.act)

    def channel_slice(self, g: int) -> BatchNormAct | None:
        return replace(self, c=self.c // g) if self.c % g == 0 else None
