"""Predict a model's latency from a latency table, without building it (no torch).

    predicted = model_ms + sum over layers (table[key] or fallback(key)) + layers x per_op_ms

``key`` is the layer's ``OpConfig.key`` under the table's dtype, batch and layout. A key the
table lacks is estimated by the table's fitted fallback for the op's group (``latency_fit``),
and the prediction says how many layers and milliseconds that covered and the fits'
cross-validated error. ``model_ms`` and ``per_op_ms`` are the table's measured overheads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from scaling_lab.analyze.latency_table import LatencyTable, TableError
from scaling_lab.analyze.op_config import OpConfig, RunSettings, layer_config
from scaling_lab.layers.layer_graph import LayerGraph

TABLE = "table"  # a layer's source when its key is in the table
ANY = "*"  # the fit over every entry, behind the groups and kinds


@dataclass(frozen=True)
class LayerPrediction:
    """One layer: its predicted ms (dispatch overhead included) and where it came from
    (``table``, or the fallback group that estimated it)."""

    name: str
    node: str
    kind: str
    ms: float
    source: str


@dataclass(frozen=True)
class LatencyPrediction:
    """A predicted latency with what it rests on."""

    total_ms: float
    layers: tuple[LayerPrediction, ...]
    model_ms: float  # the model call (measured overhead)
    per_op_ms: float  # dispatch inside a generated forward, per op (measured overhead)
    looked_up: int
    estimated: int
    estimated_ms: float
    fallback_cv_mape: dict[str, float | None] = field(default_factory=dict)  # group -> %

    @property
    def per_node(self) -> dict[str, float]:
        """Predicted ms per BlockGraph node, in graph order."""
        out: dict[str, float] = {}
        for layer in self.layers:
            out[layer.node] = out.get(layer.node, 0.0) + layer.ms
        return out

    def fallback_note(self) -> str:
        """One line on the layers the table did not hold (empty when there were none)."""
        if not self.estimated:
            return ""
        fits = ", ".join(
            f"{g} (CV MAPE {'n/a' if e is None else f'{e:.1f}%'})"
            for g, e in self.fallback_cv_mape.items()
        )
        return (
            f"{self.estimated} of {len(self.layers)} ops ({self.estimated_ms:.2f} ms, "
            f"{100 * self.estimated_ms / max(self.total_ms, 1e-12):.0f}% of the total) estimated "
            f"by the fallback fit: {fits}"
        )

    def to_dict(self, per_node: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "latency_pred_ms": round(self.total_ms, 4),
            "looked_up": self.looked_up,
            "estimated": self.estimated,
            "estimated_ms": round(self.estimated_ms, 4),
            "model_ms": round(self.model_ms, 6),
            "per_op_ms": round(self.per_op_ms, 6),
            "fallback_cv_mape": self.fallback_cv_mape,
        }
        if per_node:
            out["per_node"] = {n: round(ms, 4) for n, ms in self.per_node.items()}
        return out


def run_settings(table: LatencyTable) -> RunSettings:
    p = table.protocol
    return RunSettings(str(p["dtype"]), int(p["batch"]), str(p["layout"]))


def predict_latency(graph: LayerGraph, table: LatencyTable) -> LatencyPrediction:
    """The predicted latency of ``graph`` (in the form the table was measured for: ``lab
    latency-table build`` and ``lab bench`` use the deploy graph) on the table's device."""
    if not table.complete:
        raise TableError("the table's build did not finish: rerun it", source=table.path)
    run = run_settings(table)
    per_op = float(table.overheads["per_op_ms"])
    layers, used = [], {}
    looked_up, estimated_ms = 0, 0.0
    for layer in graph:
        config = layer_config(graph, layer, run)
        entry = table.entries.get(config.key)
        if entry is not None:
            ms, source = float(entry["ms"]), TABLE
            looked_up += 1
        else:
            source, fit = _fit_for(config, table)
            ms = _evaluate(fit, config)
            used[source] = fit.get("cv_mape")
            estimated_ms += ms + per_op
        layers.append(LayerPrediction(layer.name, layer.node, layer.kind, ms + per_op, source))
    model = float(table.overheads["model_ms"])
    return LatencyPrediction(
        total_ms=model + sum(x.ms for x in layers),
        layers=tuple(layers),
        model_ms=model,
        per_op_ms=per_op,
        looked_up=looked_up,
        estimated=len(layers) - looked_up,
        estimated_ms=estimated_ms,
        fallback_cv_mape=used,
    )


def _fit_for(config: OpConfig, table: LatencyTable) -> tuple[str, dict[str, Any]]:
    """The most specific fit the table has for this op: its group, its kind, or all ops."""
    for name in (config.group, config.kind, ANY):
        fit = table.fallback.get(name)
        if fit is not None:
            return name, fit
    raise TableError(
        f"no entry for {config.key} and no fallback fit (the table has no entries)",
        source=table.path,
    )


def _evaluate(fit: dict[str, Any], config: OpConfig) -> float:
    """``coef . (macs, bytes, 1)`` (``latency_table.FALLBACK_FEATURES``)."""
    f = config.features()
    a, b, c = fit["coef"]
    return a * f["macs"] + b * f["bytes"] + c
