"""CSP blocks whose every conv has BatchNorm: C3 (= CSPA), CSPB and CSPC.

One lowering, three layouts (the names of the public YOLOv5 / YOLOR implementations):

- ``c3``: YOLOv5 C3 = YOLOR BottleneckCSPA = YOLOX CSPLayer. An entry 1x1 into ``depth``
  units, a 1x1 bypass of the input, concat (units first), 1x1 to ``c_out``.
- ``csp_b``: BottleneckCSPB. The bypass reads the entry 1x1 instead of the input; ``hidden``
  defaults to ``c_out`` and the units have no residual add.
- ``csp_c``: BottleneckCSPC. C3 with one more 1x1 after the units.

The units (see ``units.py``) are dark blocks at ``hidden`` width (``expansion`` 1), or with
``unit: res`` ResNet bottlenecks whose inner width is ``hidden * expansion`` (ResCSP: 0.5;
ResXCSP: 1.0 with ``groups: 32``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from scaling_lab.graph.blocks.basic import check_positive
from scaling_lab.graph.blocks.units import Unit, residual_unit
from scaling_lab.graph.registry import FieldError, register_block
from scaling_lab.layers.builder import LayerBuilder, Port


@dataclass(frozen=True)
class C3Cfg:
    """C3 / BottleneckCSPA / CSPLayer: entry 1x1 -> units, 1x1 bypass of the input, concat,
    1x1 to c_out."""

    c_out: int = field(metadata={"scale": "transition"})
    hidden: int | None = field(default=None, metadata={"scale": "width"})  # None: c_out / 2
    depth: int = field(default=1, metadata={"scale": "depth"})
    shortcut: bool = True  # residual add in each unit
    unit: Unit = "dark"
    expansion: float = 1.0  # a unit's inner width / hidden
    groups: int = 1  # of each unit's 3x3 conv
    reversed: bool = False  # reversed dark units: 3x3 then 1x1 (Fig. 7, Table 5's RCSP)

    def check(self) -> None:
        check_positive(self, "c_out", "hidden", "depth", "groups")
        if not 0 < self.expansion <= 4:
            raise FieldError("expansion", f"must be in (0, 4], got {self.expansion}")
        if self.reversed and self.unit != "dark":
            raise FieldError("reversed", "only the dark unit can be reversed")

    def hidden_width(self) -> int:
        return self.hidden or self.c_out // 2

    def unit_width(self) -> int:
        return max(1, int(self.hidden_width() * self.expansion))


@dataclass(frozen=True)
class CspBCfg(C3Cfg):
    """BottleneckCSPB: entry 1x1 -> units (no residual add), 1x1 bypass of the entry, concat,
    1x1 to c_out; hidden defaults to c_out."""

    shortcut: bool = False

    def hidden_width(self) -> int:
        return self.hidden or self.c_out


@dataclass(frozen=True)
class CspCCfg(C3Cfg):
    """BottleneckCSPC: C3 with a 1x1 after the units."""


def _lower(cfg: C3Cfg, x: Port, lb: LayerBuilder, *, bypass_entry: bool, tail: bool) -> Port:
    hidden = cfg.hidden_width()
    entry = h = lb.conv(x, hidden, 1)
    side = None if bypass_entry else lb.conv(x, hidden, 1)
    for _ in range(cfg.depth):
        h = residual_unit(
            h,
            lb,
            unit=cfg.unit,
            hidden=cfg.unit_width(),
            groups=cfg.groups,
            shortcut=cfg.shortcut,
            reversed_=cfg.reversed,
        )
    if tail:
        h = lb.conv(h, hidden, 1)
    if side is None:
        side = lb.conv(entry, hidden, 1)
    return lb.conv(lb.concat([h, side]), cfg.c_out, 1)


@register_block("c3", C3Cfg, role="computational")
def lower_c3(cfg: C3Cfg, inputs: list[Port], lb: LayerBuilder) -> Port:
    return _lower(cfg, inputs[0], lb, bypass_entry=False, tail=False)


@register_block("csp_b", CspBCfg, role="computational")
def lower_csp_b(cfg: CspBCfg, inputs: list[Port], lb: LayerBuilder) -> Port:
    return _lower(cfg, inputs[0], lb, bypass_entry=True, tail=False)


@register_block("csp_c", CspCCfg, role="computational")
def lower_csp_c(cfg: CspCCfg, inputs: list[Port], lb: LayerBuilder) -> Port:
    return _lower(cfg, inputs[0], lb, bypass_entry=False, tail=True)
