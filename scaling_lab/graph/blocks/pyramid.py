"""SPPCSPC: spatial pyramid pooling in a CSP split (the top of the YOLOv7 neck)."""

from __future__ import annotations

from dataclasses import dataclass, field

from scaling_lab.graph.blocks.basic import check_positive
from scaling_lab.graph.registry import FieldError, register_block
from scaling_lab.layers.builder import LayerBuilder, Port


@dataclass(frozen=True)
class SppcspcCfg:
    """SPPCSPC; ``light`` is yolov7-tiny's form (no 3x3 convs, one 1x1 before the pools)."""

    c: int = field(metadata={"scale": "width"})  # output channels
    hidden: int | None = field(default=None, metadata={"scale": "width"})  # branch; None: c
    k: tuple[int, ...] = (5, 9, 13)  # pooling kernels (stride 1)
    light: bool = False

    def check(self) -> None:
        check_positive(self, "c", "hidden")
        if not self.k or any(k < 1 or k % 2 == 0 for k in self.k):
            raise FieldError("k", f"pool kernels must be odd and >= 1, got {list(self.k)}")


# A transition for scaling: its widths follow the model's (YOLOv7 -> YOLOv7-X: 512 -> 640).
@register_block("sppcspc", SppcspcCfg, role="transition")
def lower_sppcspc(cfg: SppcspcCfg, inputs: list[Port], lb: LayerBuilder) -> Port:
    (x,) = inputs
    hidden = cfg.hidden or cfg.c
    if cfg.light:
        shortcut = lb.conv(x, hidden, 1)
        y = lb.conv(x, hidden, 1)
        pools = [lb.maxpool(y, k, 1) for k in cfg.k]
        y = lb.conv(lb.concat([*pools[::-1], y]), hidden, 1)
        return lb.conv(lb.concat([y, shortcut]), cfg.c, 1)
    y = lb.conv(x, hidden, 1)
    shortcut = lb.conv(x, hidden, 1)
    y = lb.conv(lb.conv(y, hidden, 3), hidden, 1)
    pools = [lb.maxpool(y, k, 1) for k in cfg.k]
    y = lb.conv(lb.conv(lb.concat([y, *pools]), hidden, 1), hidden, 3)
    return lb.conv(lb.concat([y, shortcut]), cfg.c, 1)
