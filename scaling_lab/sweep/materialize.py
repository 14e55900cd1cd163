"""A trial's model: the base BlockGraph with overrides and transforms applied.

Override paths (the keys of a variant's ``overrides`` and of a search space):

- ``NODE.FIELD``: a block field; ``NODE`` may be an ``fnmatch`` pattern (``elan*.depth``,
  ``*.act``) that sets every matching node having that field;
- ``nc``, ``img_size``, ``act``, ``repconv``: model-level settings (``repconv``: ``none``,
  ``all``, ``planned`` or a PATTERN -> placement mapping);
- ``scale.depth``, ``scale.width``, ``scale.mode``: arguments of ``transforms.scale``, applied
  after the field overrides (``scale.width`` alone means mode ``width``);
- ``train.FIELD`` and ``train.hyp.KEY``: training settings (``TrainConfig`` fields and
  hyperparameters), not the graph.

Every path is checked against the base graph before any trial starts (``check_paths``).
"""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import Any

from scaling_lab.graph.block_graph import BlockGraph, BlockNode
from scaling_lab.graph.registry import cfg_fields, make_cfg
from scaling_lab.spec.errors import SpecError

SETTINGS = ("nc", "img_size", "act", "repconv")
SCALE_KEYS = ("depth", "width", "mode")


@dataclasses.dataclass(frozen=True)
class SplitOverrides:
    """Overrides sorted by what they change."""

    settings: dict[str, Any]
    fields: dict[str, Any]  # NODE.FIELD -> value
    scale: dict[str, Any]
    train: dict[str, Any]  # TrainConfig field -> value ("hyp" holds a dict)


def split_overrides(overrides: dict[str, Any], *, source: str = "<experiment>") -> SplitOverrides:
    settings: dict[str, Any] = {}
    fields: dict[str, Any] = {}
    scale_args: dict[str, Any] = {}
    train: dict[str, Any] = {}
    for path, value in overrides.items():
        head, _, rest = str(path).partition(".")
        if not rest:
            if head not in SETTINGS:
                raise SpecError(
                    f"unknown override '{path}': a model setting ({', '.join(SETTINGS)}) or "
                    "NODE.FIELD, scale.*, train.*",
                    source=source,
                    field=str(path),
                )
            settings[head] = value
        elif head == "scale":
            if rest not in SCALE_KEYS:
                raise SpecError(
                    f"unknown scale argument '{rest}' (known: {', '.join(SCALE_KEYS)})",
                    source=source,
                    field=str(path),
                )
            scale_args[rest] = value
        elif head == "train":
            key, _, hyp_key = rest.partition(".")
            if key == "hyp" and hyp_key:
                train.setdefault("hyp", {})[hyp_key] = value
            else:
                train[rest] = value
        else:
            fields[str(path)] = value
    return SplitOverrides(settings, fields, scale_args, train)


def matching_nodes(graph: BlockGraph, path: str, *, source: str) -> list[tuple[BlockNode, str]]:
    """The (node, field) pairs a NODE.FIELD path names; an error if it names none."""
    pattern, _, field = path.rpartition(".")
    is_glob = any(ch in pattern for ch in "*?[")
    names = fnmatch.filter(graph.names, pattern) if is_glob else [pattern]
    if not is_glob and pattern not in graph.names:
        raise SpecError(
            f"unknown node path '{path}': no node '{pattern}' in {graph.name} "
            f"(nodes: {', '.join(graph.names)})",
            source=source,
            field=path,
        )
    found = []
    for name in names:
        node = graph.node(name)
        if field in {f.name for f in dataclasses.fields(node.cfg)}:
            found.append((node, field))
        elif not is_glob:
            known = ", ".join(f.name for f in dataclasses.fields(node.cfg))
            raise SpecError(
                f"unknown node path '{path}': block '{node.type}' has no field '{field}' "
                f"(fields: {known})",
                source=source,
                field=path,
            )
    if not found:
        raise SpecError(
            f"unknown node path '{path}': no node matching '{pattern}' has a field '{field}'",
            source=source,
            field=path,
        )
    return found


def set_fields(graph: BlockGraph, fields: dict[str, Any], *, source: str) -> BlockGraph:
    """A copy of ``graph`` with the NODE.FIELD values set (each checked like spec text)."""
    if not fields:
        return graph
    changes: dict[str, dict[str, Any]] = {}
    for path, value in fields.items():
        for node, field in matching_nodes(graph, path, source=source):
            changes.setdefault(node.name, {})[field] = value
    nodes = []
    for node in graph.nodes:
        if node.name not in changes:
            nodes.append(node)
            continue
        try:
            cfg = make_cfg(node.block, {**cfg_fields(node.cfg), **changes[node.name]})
        except SpecError as exc:
            raise SpecError(
                f"override: {exc.reason}", source=source, node=node.name, field=exc.field
            ) from None
        nodes.append(dataclasses.replace(node, cfg=cfg))
    return graph.with_nodes(nodes)


def materialize(
    base: BlockGraph,
    overrides: dict[str, Any] | None = None,
    *,
    scale_args: dict[str, Any] | None = None,
    name: str | None = None,
    source: str = "<experiment>",
) -> BlockGraph:
    """The trial's BlockGraph: settings, then field overrides, then ``scale`` (if any)."""
    from scaling_lab.layers.plan_repconv import parse_policy
    from scaling_lab.transforms.scale import scale

    split = split_overrides(overrides or {}, source=source)
    graph = base
    settings = dict(split.settings)
    if isinstance(settings.get("repconv"), str):
        settings["repconv"] = parse_policy(settings["repconv"])
    for key in ("nc", "img_size"):
        value = settings.get(key)
        if key in settings and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise SpecError(f"must be a positive integer, got {value!r}", source=source, field=key)
    if settings:
        graph = graph.with_settings(**settings)
    graph = set_fields(graph, split.fields, source=source)
    args = {**(scale_args or {}), **split.scale}
    if "width" in args and "depth" not in args and "mode" not in args:
        args["mode"] = "width"  # a width multiplier alone: plain width scaling
    if args:
        try:
            graph = scale(graph, **args)
        except TypeError as exc:
            raise SpecError(f"scale: {exc}", source=source, field="scale") from None
    return graph.with_settings(name=name) if name else graph
