"""PP-YOLOE's CSPRepResNet stage (backbone) and CSP-PAN stage (neck).

Both stack RepVGG-style basic blocks: a 3x3 conv + BN + act, then a RepConv without identity
branch (3x3 + 1x1, each with BN; one 3x3 conv once fused), added to the input in the
backbone. Effective squeeze-excitation (ESE) re-weights the backbone stage's concat:
``x * hardsigmoid(conv1x1(mean over H, W of x))``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from scaling_lab.graph.blocks.basic import check_positive
from scaling_lab.graph.registry import register_block
from scaling_lab.layers.builder import LayerBuilder, Port


def basic_block(x: Port, lb: LayerBuilder, c: int, shortcut: bool) -> Port:
    """3x3 conv, then RepConv without identity (RepVGG block), + input if ``shortcut``."""
    y = lb.repconv(lb.conv(x, c, 3), c, 3, identity=False)
    return lb.add([x, y]) if shortcut else y


def effective_se(x: Port, lb: LayerBuilder, gate_act: str = "hardsigmoid") -> Port:
    """x * gate(conv1x1 with bias of x's global average)."""
    gate = lb.conv(lb.global_avg_pool(x), x.c, 1, bn=False, bias=True, act=gate_act)
    return lb.mul(x, gate)


@dataclass(frozen=True)
class CspResStageCfg:
    """CSPRepResNet stage: 3x3 stride-2 conv to c_mid, two 1x1 halves, ``depth`` residual
    basic blocks on the second, concat [first, blocks], ESE, 1x1 to c_out. c_mid defaults
    to (input + c_out) / 2."""

    c_out: int = field(metadata={"scale": "transition"})
    depth: int = field(default=1, metadata={"scale": "depth"})
    c_mid: int | None = field(default=None, metadata={"scale": "width"})
    attention: bool = True  # ESE on the concat

    def check(self) -> None:
        check_positive(self, "c_out", "depth", "c_mid")


@register_block("cspres_stage", CspResStageCfg, role="computational")
def lower_cspres_stage(cfg: CspResStageCfg, inputs: list[Port], lb: LayerBuilder) -> Port:
    (x,) = inputs
    c_mid = cfg.c_mid or (x.c + cfg.c_out) // 2
    x = lb.conv(x, c_mid, 3, 2)
    first = lb.conv(x, c_mid // 2, 1)
    h = lb.conv(x, c_mid // 2, 1)
    for _ in range(cfg.depth):
        h = basic_block(h, lb, c_mid // 2, shortcut=True)
    y = lb.concat([first, h])
    if cfg.attention:
        y = effective_se(y, lb)
    return lb.conv(y, cfg.c_out, 1)


@dataclass(frozen=True)
class CspStageCfg:
    """CSP-PAN stage: two 1x1 halves (c_out / 2), ``depth`` basic blocks without residual on
    the second (with ``spp``: after block (depth - 1) // 2, an SPP of stride-1 max pools
    5, 9, 13 concatenated with their input and fused by a 1x1), concat, 1x1 to c_out."""

    c_out: int = field(metadata={"scale": "transition"})
    depth: int = field(default=1, metadata={"scale": "depth"})
    spp: bool = False

    def check(self) -> None:
        check_positive(self, "c_out", "depth")


@register_block("csp_stage", CspStageCfg, role="computational")
def lower_csp_stage(cfg: CspStageCfg, inputs: list[Port], lb: LayerBuilder) -> Port:
    (x,) = inputs
    half = cfg.c_out // 2
    first = lb.conv(x, half, 1)
    h = lb.conv(x, half, 1)
    for i in range(cfg.depth):
        h = basic_block(h, lb, half, shortcut=False)
        if cfg.spp and i == (cfg.depth - 1) // 2:
            pools = [lb.maxpool(h, k, 1) for k in (5, 9, 13)]
            h = lb.conv(lb.concat([h, *pools]), half, 1)
    return lb.conv(lb.concat([first, h]), cfg.c_out, 1)
