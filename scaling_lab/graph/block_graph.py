"""BlockGraph: named blocks with meaning (what specs describe and transforms change).

Built from a ``ModelSpec``: block types resolved, fields checked, inputs resolved (the
previous node by default), cycles rejected. ``dump_spec`` writes it back as spec text that
builds the identical model.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from scaling_lab.graph.registry import BlockType, cfg_fields, get_block, make_cfg
from scaling_lab.spec.errors import SpecError
from scaling_lab.spec.load import ModelSpec, NodeSpec
from scaling_lab.spec.settings import ModelSettings

INPUT = "input"  # the image; a node may name it in `from`


@dataclass(frozen=True)
class BlockNode:
    """One block instance: name, block type, checked config, resolved input names."""

    name: str
    type: str
    cfg: Any
    inputs: tuple[str, ...]
    line: int | None = field(default=None, compare=False)  # where the spec text wrote it

    @property
    def block(self) -> BlockType:
        return get_block(self.type)

    @property
    def role(self) -> str:
        return self.block.role


@dataclass(frozen=True, kw_only=True)
class BlockGraph(ModelSettings):
    """Ordered (topologically sorted) blocks plus model-level settings (``repconv`` is the
    RepConv placement applied when lowering)."""

    nodes: tuple[BlockNode, ...]

    def node(self, name: str) -> BlockNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise SpecError(
            f"no node named '{name}' (known: {', '.join(self.names)})", source=self.source
        )

    @property
    def names(self) -> list[str]:
        return [n.name for n in self.nodes]

    def with_nodes(self, nodes: list[BlockNode]) -> BlockGraph:
        return replace(self, nodes=tuple(nodes))

    def consumers(self) -> dict[str, list[str]]:
        """For each node name, the nodes that read it."""
        out: dict[str, list[str]] = {n.name: [] for n in self.nodes}
        for n in self.nodes:
            for src in n.inputs:
                if src in out:
                    out[src].append(n.name)
        return out


def _resolve_node(spec_node: NodeSpec, previous: str, source: str) -> BlockNode:
    try:
        block = get_block(spec_node.type)
        cfg = make_cfg(block, spec_node.fields)
    except SpecError as exc:
        raise SpecError(
            exc.reason, source=source, node=spec_node.name, field=exc.field, line=spec_node.line
        ) from None
    inputs = spec_node.inputs if spec_node.inputs is not None else (previous,)
    if block.n_inputs is not None and len(inputs) != block.n_inputs:
        raise SpecError(
            f"block '{block.name}' takes {block.n_inputs} input(s), got {len(inputs)}",
            source=source,
            node=spec_node.name,
            field="from",
            line=spec_node.line,
        )
    return BlockNode(spec_node.name, spec_node.type, cfg, tuple(inputs), spec_node.line)


def _toposort(nodes: list[BlockNode], source: str) -> list[BlockNode]:
    """Order nodes so inputs come first, keeping the written order where possible."""
    by_name = {n.name: n for n in nodes}
    for n in nodes:
        for src in n.inputs:
            if src != INPUT and src not in by_name:
                raise SpecError(
                    f"unknown input '{src}' (known: {', '.join([INPUT, *by_name])})",
                    source=source,
                    node=n.name,
                    field="from",
                    line=n.line,
                )
    state: dict[str, int] = {}  # 1 = visiting, 2 = done
    ordered: list[BlockNode] = []

    def visit(n: BlockNode, path: list[str]) -> None:
        if state.get(n.name) == 2:
            return
        if state.get(n.name) == 1:
            cycle = " -> ".join([*path[path.index(n.name) :], n.name])
            raise SpecError(
                f"cycle in the graph: {cycle}",
                source=source,
                node=n.name,
                field="from",
                line=n.line,
            )
        state[n.name] = 1
        for src in n.inputs:
            if src != INPUT:
                visit(by_name[src], [*path, n.name])
        state[n.name] = 2
        ordered.append(n)

    for n in nodes:
        visit(n, [])
    return ordered


def build_block_graph(spec: ModelSpec) -> BlockGraph:
    """Check a parsed spec and turn it into a BlockGraph."""
    seen: set[str] = set()
    nodes: list[BlockNode] = []
    previous = INPUT
    for spec_node in spec.nodes:
        if spec_node.name == INPUT:
            raise SpecError(
                f"'{INPUT}' is reserved for the image",
                source=spec.source,
                node=spec_node.name,
                line=spec_node.line,
            )
        seen.add(spec_node.name)
        nodes.append(_resolve_node(spec_node, previous, spec.source))
        previous = spec_node.name
    nodes = _toposort(nodes, spec.source)
    return BlockGraph(nodes=tuple(nodes), **vars(spec.settings))


class _FlowList(list):
    """A list dumped inline: [a, b]."""


class _FlowDict(dict):
    """A mapping dumped inline: {type: conv, c: 32}."""


class _SpecDumper(yaml.SafeDumper):
    pass


_SpecDumper.add_representer(
    _FlowList, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True)
)
_SpecDumper.add_representer(
    _FlowDict, lambda d, v: d.represent_mapping("tag:yaml.org,2002:map", v.items(), flow_style=True)
)


def _flow(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return _FlowList(_flow(v) for v in value)
    return value


def dump_spec(graph: BlockGraph) -> str:
    """Write a BlockGraph as spec text; parsing it builds the identical model."""
    nodes: dict[str, Any] = {}
    previous = INPUT
    for n in graph.nodes:
        body: dict[str, Any] = {"type": n.type}
        if n.inputs != (previous,):
            body["from"] = n.inputs[0] if len(n.inputs) == 1 else _FlowList(n.inputs)
        body.update({k: _flow(v) for k, v in cfg_fields(n.cfg).items()})
        nodes[n.name] = _FlowDict(body)
        previous = n.name
    doc: dict[str, Any] = {"name": graph.name}
    if graph.description:
        doc["description"] = graph.description
    if graph.family:
        doc["family"] = graph.family
    doc.update(nc=graph.nc, img_size=graph.img_size, channels=graph.channels, act=graph.act)
    if graph.anchors:
        doc["anchors"] = _FlowList(_FlowList(_compact(v) for v in lvl) for lvl in graph.anchors)
    if graph.reference:
        doc["reference"] = _FlowDict(graph.reference)
    if graph.repconv is not None:
        doc["repconv"] = (
            graph.repconv if isinstance(graph.repconv, str) else _FlowDict(graph.repconv)
        )
    doc["nodes"] = nodes
    return yaml.dump(doc, Dumper=_SpecDumper, sort_keys=False, width=100)


def _compact(v: float) -> float | int:
    return int(v) if float(v).is_integer() else v
