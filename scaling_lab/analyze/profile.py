"""``profile``: params, MACs and FLOPs of a model with their context (size, classes, form)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scaling_lab.analyze.complexity import Complexity, count_graph
from scaling_lab.layers.layer_graph import LayerGraph
from scaling_lab.layers.plan_repconv import Policy
from scaling_lab.models import ModelRef, ModelSource, get_layer_graph, model_ref
from scaling_lab.spec.errors import SpecError

COUNTERS = ("analytic", "thop", "fvcore")


@dataclass(frozen=True)
class NodeCount:
    """One BlockGraph node's totals (its layers summed)."""

    node: str
    params: int
    macs: int
    counter_macs: int | None = None  # thop / fvcore figure for the same node, when asked


@dataclass(frozen=True)
class Profile:
    """What ``lab profile --json`` prints: every figure with the context that defines it."""

    model: str
    img_size: int
    nc: int
    deploy: bool
    form: str
    counter: str
    params: int
    gmacs: float
    gflops: float  # 2 x gmacs, the paper's convention
    per_node: list[NodeCount] = field(default_factory=list)

    @property
    def params_m(self) -> float:
        return self.params / 1e6

    def to_dict(self, per_node: bool = False) -> dict[str, Any]:
        out = asdict(self)
        out["params_m"] = round(self.params_m, 4)
        if not per_node:
            out.pop("per_node")
        return out


def _per_node(graph: LayerGraph, complexity: Complexity) -> list[NodeCount]:
    totals: dict[str, list[int]] = {}
    for layer, count in zip(graph, complexity.per_layer):
        entry = totals.setdefault(layer.node, [0, 0])
        entry[0] += count.params
        entry[1] += count.macs
    return [NodeCount(node, params, macs) for node, (params, macs) in totals.items()]


def profile_graph(graph: LayerGraph, *, model: str, counter: str = "analytic") -> Profile:
    """Profile a LayerGraph with the chosen counter (thop/fvcore build the module)."""
    if counter not in COUNTERS:
        raise SpecError(
            f"unknown counter '{counter}' (known: {', '.join(COUNTERS)})", field="counter"
        )
    complexity = count_graph(graph)
    nodes = _per_node(graph, complexity)
    params, macs = complexity.params, complexity.macs
    if counter != "analytic":
        from scaling_lab.analyze import counters
        from scaling_lab.nn import build_module

        module = build_module(graph)
        measure = counters.count_thop if counter == "thop" else counters.count_fvcore
        result = measure(module, graph.input_shape.h)
        params, macs = result.params, result.macs
        nodes = [NodeCount(n.node, n.params, n.macs, result.per_node.get(n.node, 0)) for n in nodes]
    return Profile(
        model=model,
        img_size=graph.input_shape.h,
        nc=complexity.nc,
        deploy=graph.form == "deploy",
        form=graph.form,
        counter=counter,
        params=params,
        gmacs=macs / 1e9,
        gflops=2 * macs / 1e9,
        per_node=nodes,
    )


def profile(
    model: ModelSource | Path | ModelRef,
    *,
    img_size: int | None = None,
    nc: int | None = None,
    deploy: bool = False,
    counter: str = "analytic",
    repconv: Policy | None = None,
) -> Profile:
    """Params / GMACs / GFLOPs of a model (zoo name with its form suffix, spec path,
    BlockGraph or ModelRef) at a square input; ``deploy`` asks for the deploy form."""
    ref = model_ref(model, deploy=deploy)
    graph = get_layer_graph(ref, nc=nc, img_size=img_size, repconv=repconv)
    return profile_graph(graph, model=ref.label(graph.name), counter=counter)
