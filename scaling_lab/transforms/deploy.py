"""The deploy graph: auxiliary heads removed and the nodes that only fed them pruned."""

from __future__ import annotations

from dataclasses import replace

from scaling_lab.graph.block_graph import INPUT, BlockGraph, BlockNode


def _prune_unused(nodes: list[BlockNode]) -> list[BlockNode]:
    """Keep the last node (the head) and everything it reads (outputs or ports), in order."""
    needed = {nodes[-1].name}
    for node in reversed(nodes):
        if node.name in needed:
            needed.update(n for n in node.sources if n != INPUT)
    return [n for n in nodes if n.name in needed]


def drop_aux_heads(graph: BlockGraph) -> BlockGraph:
    """Turn every ``aux_detect`` into a lead-only ``detect`` and prune the auxiliary branch."""
    from scaling_lab.graph.blocks.head import AuxDetectCfg, DetectCfg  # registry-level types

    nodes = []
    for node in graph.nodes:
        if isinstance(node.cfg, AuxDetectCfg):
            n_lead = len(node.inputs) // 2  # leads first, then one aux per level
            cfg = DetectCfg(implicit=node.cfg.implicit)
            node = replace(node, type="detect", cfg=cfg, inputs=node.inputs[:n_lead])
        nodes.append(node)
    return graph.with_nodes(_prune_unused(nodes))
