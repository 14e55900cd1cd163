"""Ops without weights: pooling, resampling, channel joins and splits, element-wise joins."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from scaling_lab.ops.base import (
    FREE,
    Op,
    OpCount,
    Port,
    Shape,
    TorchCall,
    require,
    same_spatial,
    windowed,
)


@dataclass(frozen=True)
class MaxPool(Op):
    k: int
    s: int
    p: int

    prefix = "pool"

    def infer_shape(self, inputs: Sequence[Port]) -> Shape:
        return windowed(inputs[0], self.k, self.s, self.p, inputs[0].c)

    def count(self, inputs: Sequence[Shape], out: Shape) -> OpCount:
        return FREE

    def build(self) -> Any:
        from scaling_lab.ops.modules import MaxPool2d

        return MaxPool2d(self.k, self.s, self.p)

    def fit_macs(self, inputs: Sequence[Shape], out: Shape) -> int:
        return out.elements * self.k * self.k  # no weights, but k x k reads per output

    def channel_slice(self, g: int) -> MaxPool:
        return self


@dataclass(frozen=True)
class Upsample(Op):
    scale: int = 2
    mode: str = "nearest"

    prefix = "up"

    def infer_shape(self, inputs: Sequence[Port]) -> Shape:
        x = inputs[0].shape
        require(
            x.stride % self.scale == 0,
            f"upsampling by {self.scale} from stride {x.stride}",
            "scale",
        )
        return Shape(x.c, x.h * self.scale, x.w * self.scale, x.stride // self.scale)

    def count(self, inputs: Sequence[Shape], out: Shape) -> OpCount:
        return OpCount(thop_extra_ops=out.elements)  # thop: 1 op per output element

    def build(self) -> Any:
        from torch import nn

        return nn.Upsample(scale_factor=self.scale, mode=self.mode)

    def channel_slice(self, g: int) -> Upsample:
        return self


@dataclass(frozen=True)
class Concat(Op):
    """Channel concatenation in input order."""

    prefix = "cat"
    takes_list = True
    joins_paths = True
    concatenates = True

    def infer_shape(self, inputs: Sequence[Port]) -> Shape:
        same_spatial(inputs, "concat")
        return replace(inputs[0].shape, c=sum(x.c for x in inputs))

    def count(self, inputs: Sequence[Shape], out: Shape) -> OpCount:
        return FREE

    def build(self) -> Any:
        import torch

        return TorchCall(torch.cat, (1,))


@dataclass(frozen=True)
class GroupConcat(Op):
    """Concatenation regrouped by cardinality (E-ELAN shuffle, §3.1).

    Each input holds ``groups`` equal chunks; the output lists chunk 0 of every input, then
    chunk 1 of every input, ...; a following ``groups``-grouped conv then sees one
    cardinality's features per group.
    """

    groups: int

    prefix = "cat"
    takes_list = True
    joins_paths = True

    def infer_shape(self, inputs: Sequence[Port]) -> Shape:
        same_spatial(inputs, "concat")
        for x in inputs:
            require(
                x.c % self.groups == 0,
                f"'{x.name}' has {x.c} channels, not divisible by cardinality {self.groups}",
                "cardinality",
            )
        return replace(inputs[0].shape, c=sum(x.c for x in inputs))

    def count(self, inputs: Sequence[Shape], out: Shape) -> OpCount:
        return FREE

    def build(self) -> Any:
        from scaling_lab.ops import modules

        return TorchCall(modules.group_concat, (self.groups,))

    def channel_slice(self, g: int) -> Op | None:
        """Chunk j of ``groups`` is the plain concatenation of chunk j of every input."""
        if g == 1:
            return self
        return Concat() if g == self.groups else None


@dataclass(frozen=True)
class Merge(Op):
    """Merge cardinality: split channels into ``groups`` chunks and sum them (E-ELAN)."""

    groups: int

    prefix = "merge"

    def infer_shape(self, inputs: Sequence[Port]) -> Shape:
        x = inputs[0]
        require(
            x.c % self.groups == 0,
            f"{x.c} channels cannot merge into {self.groups} groups",
            "cardinality",
        )
        return replace(x.shape, c=x.c // self.groups)

    def count(self, inputs: Sequence[Shape], out: Shape) -> OpCount:
        return FREE

    def build(self) -> Any:
        from scaling_lab.ops import modules

        return TorchCall(modules.merge_groups, (self.groups,))

    def summed_groups(self) -> int:
        return self.groups


@dataclass(frozen=True)
class Add(Op):
    """Elementwise sum of inputs with equal shapes (residual shortcut)."""

    prefix = "add"
    joins_paths = True
    sums_inputs = True

    def infer_shape(self, inputs: Sequence[Port]) -> Shape:
        first = inputs[0]
        for x in inputs[1:]:
            require(
                x.c == first.c,
                f"add needs equal channels, got {first.c} ('{first.name}') and {x.c} ('{x.name}')",
                "from",
            )
        same_spatial(inputs, "add")
        return first.shape

    def count(self, inputs: Sequence[Shape], out: Shape) -> OpCount:
        return FREE

    def build(self) -> Any:
        from scaling_lab.ops import modules

        return TorchCall(modules.add_all)

    def channel_slice(self, g: int) -> Add:
        return self


@dataclass(frozen=True)
class Reorg(Op):
    """Space-to-depth: every 2x2 pixel block becomes 4 channels (the P6 models' stem)."""

    prefix = "reorg"

    def infer_shape(self, inputs: Sequence[Port]) -> Shape:
        x = inputs[0].shape
        require(
            x.h % 2 == 0 and x.w % 2 == 0, f"reorg needs even height and width, got {x.h}x{x.w}"
        )
        return Shape(x.c * 4, x.h // 2, x.w // 2, x.stride * 2)

    def count(self, inputs: Sequence[Shape], out: Shape) -> OpCount:
        return FREE

    def build(self) -> Any:
        from scaling_lab.ops import modules

        return TorchCall(modules.reorg)


@dataclass(frozen=True)
class Chunk(Op):
    """Channel slice ``index`` of ``groups`` equal slices (Darknet's grouped route, YOLOv4-tiny)."""

    groups: int
    index: int

    prefix = "chunk"

    def infer_shape(self, inputs: Sequence[Port]) -> Shape:
        x = inputs[0]
        require(
            self.groups >= 1 and x.c % self.groups == 0,
            f"{x.c} channels cannot split into {self.groups} equal groups",
            "groups",
        )
        require(
            0 <= self.index < self.groups,
            f"slice index must be in 0..{self.groups - 1}, got {self.index}",
            "index",
        )
        return replace(x.shape, c=x.c // self.groups)

    def count(self, inputs: Sequence[Shape], out: Shape) -> OpCount:
        return FREE

    def build(self) -> Any:
        from scaling_lab.ops import modules

        return TorchCall(modules.chunk, (self.groups, self.index))

    def channel_view(self, j: int, g: int) -> tuple[int, int]:
        return (self.index * g + j, self.groups * g)


@dataclass(frozen=True)
class GlobalAvgPool(Op):
    """Mean over height and width: c x 1 x 1 (the squeeze of squeeze-excitation)."""

    prefix = "gap"

    def infer_shape(self, inputs: Sequence[Port]) -> Shape:
        return replace(inputs[0].shape, h=1, w=1)

    def count(self, inputs: Sequence[Shape], out: Shape) -> OpCount:
        return FREE  # a function in the built forward, not a module thop would see

    def build(self) -> Any:
        from scaling_lab.ops import modules

        return TorchCall(modules.global_avg_pool)


@dataclass(frozen=True)
class Mul(Op):
    """Elementwise product; a 1x1 input is broadcast over the other's height and width
    (channel attention: features x gate)."""

    prefix = "mul"

    def infer_shape(self, inputs: Sequence[Port]) -> Shape:
        x, gate = inputs
        require(
            gate.c == x.c,
            f"mul needs equal channels, got {x.c} ('{x.name}') and {gate.c} ('{gate.name}')",
            "from",
        )
        if (gate.shape.h, gate.shape.w) != (1, 1):
            same_spatial([x, gate], "mul")
        return x.shape

    def count(self, inputs: Sequence[Shape], out: Shape) -> OpCount:
        return FREE

    def build(self) -> Any:
        return TorchCall(operator.mul)
