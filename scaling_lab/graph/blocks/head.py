"""Detection heads: ``detect`` (lead only) and ``aux_detect`` (lead + auxiliary, §4.2)."""

from __future__ import annotations

from dataclasses import dataclass

from scaling_lab.graph.registry import register_block
from scaling_lab.layers.builder import LayerBuilder, Port


@dataclass(frozen=True)
class DetectCfg:
    """YOLO head on the `from` levels (small stride first), anchors from the model.

    ``implicit``: YOLOR implicit knowledge, added before and multiplied after each 1x1 conv
    (folded into the conv when fused).
    """

    implicit: bool = True


@register_block("detect", DetectCfg, n_inputs=None, head=True)
def lower_detect(cfg: DetectCfg, inputs: list[Port], lb: LayerBuilder) -> Port:
    return lb.detect(inputs, implicit=cfg.implicit)


@dataclass(frozen=True)
class AuxDetectCfg:
    """Lead head plus auxiliary head: `from` lists the lead levels, then one auxiliary input
    per level in the same order. The deploy graph drops the auxiliary inputs (and every node
    that only fed them)."""

    implicit: bool = True


@register_block("aux_detect", AuxDetectCfg, n_inputs=None, head=True)
def lower_aux_detect(cfg: AuxDetectCfg, inputs: list[Port], lb: LayerBuilder) -> Port:
    if len(inputs) % 2:
        raise lb.fail(
            f"needs lead inputs then as many auxiliary inputs, got {len(inputs)} inputs", "from"
        )
    half = len(inputs) // 2
    return lb.detect(inputs[:half], inputs[half:], implicit=cfg.implicit)
