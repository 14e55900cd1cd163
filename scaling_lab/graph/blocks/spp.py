"""Spatial pyramid pooling without the CSP split: SPP (YOLOv3/v5, YOLOX) and SPPF (YOLOv5)."""

from __future__ import annotations

from dataclasses import dataclass, field

from scaling_lab.graph.blocks.basic import check_positive
from scaling_lab.graph.registry import FieldError, register_block
from scaling_lab.layers.builder import LayerBuilder, Port


def _check_kernels(kernels: tuple[int, ...]) -> None:
    if not kernels or any(k < 1 or k % 2 == 0 for k in kernels):
        raise FieldError("k", f"pool kernels must be odd and >= 1, got {list(kernels)}")


@dataclass(frozen=True)
class SppCfg:
    """SPP: 1x1 to hidden, parallel stride-1 max pools, concat [x, pools...], 1x1 to c."""

    c: int = field(metadata={"scale": "width"})  # output channels
    hidden: int | None = field(default=None, metadata={"scale": "width"})  # None: input / 2
    k: tuple[int, ...] = (5, 9, 13)

    def check(self) -> None:
        check_positive(self, "c", "hidden")
        _check_kernels(self.k)


@register_block("spp", SppCfg, role="transition")
def lower_spp(cfg: SppCfg, inputs: list[Port], lb: LayerBuilder) -> Port:
    (x,) = inputs
    y = lb.conv(x, cfg.hidden or max(1, x.c // 2), 1)
    pools = [lb.maxpool(y, k, 1) for k in cfg.k]
    return lb.conv(lb.concat([y, *pools]), cfg.c, 1)


@dataclass(frozen=True)
class SppfCfg:
    """SPPF: 1x1 to hidden, ``n`` max pools of kernel k in series, concat [x, each pool's
    output], 1x1 to c (equal to SPP with kernels k, 2k-1, 3k-2, ...)."""

    c: int = field(metadata={"scale": "width"})
    hidden: int | None = field(default=None, metadata={"scale": "width"})  # None: input / 2
    k: int = 5
    n: int = 3

    def check(self) -> None:
        check_positive(self, "c", "hidden", "n")
        _check_kernels((self.k,))


@register_block("sppf", SppfCfg, role="transition")
def lower_sppf(cfg: SppfCfg, inputs: list[Port], lb: LayerBuilder) -> Port:
    (x,) = inputs
    taps = [lb.conv(x, cfg.hidden or max(1, x.c // 2), 1)]
    for _ in range(cfg.n):
        taps.append(lb.maxpool(taps[-1], cfg.k, 1))
    return lb.conv(lb.concat(taps), cfg.c, 1)
