"""Planned RepConv placement on the LayerGraph (paper §4.1, Fig. 4, Tables 4-5).

The gradient-path rule: RepConv's identity branch destroys the gradient diversity that a
residual add or a concatenation provides, so a conv whose output is consumed by an ``add`` or
a concatenation gets RepConvN (no identity); any other eligible conv gets a full RepConv.

A policy is a name or a mapping of layer-name patterns (``fnmatch``) to a placement, applied in
order so later entries override earlier ones:

- ``none``: plain convs everywhere (existing RepConvs become convs);
- ``all``: every 3x3 conv becomes a RepConv with identity wherever shapes allow (the naive
  placement the paper warns against);
- ``planned``: the gradient-path rule above;
- ``{"elan1.cv3": "repconv", "elan1.cv5": "repconvn", "*.cv4": "conv"}``: explicit positions,
  values ``repconv`` (with identity), ``repconvn``, ``conv``, ``planned`` or ``all``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import replace

from scaling_lab.layers.layer_graph import Layer, LayerGraph
from scaling_lab.ops.base import Op
from scaling_lab.ops.conv import Conv, RepConv
from scaling_lab.spec.errors import SpecError

POLICIES = ("none", "all", "planned")
PLACEMENTS = ("conv", "repconv", "repconvn", "planned", "all")
_AS_MAPPING = {"none": "conv", "all": "all", "planned": "planned"}

Policy = str | Mapping[str, str]


def parse_policy(text: str) -> Policy:
    """CLI form: ``planned`` or ``elan1.cv3=repconv,elan1.cv5=repconvn``."""
    if "=" not in text:
        return text
    mapping: dict[str, str] = {}
    for item in text.split(","):
        pattern, _, placement = item.partition("=")
        if not pattern.strip() or not placement.strip():
            raise SpecError(f"expected PATTERN=PLACEMENT, got '{item}'", field="repconv")
        mapping[pattern.strip()] = placement.strip()
    return mapping


def _as_mapping(policy: Policy) -> Mapping[str, str]:
    if isinstance(policy, str):
        if policy not in _AS_MAPPING:
            raise SpecError(
                f"unknown RepConv policy '{policy}' (known: {', '.join(POLICIES)}, "
                "or PATTERN=PLACEMENT,...)",
                field="repconv",
            )
        return {"*": _AS_MAPPING[policy]}
    for pattern, placement in policy.items():
        if placement not in PLACEMENTS:
            raise SpecError(
                f"position '{pattern}': unknown placement '{placement}' (known: "
                f"{', '.join(PLACEMENTS)})",
                field="repconv",
            )
    return policy


def eligible(layer: Layer) -> bool:
    """A training-form conv with an odd kernel >= 3, or an existing RepConv."""
    op = layer.op
    if isinstance(op, RepConv):
        return True
    return isinstance(op, Conv) and op.bn and op.k >= 3 and op.k % 2 == 1


def feeds_join(layer: Layer, consumers: Mapping[str, list[Layer]]) -> bool:
    """Is this layer's output consumed by a residual add or a concatenation?"""
    return any(c.op.joins_paths for c in consumers.get(layer.name, []))


def _place(layer: Layer, placement: str, joins: bool, pattern: str) -> Op:
    op = layer.op
    assert isinstance(op, (Conv, RepConv))
    if placement == "conv":
        return Conv(op.c_in, op.c_out, op.k, op.s, op.k // 2, op.groups, op.act)
    rep = RepConv(op.c_in, op.c_out, op.k, op.s, op.groups, op.act)
    if placement == "repconv" and not rep.can_identity:
        raise SpecError(
            f"position '{pattern}': '{layer.name}' cannot have an identity branch "
            f"({op.c_in} -> {op.c_out} channels, stride {op.s}); use repconvn",
            field="repconv",
        )
    without = placement == "repconvn" or (placement == "planned" and joins)
    return replace(rep, identity=rep.can_identity and not without)


def plan_repconv(graph: LayerGraph, policy: Policy | None) -> LayerGraph:
    """Place RepConv / RepConvN / plain convs by ``policy``; None keeps the graph as written."""
    if policy is None:
        return graph
    if graph.form != "training":
        raise SpecError(
            "RepConv planning applies to the training form (plan, then fuse)", field="repconv"
        )
    consumers = graph.consumers()
    candidates = [layer for layer in graph if eligible(layer)]
    placed: dict[str, Op] = {}
    for pattern, placement in _as_mapping(policy).items():
        matched = [layer for layer in candidates if fnmatch.fnmatchcase(layer.name, pattern)]
        if not matched:
            raise SpecError(_no_match(pattern, candidates), field="repconv")
        for layer in matched:
            placed[layer.name] = _place(layer, placement, feeds_join(layer, consumers), pattern)
    return graph.replace_ops(placed)


def _no_match(pattern: str, candidates: list[Layer]) -> str:
    node = pattern.split(".", 1)[0]
    near = [c.name for c in candidates if c.node == node] or [c.name for c in candidates[:8]]
    return (
        f"position '{pattern}' names no 3x3 conv (eligible: {', '.join(near)}"
        f"{'' if len(near) < 8 else ', ...'})"
    )


def repconv_summary(graph: LayerGraph) -> dict[str, int]:
    """How many RepConv (with identity), RepConvN and plain 3x3 convs the graph has."""
    counts = {"repconv": 0, "repconvn": 0, "conv3x3": 0}
    for layer in graph:
        if isinstance(layer.op, RepConv):
            counts["repconv" if layer.op.identity else "repconvn"] += 1
        elif eligible(layer):
            counts["conv3x3"] += 1
    return counts
