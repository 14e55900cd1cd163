"""Residual blocks: the Darknet stack and CSPDarknet (paper §5.4.2, Fig. 7, Table 5).

The dark block is 1x1 then 3x3, added to its input. ``reversed: true`` swaps them (3x3 then
1x1, Fig. 7): same parameters and operations, but the 3x3 conv no longer feeds the residual
add directly, so a RepConv there may keep its identity branch (planned re-parameterization).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from scaling_lab.graph.blocks.basic import check_positive
from scaling_lab.graph.registry import FieldError, register_block
from scaling_lab.layers.builder import LayerBuilder, Port


def _dark_block(x: Port, lb: LayerBuilder, hidden: int, reversed_: bool, shortcut: bool) -> Port:
    if reversed_:
        y = lb.conv(lb.conv(x, hidden, 3), x.c, 1)
    else:
        y = lb.conv(lb.conv(x, hidden, 1), x.c, 3)
    return lb.add([x, y]) if shortcut else y


@dataclass(frozen=True)
class ResCfg:
    """Darknet residual stack: ``depth`` dark blocks (1x1 -> 3x3, + input) at input width."""

    depth: int = field(default=1, metadata={"scale": "depth"})
    hidden: int | None = field(default=None, metadata={"scale": "width"})  # None: input / 2
    reversed: bool = False
    shortcut: bool = True

    def check(self) -> None:
        check_positive(self, "depth", "hidden")


@register_block("res", ResCfg, role="computational")
def lower_res(cfg: ResCfg, inputs: list[Port], lb: LayerBuilder) -> Port:
    (x,) = inputs
    hidden = cfg.hidden or max(1, x.c // 2)
    for _ in range(cfg.depth):
        x = _dark_block(x, lb, hidden, cfg.reversed, cfg.shortcut)
    return x


@dataclass(frozen=True)
class CspCfg:
    """CSPDarknet stage (BottleneckCSP): a 1x1 into ``depth`` dark blocks and a bare 1x1,
    a bare 1x1 shortcut of the input, BatchNorm + activation on their concat, 1x1 to c_out."""

    c_out: int = field(metadata={"scale": "transition"})
    hidden: int | None = field(default=None, metadata={"scale": "width"})  # None: c_out / 2
    depth: int = field(default=1, metadata={"scale": "depth"})
    reversed: bool = False
    shortcut: bool = True

    def check(self) -> None:
        check_positive(self, "c_out", "hidden", "depth")
        if self.hidden is None and self.c_out % 2:
            raise FieldError("c_out", f"must be even when hidden is not given, got {self.c_out}")


@register_block("csp", CspCfg, role="computational")
def lower_csp(cfg: CspCfg, inputs: list[Port], lb: LayerBuilder) -> Port:
    (x,) = inputs
    hidden = cfg.hidden or cfg.c_out // 2
    h = lb.conv(x, hidden, 1)
    for _ in range(cfg.depth):
        h = _dark_block(h, lb, hidden, cfg.reversed, cfg.shortcut)
    main = lb.conv(h, hidden, 1, bn=False, act="identity")
    side = lb.conv(x, hidden, 1, bn=False, act="identity")
    joined = lb.bn_act(lb.concat([main, side]))
    return lb.conv(joined, cfg.c_out, 1)
