"""Decoupled, anchor-free detection heads: YOLOX and PP-YOLOE (ET-head).

Both lower to plain layers per level (convs with BatchNorm, prediction convs with a bias) and
end in an ``Outputs`` layer: the per-level maps in training mode, every cell flattened and
concatenated in eval mode (raw predictions; box decoding is left to the trainer).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from scaling_lab.graph.blocks.basic import check_positive
from scaling_lab.graph.registry import register_block
from scaling_lab.layers.builder import LayerBuilder, Port


def _predict(lb: LayerBuilder, x: Port, c_out: int, k: int = 1) -> Port:
    """A prediction conv: bias, no BatchNorm, no activation."""
    return lb.conv(x, c_out, k, bn=False, bias=True, act="identity")


@dataclass(frozen=True)
class YoloxHeadCfg:
    """YOLOX head on the `from` levels: per level a 1x1 stem to ``c``, a classification branch
    and a regression branch of ``depth`` 3x3 convs each, then 1x1 predictions: classes (from
    the classification branch), box (4) and objectness (1) (from the regression branch),
    concatenated [box, objectness, classes]."""

    c: int = field(metadata={"scale": "width"})  # head width (256 x the width multiple)
    depth: int = 2

    def check(self) -> None:
        check_positive(self, "c", "depth")


@register_block("yolox_head", YoloxHeadCfg, n_inputs=None, head=True)
def lower_yolox_head(cfg: YoloxHeadCfg, inputs: list[Port], lb: LayerBuilder) -> Port:
    maps = []
    for x in inputs:
        stem = lb.conv(x, cfg.c, 1)
        cls = reg = stem
        for _ in range(cfg.depth):
            cls = lb.conv(cls, cfg.c, 3)
        for _ in range(cfg.depth):
            reg = lb.conv(reg, cfg.c, 3)
        cls_pred = _predict(lb, cls, lb.settings.nc)
        maps.append(lb.concat([_predict(lb, reg, 4), _predict(lb, reg, 1), cls_pred]))
    return lb.outputs(maps)


@dataclass(frozen=True)
class PpyoloeHeadCfg:
    """PP-YOLOE's efficient task-aligned head on the `from` levels: per level a global average
    feeds two ESE gates (1x1 conv with bias, sigmoid); the classification branch is
    conv1x1(x * gate) + x, then a 3x3 prediction of the classes; the regression branch
    conv1x1(x * gate), then a 3x3 prediction of 4 x (reg_max + 1) distance bins, concatenated
    [distances, classes]. The fixed projection of the bins (not learned) is left out."""

    reg_max: int = 16

    def check(self) -> None:
        check_positive(self, "reg_max")


@register_block("ppyoloe_head", PpyoloeHeadCfg, n_inputs=None, head=True)
def lower_ppyoloe_head(cfg: PpyoloeHeadCfg, inputs: list[Port], lb: LayerBuilder) -> Port:
    maps = []
    for x in inputs:
        pooled = lb.global_avg_pool(x)
        branches = []
        for _ in ("cls", "reg"):
            gate = lb.conv(pooled, x.c, 1, bn=False, bias=True, act="sigmoid")
            branches.append(lb.conv(lb.mul(x, gate), x.c, 1))
        cls_pred = _predict(lb, lb.add([branches[0], x]), lb.settings.nc, 3)
        reg_pred = _predict(lb, branches[1], 4 * (cfg.reg_max + 1), 3)
        maps.append(lb.concat([reg_pred, cls_pred]))
    return lb.outputs(maps)
