"""The stem of the CSP-ResNet / CSP-ResNeXt baselines (``Stem`` of the reference's layer lists)."""

from __future__ import annotations

from dataclasses import dataclass, field

from scaling_lab.graph.blocks.basic import check_positive
from scaling_lab.graph.registry import register_block
from scaling_lab.layers.builder import LayerBuilder, Port


@dataclass(frozen=True)
class StemCfg:
    """Stride-4 stem: 3x3 stride 2 to ``hidden``, then [1x1, 3x3 stride 2] and a 2x2 max pool
    of that first conv, concatenated (conv branch first), 1x1 to ``c``."""

    c: int = field(metadata={"scale": "width"})  # output channels
    hidden: int | None = field(default=None, metadata={"scale": "width"})  # None: c // 2

    def check(self) -> None:
        check_positive(self, "c", "hidden")


@register_block("stem", StemCfg, role="transition")
def lower_stem(cfg: StemCfg, inputs: list[Port], lb: LayerBuilder) -> Port:
    hidden = cfg.hidden or max(1, cfg.c // 2)
    first = lb.conv(inputs[0], hidden, 3, 2)
    strided = lb.conv(lb.conv(first, hidden, 1), hidden, 3, 2)
    pooled = lb.maxpool(first, 2)
    return lb.conv(lb.concat([strided, pooled]), cfg.c, 1)
