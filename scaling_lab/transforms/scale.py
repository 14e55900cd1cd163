"""Model scaling: BlockGraph -> BlockGraph with depth and width multiples (paper §3.2).

Each block field says what it is through its dataclass metadata (``metadata={"scale": ...}``;
see ``scaling_lab.graph.registry``): ``width`` (a channel count), ``transition`` (a
computational block's own final 1x1 width), ``depth`` (a number of stacked layers); a field
with ``metadata={"at_most": "depth"}`` is kept <= that field. Fields without metadata are
never changed, and neither is any block whose role is ``fixed``.

Modes:

- ``width``: every channel count of every computational and transition block x ``width``
  (the usual width multiplier; ELAN c_hidden, c_chain and c_out alike). ``depth`` must be 1.
  With ``heads=True`` the detection head's own widths too (YOLOX's decoupled head, whose
  width is 256 x the model's width multiple); the YOLO ``Detect`` heads have none.
- ``depth``: the depth of every computational block x ``depth``. A concatenation-based block
  then concatenates more outputs, so its transition reads a wider input; every transition
  width (its own c_out included) stays as it was (Fig. 3b). ``width`` must be None or 1.
- ``compound`` (Fig. 3c): the depth of every computational block x ``depth``; each block's
  own transition is widened by that block's derived ratio, ``concat_width()`` after / before
  (an ELAN of depth 4 -> 6 concatenates 5 outputs instead of 4: x1.25); its inner widths stay.
  Standalone transition blocks (conv, repconv, mp_down, downc, sppcspc) are widened by
  ``width``. With ``width=None`` that factor is the ratio the blocks derive, which must then
  be one ratio (within 1%); an explicit ``width`` must lie within 1% of the range of the
  blocks' ratios, so that every transition keeps its in/out ratio. Blocks without
  ``concat_width()`` (output width independent of depth) derive x1 and take no part in that
  check; in a graph with none, ``width`` (None: 1) is used as given. Table 3's compound row is
  ``scale(base, depth=1.5, width=1.25)``, which equals ``scale(base, depth=1.5)``.

Rounding (applied only to fields whose factor is not exactly 1, so a factor of 1 changes
nothing): channels go to the nearest multiple of 8 (halves up), at least 8; depths to the
nearest integer (halves up), at least 1; then every ``at_most`` field is clamped (ELAN
``tap_every <= depth``).

The result keeps the input's name and settings except ``reference`` (the published figures
of the unscaled model), which is cleared. The input graph is never changed.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from typing import Any

from scaling_lab.graph.block_graph import BlockGraph, BlockNode
from scaling_lab.graph.registry import FieldError, check_sizes
from scaling_lab.spec.errors import SpecError

MODES = ("compound", "width", "depth")
CHANNEL_MULTIPLE = 8
RATIO_TOLERANCE = 0.01  # relative: how closely compound's width must match the blocks' ratios
_EPS = 1e-9  # keeps x.5 from rounding down through floating-point error


def round_channels(c: int, factor: float) -> int:
    """``c * factor`` to the nearest multiple of 8 (halves up), at least 8; factor 1 keeps c."""
    if factor == 1:
        return c
    multiples = math.floor(c * factor / CHANNEL_MULTIPLE + 0.5 + _EPS)
    return max(CHANNEL_MULTIPLE, multiples * CHANNEL_MULTIPLE)


def round_depth(n: int, factor: float) -> int:
    """``n * factor`` to the nearest integer (halves up), at least 1; factor 1 keeps n."""
    if factor == 1:
        return n
    return max(1, math.floor(n * factor + 0.5 + _EPS))


def scale(
    graph: BlockGraph,
    *,
    depth: float = 1.0,
    width: float | None = None,
    mode: str = "compound",
    heads: bool = False,
) -> BlockGraph:
    """A copy of ``graph`` scaled in depth and/or width (see the module docstring)."""
    _check_args(depth, width, mode)
    if heads and mode != "width":
        raise SpecError(f"scale(): argument 'heads' applies to mode 'width' only, not {mode!r}")
    if mode == "width":
        factor = 1.0 if width is None else width
        nodes = [_scale_width(node, factor, graph.source, heads) for node in graph.nodes]
    elif mode == "depth":
        nodes = [_scale_depth(node, depth, graph.source) for node in graph.nodes]
    else:
        nodes = _scale_compound(graph, depth, width)
    return dataclasses.replace(graph.with_nodes(nodes), reference={})


def _check_args(depth: Any, width: Any, mode: Any) -> None:
    if mode not in MODES:
        known = ", ".join(repr(m) for m in MODES)
        raise SpecError(f"scale(): argument 'mode' must be one of {known}, got {mode!r}")
    _check_factor("depth", depth)
    if width is not None:
        _check_factor("width", width)
    if mode == "width" and depth != 1:
        raise SpecError(
            f"scale(): argument 'depth' must be 1 in mode 'width', got {depth} "
            "(mode 'compound' scales depth and width together)"
        )
    if mode == "depth" and width not in (None, 1):
        raise SpecError(
            f"scale(): argument 'width' must be None or 1 in mode 'depth', got {width} "
            "(mode 'compound' scales depth and width together)"
        )


def _check_factor(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpecError(f"scale(): argument '{name}' must be a finite number, got {value!r}")
    if value <= 0:
        raise SpecError(f"scale(): argument '{name}' must be > 0, got {value}")


def _rescale(node: BlockNode, factors: dict[str, float], source: str) -> BlockNode:
    """The node with each field of scale kind ``k`` multiplied by ``factors[k]`` and rounded."""
    changes = {}
    for f in dataclasses.fields(node.cfg):
        kind, value = f.metadata.get("scale"), getattr(node.cfg, f.name)
        if kind not in factors or value is None:
            continue
        rounding = round_depth if kind == "depth" else round_channels
        changes[f.name] = rounding(value, factors[kind])
    for f in dataclasses.fields(node.cfg):
        bound = f.metadata.get("at_most")
        value = getattr(node.cfg, f.name)
        if bound is not None and value is not None:
            limit = changes.get(bound, getattr(node.cfg, bound))
            if limit is not None and value > limit:
                changes[f.name] = limit
    if all(getattr(node.cfg, k) == v for k, v in changes.items()):
        return node
    cfg = dataclasses.replace(node.cfg, **changes)
    try:
        check_sizes(node.block, cfg)
    except SpecError as exc:
        raise SpecError(
            f"after scaling: {exc.reason}", source=source, node=node.name, field=exc.field
        ) from None
    check = getattr(cfg, "check", None)
    if check is not None:
        try:
            check()
        except FieldError as exc:
            raise SpecError(
                f"after scaling: {exc}", source=source, node=node.name, field=exc.field
            ) from None
    return dataclasses.replace(node, cfg=cfg)


def _scale_width(node: BlockNode, width: float, source: str, heads: bool = False) -> BlockNode:
    if node.role == "fixed" and not (heads and node.block.head):
        return node
    return _rescale(node, {"width": width, "transition": width}, source)


def _scale_depth(node: BlockNode, depth: float, source: str) -> BlockNode:
    if node.role != "computational":
        return node
    return _rescale(node, {"depth": depth}, source)


def _concat_ratio(before: Any, after: Any) -> float | None:
    """How much depth scaling widened a block's concat; None if the block has no concat."""
    concat_width = getattr(before, "concat_width", None)
    if concat_width is None:
        return None
    return after.concat_width() / concat_width()


