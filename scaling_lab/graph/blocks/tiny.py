"""YOLOv4-tiny's partial stage (a CSP form of an OSA block, on Darknet's grouped route)."""

from __future__ import annotations

from dataclasses import dataclass, field

from scaling_lab.graph.blocks.basic import check_positive
from scaling_lab.graph.registry import FieldError, register_block
from scaling_lab.layers.builder import LayerBuilder, Port


@dataclass(frozen=True)
class CspTinyCfg:
    """The input's second channel half through two 3x3 convs (c/2 each), both outputs
    concatenated (newest first), 1x1 to c. The stage's entry conv and its concat with this
    block's output are plain nodes, since the head also reads the 1x1."""

    c: int = field(metadata={"scale": "width"})

    def check(self) -> None:
        check_positive(self, "c")
        if self.c % 2:
            raise FieldError("c", f"must be even (two convs of c/2), got {self.c}")


@register_block("csp_tiny", CspTinyCfg, role="computational")
def lower_csp_tiny(cfg: CspTinyCfg, inputs: list[Port], lb: LayerBuilder) -> Port:
    first = lb.conv(lb.chunk(inputs[0], 2, 1), cfg.c // 2, 3)
    second = lb.conv(first, cfg.c // 2, 3)
    return lb.conv(lb.concat([second, first]), cfg.c, 1)
