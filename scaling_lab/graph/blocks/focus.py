"""The Focus stem: space-to-depth, then a conv (YOLOv5 before r6.0, YOLOX)."""

from __future__ import annotations

from dataclasses import dataclass, field

from scaling_lab.graph.blocks.basic import check_positive
from scaling_lab.graph.registry import register_block
from scaling_lab.layers.builder import LayerBuilder, Port


@dataclass(frozen=True)
class FocusCfg:
    """Focus (YOLOv5 <= r5, YOLOX): space-to-depth 2x2 (reorg), then conv + BN + act."""

    c: int = field(metadata={"scale": "width"})
    k: int = 1
    s: int = 1
    act: str | None = None

    def check(self) -> None:
        check_positive(self, "c", "k", "s")


@register_block("focus", FocusCfg, role="transition")
def lower_focus(cfg: FocusCfg, inputs: list[Port], lb: LayerBuilder) -> Port:
    return lb.conv(lb.reorg(inputs[0]), cfg.c, cfg.k, cfg.s, act=cfg.act)