def _scale_compound(graph: BlockGraph, depth: float, width: float | None) -> list[BlockNode]:
    deeper: dict[str, BlockNode] = {}
    ratios: dict[str, float] = {}
    for node in graph.nodes:
        if node.role == "computational":
            deeper[node.name] = _scale_depth(node, depth, graph.source)
            ratio = _concat_ratio(node.cfg, deeper[node.name].cfg)
            if ratio is not None:
                ratios[node.name] = ratio
    factor = _compound_width(width, ratios, depth)
    nodes = []
    for node in graph.nodes:
        if node.name in deeper:
            own = {"transition": ratios.get(node.name, 1.0)}
            nodes.append(_rescale(deeper[node.name], own, graph.source))
        elif node.role == "transition":
            nodes.append(_rescale(node, {"width": factor, "transition": factor}, graph.source))
        else:
            nodes.append(node)
    return nodes


def _compound_width(width: float | None, ratios: dict[str, float], depth: float) -> float:
    """The factor for standalone transitions: ``width``, checked against the blocks' ratios."""
    if not ratios:
        return 1.0 if width is None else width
    low, high = min(ratios.values()), max(ratios.values())
    if width is None:
        if high > low * (1 + RATIO_TOLERANCE):
            raise SpecError(
                f"scale(): depth {depth} widens the computational blocks by different factors "
                f"({_describe_ratios(ratios)}); pass argument 'width' for the transitions"
            )
        return statistics.median(ratios.values())
    if not low * (1 - RATIO_TOLERANCE) <= width <= high * (1 + RATIO_TOLERANCE):
        raise SpecError(
            f"scale(): argument 'width' ({width}) disagrees with the change of the blocks' "
            f"output width that depth {depth} gives ({_describe_ratios(ratios)}); compound "
            "scaling widens transitions by that change (§3.2): pass width=None to derive it, "
            "or use mode 'width' or 'depth'"
        )
    return width


def _describe_ratios(ratios: dict[str, float]) -> str:
    groups: dict[float, list[str]] = {}
    for name, ratio in ratios.items():
        groups.setdefault(round(ratio, 4), []).append(name)
    parts = []
    for ratio, names in sorted(groups.items()):
        more = f", +{len(names) - 3} more" if len(names) > 3 else ""
        parts.append(f"x{ratio:g}: {', '.join(names[:3])}{more}")
    return "; ".join(parts)
