"""Residual blocks: the Darknet stack and CSPDarknet (paper §5.4.2, Fig. 7, Table 5).

The dark block is 1x1 then 3x3, added to its input. ``reversed: true`` swaps them (3x3 then
1x1, Fig. 7): same parameters and operations, but the 3x3 conv no longer feeds the residual
add directly, so a RepConv there may keep its identity branch (planned re-parameterization).
``unit: res`` stacks ResNet bottlenecks (1x1, 3x3, 1x1) instead (YOLOR's Res / ResX).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from scaling_lab.graph.blocks.basic import check_positive
from scaling_lab.graph.blocks.units import Unit, residual_unit
from scaling_lab.graph.registry import FieldError, register_block
from scaling_lab.layers.builder import LayerBuilder, Port


@dataclass(frozen=True)
class ResCfg:
    """Darknet residual stack: ``depth`` dark blocks (1x1 -> 3x3, + input) at input width."""

    depth: int = field(default=1, metadata={"scale": "depth"})
    hidden: int | None = field(default=None, metadata={"scale": "width"})  # None: input / 2
    reversed: bool = False
    shortcut: bool = True
    unit: Unit = "dark"  # res: 1x1 -> 3x3 -> 1x1 (ResNet bottleneck)
    groups: int = 1  # of each unit's 3x3 conv (ResX: 32)

    def check(self) -> None:
        check_positive(self, "depth", "hidden", "groups")
        if self.reversed and self.unit != "dark":
            raise FieldError("reversed", "only the dark unit can be reversed")


@register_block("res", ResCfg, role="computational")
def lower_res(cfg: ResCfg, inputs: list[Port], lb: LayerBuilder) -> Port:
    (x,) = inputs
    hidden = cfg.hidden or max(1, x.c // 2)
    for _ in range(cfg.depth):
        x = residual_unit(
            x,
            lb,
            unit=cfg.unit,
            hidden=hidden,
            groups=cfg.groups,
            shortcut=cfg.shortcut,
            reversed_=cfg.reversed,
        )
    return x


@dataclass(frozen=True)
class CspCfg:
    """CSPDarknet stage (BottleneckCSP): a 1x1 into ``depth`` dark blocks and a bare 1x1,
    a bare 1x1 shortcut of the input, BatchNorm + activation on their concat, 1x1 to c_out.

    ``tail: false`` drops the bare 1x1 after the dark blocks (YOLOR's BottleneckCSPF);
    ``bypass: entry`` takes the shortcut from the entry 1x1 instead of the input
    (BottleneckCSP2, with ``hidden`` = ``c_out`` and no residual adds).
    """

    c_out: int = field(metadata={"scale": "transition"})
    hidden: int | None = field(default=None, metadata={"scale": "width"})  # None: c_out / 2
    depth: int = field(default=1, metadata={"scale": "depth"})
    reversed: bool = False
    shortcut: bool = True
    tail: bool = True
    bypass: Literal["input", "entry"] = "input"

    def check(self) -> None:
        check_positive(self, "c_out", "hidden", "depth")
        if self.hidden is None and self.c_out % 2:
            raise FieldError("c_out", f"must be even when hidden is not given, got {self.c_out}")


@register_block("csp", CspCfg, role="computational")
def lower_csp(cfg: CspCfg, inputs: list[Port], lb: LayerBuilder) -> Port:
    (x,) = inputs
    hidden = cfg.hidden or cfg.c_out // 2
    entry = h = lb.conv(x, hidden, 1)
    for _ in range(cfg.depth):
        h = residual_unit(h, lb, hidden=hidden, shortcut=cfg.shortcut, reversed_=cfg.reversed)
    main = lb.conv(h, hidden, 1, bn=False, act="identity") if cfg.tail else h
    side = lb.conv(x if cfg.bypass == "input" else entry, hidden, 1, bn=False, act="identity")
    joined = lb.bn_act(lb.concat([main, side]))
    return lb.conv(joined, cfg.c_out, 1)
