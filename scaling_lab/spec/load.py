"""Load YAML spec text into ``ModelSpec``: the first step of the flow, plain Python only.

The loader keeps line numbers and rejects duplicate keys, which plain ``yaml.safe_load``
would silently overwrite (two nodes with one name would otherwise lose a node).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaling_lab.errors import shown
from scaling_lab.limits import MAX_CHANNELS, MAX_IMG_SIZE, MAX_NC, MAX_SPEC_NODES
from scaling_lab.spec.errors import SpecError
from scaling_lab.spec.settings import ModelSettings, spec_keys
from scaling_lab.spec.yaml_lines import LINES_KEY, read_text_file, read_yaml_mapping, strip_lines

TOP_LEVEL_KEYS = spec_keys()
NODE_META_KEYS = ("type", "from")


@dataclass(frozen=True)
class NodeSpec:
    """One named node as written: its block type, inputs and remaining fields."""

    name: str
    type: str
    inputs: tuple[str, ...] | None  # None: the previous node
    fields: dict[str, Any]
    line: int | None = None


@dataclass(frozen=True, kw_only=True)
class ModelSpec(ModelSettings):
    """A whole spec file: model-level settings plus its nodes as written."""

    nodes: tuple[NodeSpec, ...]


def _read_spec_yaml(text: str, source: str) -> dict:
    return read_yaml_mapping(text, source, "a spec (with a 'nodes' section)")


def split_input(ref: str) -> tuple[str, str | None]:
    """``'node'`` -> ``('node', None)``; ``'node.port'`` -> ``('node', 'port')``: an input
    names a node's output or one of its ports (a named internal tensor, e.g. an E-ELAN's
    cardinality group before the merge)."""
    node, dot, port = ref.partition(".")
    return node, (port if dot else None)


def parse_inputs(raw: Any, name: str, source: str, line: int | None) -> tuple[str, ...] | None:
    if raw is None:
        return None
    items = raw if isinstance(raw, list) else [raw]
    if not items or not all(isinstance(i, str) and i for i in items):
        raise SpecError(
            f"must be a node name or a list of node names, got {raw!r}",
            source=source,
            node=name,
            field="from",
            line=line,
        )
    for item in items:
        node, port = split_input(item)
        if port is not None and not (node.isidentifier() and port.isidentifier()):
            raise SpecError(
                f"'{item}' is neither a node name nor NODE.PORT (two identifiers)",
                source=source,
                node=name,
                field="from",
                line=line,
            )
    return tuple(items)


def _parse_node(name: Any, body: Any, line: int | None, source: str) -> NodeSpec:
    if not isinstance(name, str) or not name.isidentifier():
        raise SpecError(
            f"node names must be identifiers (letters, digits, '_'), got {name!r}",
            source=source,
            line=line,
        )
    if not isinstance(body, dict):
        raise SpecError(
            f"a node must be a mapping with at least 'type', got {body!r}",
            source=source,
            node=name,
            line=line,
        )
    block_type = body.get("type")
    if not isinstance(block_type, str):
        raise SpecError("missing block type", source=source, node=name, field="type", line=line)
    inputs = parse_inputs(body.get("from"), name, source, line)
    fields = {k: strip_lines(v) for k, v in body.items() if k not in (*NODE_META_KEYS, LINES_KEY)}
    return NodeSpec(name=name, type=block_type, inputs=inputs, fields=fields, line=line)


_INT_LIMITS = {"nc": MAX_NC, "img_size": MAX_IMG_SIZE, "channels": MAX_CHANNELS}


def _positive_int(data: dict, key: str, default: int, source: str) -> int:
    value = data.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SpecError(
            f"must be a positive integer, got {value!r}",
            source=source,
            field=key,
            line=data[LINES_KEY].get(key),
        )
    if value > _INT_LIMITS[key]:
        raise SpecError(
            f"must be at most {_INT_LIMITS[key]}, got {value}",
            source=source,
            field=key,
            line=data[LINES_KEY].get(key),
        )
    return value


def _parse_anchors(raw: Any, source: str, line: int | None) -> tuple[tuple[float, ...], ...]:
    if raw is None:
        return ()
    ok = isinstance(raw, list) and all(
        isinstance(level, list)
        and level
        and len(level) % 2 == 0
        and all(isinstance(v, (int, float)) and 0 < v < math.inf for v in level)
        for level in raw
    )
    if not ok:
        raise SpecError(
            "must be a list of levels, each [w, h, w, h, ...] of positive numbers",
            source=source,
            field="anchors",
            line=line,
        )
    return tuple(tuple(float(v) for v in level) for level in raw)


def _parse_repconv(raw: Any, source: str, line: int | None) -> str | dict[str, str] | None:
    if raw is None or isinstance(raw, str):
        return raw
    raw = strip_lines(raw)
    if isinstance(raw, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
    ):
        return raw
    raw_text = repr(raw)
    raise SpecError(
        f"must be a policy name or a mapping of layer pattern -> placement, got {raw_text}",
        source=source,
        field="repconv",
        line=line,
    )


def parse_spec(text: str, source: str = "<spec>") -> ModelSpec:
    """Parse spec text; ``source`` is only used to name the file in errors."""
    data = _read_spec_yaml(text, source)
    lines = data[LINES_KEY]
    unknown = sorted(set(data) - set(TOP_LEVEL_KEYS) - {LINES_KEY})
    if unknown:
        raise SpecError(
            f"unknown top-level key (known: {', '.join(TOP_LEVEL_KEYS)})",
            source=source,
            field=unknown[0],
            line=lines.get(unknown[0]),
        )
    raw_nodes = data.get("nodes")
    if not isinstance(raw_nodes, dict) or len(raw_nodes) <= 1:
        raise SpecError("must be a mapping of node name -> fields", source=source, field="nodes")
    node_lines = raw_nodes[LINES_KEY]
    if len(node_lines) > MAX_SPEC_NODES:
        raise SpecError(
            f"too many nodes: {len(node_lines)} (limit MAX_SPEC_NODES = {MAX_SPEC_NODES})",
            source=source,
            field="nodes",
            line=lines.get("nodes"),
        )
    nodes = tuple(
        _parse_node(name, body, node_lines.get(name), source)
        for name, body in raw_nodes.items()
        if name != LINES_KEY
    )
    name = str(data.get("name") or Path(source).stem)
    if not name.isprintable():  # every command prints it: no terminal escape sequences
        raise SpecError(
            f"must be printable text, got {shown(name)}",
            source=source,
            field="name",
            line=lines.get("name"),
        )
    return ModelSpec(
        name=name,
        nodes=nodes,
        nc=_positive_int(data, "nc", 80, source),
        img_size=_positive_int(data, "img_size", 640, source),
        channels=_positive_int(data, "channels", 3, source),
        act=str(data.get("act", "silu")),
        anchors=_parse_anchors(data.get("anchors"), source, lines.get("anchors")),
        description=str(data.get("description", "")),
        family=str(data.get("family", "")),
        reference=strip_lines(data.get("reference") or {}),
        repconv=_parse_repconv(data.get("repconv"), source, lines.get("repconv")),
        source=source,
    )


def load_spec(path: str | Path) -> ModelSpec:
    """Read and parse a spec file."""
    return parse_spec(read_text_file(path, "spec file"), source=str(path))
