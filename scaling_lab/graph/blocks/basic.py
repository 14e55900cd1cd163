"""Single-op blocks: conv, repconv, pooling, resampling, joins, reorg."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from scaling_lab.graph.registry import FieldError, register_block
from scaling_lab.layers.builder import LayerBuilder, Port


def check_positive(cfg: object, *names: str) -> None:
    """Reject a zero or negative value in any of the named integer fields."""
    for name in names:
        value = getattr(cfg, name)
        if value is not None and value < 1:
            raise FieldError(name, f"must be >= 1, got {value}")


@dataclass(frozen=True)
class ConvCfg:
    """Conv + BN + activation (the YOLOv7 `Conv`)."""

    c: int = field(metadata={"scale": "width"})  # output channels
    k: int = 1  # kernel size
    s: int = 1  # stride
    groups: int = 1
    act: str | None = None  # None: the model's default activation
    p: int | None = None  # padding; None: k // 2 (YOLOv5's 6x6 stem: k 6, s 2, p 2)

    def check(self) -> None:
        check_positive(self, "c", "k", "s", "groups")
        if self.p is not None and self.p < 0:
            raise FieldError("p", f"must be >= 0, got {self.p}")


@register_block("conv", ConvCfg, role="transition")
def lower_conv(cfg: ConvCfg, inputs: list[Port], lb: LayerBuilder) -> Port:
    return lb.conv(inputs[0], cfg.c, cfg.k, cfg.s, groups=cfg.groups, act=cfg.act, p=cfg.p)


@dataclass(frozen=True)
class RepConvCfg:
    """RepConv (§4.1): 3x3 + 1x1 + optional identity branches, fused to one conv for deploy."""

    c: int = field(metadata={"scale": "width"})  # output channels
    k: int = 3
    s: int = 1
    act: str | None = None
    identity: bool | None = None  # None: wherever shapes allow (RepConv); false: RepConvN

    def check(self) -> None:
        check_positive(self, "c", "k", "s")


@register_block("repconv", RepConvCfg, role="transition")
def lower_repconv(cfg: RepConvCfg, inputs: list[Port], lb: LayerBuilder) -> Port:
    return lb.repconv(inputs[0], cfg.c, cfg.k, cfg.s, act=cfg.act, identity=cfg.identity)


@dataclass(frozen=True)
class MaxPoolCfg:
    """Max pooling; stride defaults to the kernel (MP), stride 1 keeps the size (SPP)."""

    k: int = 2
    s: int | None = None

    def check(self) -> None:
        check_positive(self, "k", "s")


@register_block("maxpool", MaxPoolCfg)
def lower_maxpool(cfg: MaxPoolCfg, inputs: list[Port], lb: LayerBuilder) -> Port:
    return lb.maxpool(inputs[0], cfg.k, cfg.s)


@dataclass(frozen=True)
class UpsampleCfg:
    """Nearest-neighbour upsampling."""

    scale: int = 2
    mode: Literal["nearest"] = "nearest"

    def check(self) -> None:
        check_positive(self, "scale")


@register_block("upsample", UpsampleCfg)
def lower_upsample(cfg: UpsampleCfg, inputs: list[Port], lb: LayerBuilder) -> Port:
    return lb.upsample(inputs[0], cfg.scale, cfg.mode)


@dataclass(frozen=True)
class ConcatCfg:
    """Channel concatenation of the `from` nodes, in the order written."""


@register_block("concat", ConcatCfg, n_inputs=None)
def lower_concat(cfg: ConcatCfg, inputs: list[Port], lb: LayerBuilder) -> Port:
    return lb.concat(inputs)


@dataclass(frozen=True)
class AddCfg:
    """Elementwise sum (residual shortcut); inputs must have equal shapes."""


@register_block("add", AddCfg, n_inputs=None)
def lower_add(cfg: AddCfg, inputs: list[Port], lb: LayerBuilder) -> Port:
    return lb.add(inputs)


@dataclass(frozen=True)
class ReorgCfg:
    """Space-to-depth 2x2 (the stem of the P6 models)."""


@register_block("reorg", ReorgCfg)
def lower_reorg(cfg: ReorgCfg, inputs: list[Port], lb: LayerBuilder) -> Port:
    return lb.reorg(inputs[0])


@dataclass(frozen=True)
class MpDownCfg:
    """YOLOv7 downsampling transition: [maxpool -> 1x1] and [1x1 -> 3x3 stride 2], concatenated."""

    c: int = field(metadata={"scale": "width"})  # output channels (each branch has c / 2)
    k: int = 2  # pooling kernel and stride

    def check(self) -> None:
        check_positive(self, "c", "k")
        if self.c % 2:
            raise FieldError("c", f"must be even (two branches of c/2), got {self.c}")


@register_block("mp_down", MpDownCfg, role="transition")
def lower_mp_down(cfg: MpDownCfg, inputs: list[Port], lb: LayerBuilder) -> Port:
    (x,) = inputs
    half = cfg.c // 2
    pooled = lb.conv(lb.maxpool(x, cfg.k), half, 1)
    strided = lb.conv(lb.conv(x, half, 1), half, 3, cfg.k)
    return lb.concat([strided, pooled])


@dataclass(frozen=True)
class DownCCfg(MpDownCfg):
    """DownC (E6, D6, E6E): [1x1 at input width -> 3x3 stride 2] and [maxpool -> 1x1], concat.

    The same fields as ``mp_down``; only the branch order and the first 1x1's width differ.
    """


@register_block("downc", DownCCfg, role="transition")
def lower_downc(cfg: DownCCfg, inputs: list[Port], lb: LayerBuilder) -> Port:
    (x,) = inputs
    half = cfg.c // 2
    strided = lb.conv(lb.conv(x, x.c, 1), half, 3, cfg.k)
    pooled = lb.conv(lb.maxpool(x, cfg.k), half, 1)
    return lb.concat([strided, pooled])
