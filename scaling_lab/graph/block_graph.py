"""BlockGraph: named blocks with meaning (what specs describe and transforms change).

Built from a ``ModelSpec``: block types resolved, fields checked, inputs resolved (the
previous node by default), cycles rejected. ``dump_spec`` writes it back as spec text that
builds the identical model.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from scaling_lab.graph.registry import (
    BlockType,
    cfg_fields,
    get_block,
    make_cfg,
    registered_blocks,
)
from scaling_lab.spec.errors import SpecError
from scaling_lab.spec.load import ModelSpec, NodeSpec, split_input
from scaling_lab.spec.settings import ModelSettings

INPUT = "input"  # the image; a node may name it in `from`


@dataclass(frozen=True)
class BlockNode:
    """One block instance: name, block type, checked config, resolved inputs.

    An input is a node name (its output) or ``node.port`` (a named internal tensor the
    node's lowering declares, ``LayerBuilder.port``); ``sources`` are the nodes read."""

    name: str
    type: str
    cfg: Any
    inputs: tuple[str, ...]
    line: int | None = field(default=None, compare=False)  # where the spec text wrote it

    @property
    def block(self) -> BlockType:
        return get_block(self.type)

    @property
    def sources(self) -> tuple[str, ...]:
        """The node read by each input (``td5`` for ``td5.group1``), in input order."""
        return tuple(split_input(ref)[0] for ref in self.inputs)

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
            for src in dict.fromkeys(n.sources):
                if src in out:
                    out[src].append(n.name)
        return out

    def port_reads(self) -> dict[str, set[str]]:
        """For each node whose ports are read (``from: node.port``), the port names read."""
        out: dict[str, set[str]] = {}
        for n in self.nodes:
            for ref in n.inputs:
                src, port = split_input(ref)
                if port is not None:
                    out.setdefault(src, set()).add(port)
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
    _check_arity(block, inputs, spec_node.name, source, spec_node.line)
    return BlockNode(spec_node.name, spec_node.type, cfg, tuple(inputs), spec_node.line)


def _check_arity(
    block: BlockType, inputs: tuple[str, ...], node: str, source: str, line: int | None
) -> None:
    if block.n_inputs is not None and len(inputs) != block.n_inputs:
        raise SpecError(
            f"block '{block.name}' takes {block.n_inputs} input(s), got {len(inputs)}",
            source=source,
            node=node,
            field="from",
            line=line,
        )


def rewire(graph: BlockGraph, inputs: dict[str, tuple[str, ...]]) -> BlockGraph:
    """A copy of ``graph`` with some nodes' inputs replaced (``{node: inputs}``), checked
    like spec text: arity, known nodes, no cycle, known ports."""
    nodes = []
    for node in graph.nodes:
        if node.name in inputs:
            new = tuple(inputs[node.name])
            _check_arity(node.block, new, node.name, graph.source, node.line)
            node = replace(node, inputs=new)
        nodes.append(node)
    rewired = graph.with_nodes(_toposort(nodes, graph.source))
    if any(n.block.head for n in graph.nodes):
        check_head(rewired)  # still the output, read by no node
    _check_ports(rewired)
    return rewired


def _check_ports(graph: BlockGraph) -> None:
    """Refuse a ``node.port`` input whose node declares no such port. Ports are declared by
    lowering, so a graph that reads any is lowered once here (one that reads none: free)."""
    if graph.port_reads():
        from scaling_lab.graph.lower import check_ports  # lower imports this module

        check_ports(graph)


def _toposort(nodes: list[BlockNode], source: str) -> list[BlockNode]:
    """Order nodes so inputs come first, keeping the written order where possible."""
    by_name = {n.name: n for n in nodes}
    for n in nodes:
        for src in n.sources:
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
    # depth-first with an explicit stack: a long chain written consumers first must not
    # reach Python's recursion limit
    for root in nodes:
        if state.get(root.name) == 2:
            continue
        state[root.name] = 1
        path = [root.name]
        stack = [(root, iter(root.sources))]
        while stack:
            n, pending = stack[-1]
            for src in pending:
                if src == INPUT or state.get(src) == 2:
                    continue
                m = by_name[src]
                if state.get(src) == 1:
                    cycle = " -> ".join([*path[path.index(src) :], src])
                    raise SpecError(
                        f"cycle in the graph: {cycle}",
                        source=source,
                        node=m.name,
                        field="from",
                        line=m.line,
                    )
                state[src] = 1
                path.append(src)
                stack.append((m, iter(m.sources)))
                break
            else:
                state[n.name] = 2
                ordered.append(n)
                stack.pop()
                path.pop()
    return ordered


# node names that override paths, the image or the loader use for something else
RESERVED_NAMES = {
    INPUT: "the image",
    "scale": "override paths scale.* (the scale transform)",
    "train": "override paths train.* (training settings)",
}


def _check_name(spec_node: NodeSpec, source: str) -> None:
    name = spec_node.name
    why = RESERVED_NAMES.get(name) or ("internal keys" if name.startswith("__") else None)
    if why:
        raise SpecError(
            f"'{name}' is reserved for {why}: choose another node name",
            source=source,
            node=name,
            line=spec_node.line,
        )


def check_head(graph: BlockGraph) -> None:
    """Exactly one lead detection head (``detect``, ``aux_detect`` or a decoupled head), and
    it is the model's output: the last node, read by no other node. A spec without one, or
    with two, would be counted, timed and trained as something other than what it says."""
    heads = [n for n in graph.nodes if n.block.head]
    kinds = ", ".join(name for name, b in registered_blocks().items() if b.head)
    if not heads:
        raise SpecError(
            f"no detection head: a model ends in one head node ({kinds})",
            source=graph.source,
            field="nodes",
        )
    if len(heads) > 1:
        names = ", ".join(n.name for n in heads)
        raise SpecError(
            f"{len(heads)} detection heads ({names}): a model has exactly one (aux_detect "
            "takes the auxiliary levels as its own inputs)",
            source=graph.source,
            node=heads[1].name,
            line=heads[1].line,
        )
    head, last = heads[0], graph.nodes[-1]
    if last is not head:
        why = (
            "reads the head's output"
            if head.name in last.sources
            else "comes after it and feeds nothing"
        )
        raise SpecError(
            f"the detection head '{head.name}' must be the model's output: node "
            f"'{last.name}' {why}",
            source=graph.source,
            node=last.name,
            line=last.line,
        )


def build_block_graph(spec: ModelSpec, *, require_head: bool = True) -> BlockGraph:
    """Check a parsed spec and turn it into a BlockGraph. ``require_head=False`` lets a
    fragment without a detection head through (tests, a backbone studied on its own)."""
    seen: set[str] = set()
    nodes: list[BlockNode] = []
    previous = INPUT
    for spec_node in spec.nodes:
        _check_name(spec_node, spec.source)
        seen.add(spec_node.name)
        nodes.append(_resolve_node(spec_node, previous, spec.source))
        previous = spec_node.name
    nodes = _toposort(nodes, spec.source)
    graph = BlockGraph(nodes=tuple(nodes), **vars(spec.settings))
    if require_head:
        check_head(graph)
    _check_ports(graph)
    return graph


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
