"""Residual units stacked inside the Darknet / CSP blocks (not a block type themselves).

- ``dark``: 1x1 to ``hidden``, then 3x3 back to the input width (Darknet / YOLOv5 Bottleneck);
  ``reversed`` swaps the two convs (3x3 first, paper Fig. 7).
- ``res``: 1x1 to ``hidden``, 3x3 at ``hidden`` (``groups`` > 1: ResNeXt), 1x1 back to the
  input width (the ResNet bottleneck, YOLOR's Res / ResX).

Either is added to its input when ``shortcut`` is set.
"""

from __future__ import annotations

from typing import Literal

from scaling_lab.layers.builder import LayerBuilder, Port

Unit = Literal["dark", "res"]


def residual_unit(
    x: Port,
    lb: LayerBuilder,
    *,
    unit: Unit = "dark",
    hidden: int,
    groups: int = 1,
    shortcut: bool = True,
    reversed_: bool = False,
) -> Port:
    """One unit at ``x``'s width; emits its convs (and the add) through ``lb``."""
    if unit == "res":
        y = lb.conv(lb.conv(lb.conv(x, hidden, 1), hidden, 3, groups=groups), x.c, 1)
    elif reversed_:
        y = lb.conv(lb.conv(x, hidden, 3, groups=groups), x.c, 1)
    else:
        y = lb.conv(lb.conv(x, hidden, 1), x.c, 3, groups=groups)
    return lb.add([x, y]) if shortcut else y
