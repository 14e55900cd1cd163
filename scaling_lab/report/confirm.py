"""A search's confirm phase as its headline: seed means, paired differences from each baseline,
the selection bias, and one conclusion line (``confirm.json`` and the table above the search's).

The confirm runs train the best designs of the search and its baselines with the same fresh
seeds (``sweep/confirm.py``). A design's difference from a baseline is the paired t interval
over those seeds (``stats.difference``: the seed fixes data order and initialisation for
both); a design *beats* a baseline when the interval lies above 0 (for a metric to maximize).
The selection bias is what the search's single run of each confirmed design claimed minus the
fresh seeds' mean, averaged over the confirmed designs: the winner's curse, measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from scaling_lab.report.stats import difference, summarize
from scaling_lab.sweep.pareto import finished_mask

POINTS = 100.0  # AP columns are fractions; the report speaks in points


@dataclass(frozen=True)
class ConfirmSetup:
    """What the statistics need to know: the compared metric, its direction, the cost
    column the conclusion prices designs by, and the baselines in declared order."""

    metric: str
    mode: str  # max | min
    cost: str  # latency_pred_ms where predicted, else params
    baselines: tuple[str, ...]


def _phase(frame: pd.DataFrame, phase: str) -> pd.DataFrame:
    if "phase" not in frame:
        return frame.iloc[0:0]
    return frame[frame["phase"].eq(phase) & finished_mask(frame)]


def _seed_map(rows: pd.DataFrame, metric: str) -> dict[int, float]:
    values = pd.to_numeric(rows[metric], errors="coerce") * POINTS
    return {int(s): float(v) for s, v in zip(rows["seed"], values) if pd.notna(v)}


def _round(value: float, digits: int = 4) -> float | None:
    return round(float(value), digits) if math.isfinite(value) else None


def cost_column(frame: pd.DataFrame) -> str:
    """Predicted latency where every confirmed row has one, else parameters."""
    rows = _phase(frame, "confirm")
    if "latency_pred_ms" in rows and len(rows) and rows["latency_pred_ms"].notna().all():
        return "latency_pred_ms"
    return "params"


def _cost(rows: pd.DataFrame, column: str) -> float:
    values = pd.to_numeric(rows[column], errors="coerce") if column in rows else pd.Series()
    return float(values.mean()) if values.notna().any() else math.nan


def summarize_confirm(frame: pd.DataFrame, setup: ConfirmSetup) -> dict[str, Any] | None:
    """``confirm.json``'s content from a search's results, or None without confirm runs."""
    runs = _phase(frame, "confirm")
    if runs.empty or setup.metric not in runs:
        return None
    is_base = runs["baseline"].eq(True)
    baselines = {
        label: runs[is_base & runs["label"].eq(label)]
        for label in setup.baselines
        if (is_base & runs["label"].eq(label)).any()
    }
    search = _phase(frame, "search")
    confirmed = []
    for design_key, rows in runs[~is_base].groupby("design_key", sort=False):
        seeds = _seed_map(rows, setup.metric)
        summary = summarize(list(seeds.values()))
        found = search[search["key"].eq(design_key)]
        searched = (
            float(pd.to_numeric(found[setup.metric], errors="coerce").iloc[0]) * POINTS
            if len(found)
            else math.nan
        )
        versus = []
        cost = _cost(rows, setup.cost)
        for label, base_rows in baselines.items():
            diff = difference(_seed_map(base_rows, setup.metric), seeds)
            low, high = diff.delta - diff.ci95, diff.delta + diff.ci95
            base_cost = _cost(base_rows, setup.cost)
            versus.append(
                {
                    "model": label,
                    "diff": _round(diff.delta),
                    "ci95": [_round(low), _round(high)] if diff.estimated else None,
                    "significant": bool(diff.significant),
                    "cost_ratio": _round(cost / base_cost if base_cost else math.nan),
                }
            )
        confirmed.append(
            {
                "key": str(design_key),
                "label": str(rows["label"].iloc[0]),
                "seeds": sorted(seeds),
                "mean": _round(summary.mean),
                "std": _round(summary.std),
                "search_value": _round(searched),
                setup.cost: _round(cost),
                "vs_base": versus,
            }
        )
    base_summaries = []
    for label, rows in baselines.items():
        values = _seed_map(rows, setup.metric)
        summary = summarize(list(values.values()))
        base_summaries.append(
            {
                "model": label,
                "seeds": sorted(values),
                "mean": _round(summary.mean),
                "std": _round(summary.std),
                setup.cost: _round(_cost(rows, setup.cost)),
            }
        )
    biases = [
        c["search_value"] - c["mean"]
        for c in confirmed
        if c["search_value"] is not None and c["mean"] is not None
    ]
    winner, conclusion = conclude(confirmed, setup)
    return {
        "metric": setup.metric,
        "unit": f"{setup.metric} points (%)",
        "cost": setup.cost,
        "baselines": base_summaries,
        "confirmed": confirmed,
        "winner": winner,
        "conclusion": conclusion,
        "selection_bias": _round(sum(biases) / len(biases)) if biases else None,
    }


def _better(entry: dict[str, Any], mode: str) -> bool:
    """The design beats this baseline: significant, in the metric's good direction."""
    diff = entry["diff"]
    return bool(entry["significant"] and diff is not None and (diff > 0) == (mode == "max"))


def _interval(entry: dict[str, Any]) -> str:
    ci = entry.get("ci95")
    text = f"{entry['diff']:+.1f}"
    return text + (f" [{ci[0]:+.1f}, {ci[1]:+.1f}]" if ci else " (no interval)")


def _cost_text(entry: dict[str, Any], cost: str) -> str:
    ratio = entry.get("cost_ratio")
    what = "predicted latency" if cost == "latency_pred_ms" else "parameters"
    return f" at {100 * ratio:.0f}% of its {what}" if ratio is not None else ""


def conclude(confirmed: list[dict[str, Any]], setup: ConfirmSetup) -> tuple[str | None, str]:
    """The winner's key (or None) and the conclusion line, against the first baseline."""
    if not setup.baselines or not confirmed:
        return None, "no conclusion: the confirm phase has no finished design or baseline run"
    base = setup.baselines[0]
    against = [(c, next((v for v in c["vs_base"] if v["model"] == base), None)) for c in confirmed]
    against = [(c, v) for c, v in against if v is not None and v["diff"] is not None]
    if not against:
        return None, f"no conclusion: {base} has no finished confirm run"
    sign = 1.0 if setup.mode == "max" else -1.0
    against.sort(key=lambda cv: (-sign * cv[1]["diff"], cv[0]["key"]))
    n = len(against[0][0]["seeds"])
    how = f"{setup.metric} points, paired over {n} fresh seeds"
    winners = [(c, v) for c, v in against if _better(v, setup.mode)]
    if winners:
        c, v = winners[0]
        return c["key"], (
            f"{c['label']} beats {base} by {_interval(v)} {how}{_cost_text(v, setup.cost)}."
        )
    c, v = against[0]
    if all(entry["significant"] for _, entry in against):
        return None, (
            f"no design beats {base} at this budget: the best confirmed, {c['label']}, "
            f"trails it by {_interval(v)} {how}{_cost_text(v, setup.cost)}."
        )
    return None, (
        f"no design is distinguishable from {base} at this budget: the best confirmed, "
        f"{c['label']}, {_interval(v)} {how}{_cost_text(v, setup.cost)}."
    )


def confirm_markdown(summary: dict[str, Any]) -> str:
    """The confirmed table (Markdown) with the conclusion line above it."""
    metric, cost = summary["metric"], summary["cost"]
    cost_header = "Latency, predicted (ms)" if cost == "latency_pred_ms" else "#Param."
    rows = []
    for entry in summary["baselines"]:
        rows.append(
            [
                f"{entry['model']} (baseline)",
                _seeds(entry),
                _mean_std(entry),
                "",
                "",
                "",
                _cost_cell(entry.get(cost), cost),
            ]
        )
    for c in summary["confirmed"]:
        first = c["vs_base"][0] if c["vs_base"] else None
        versus = _interval(first) + ("" if first["significant"] else " (n.s.)") if first else "-"
        searched = f"{c['search_value']:.1f}%" if c["search_value"] is not None else "-"
        bias = (
            f"{c['search_value'] - c['mean']:+.1f}"
            if c["search_value"] is not None and c["mean"] is not None
            else "-"
        )
        cost_cell = _cost_cell(c.get(cost), cost)
        rows.append([c["label"], _seeds(c), _mean_std(c), versus, searched, bias, cost_cell])
    base = summary["baselines"][0]["model"] if summary["baselines"] else "base"
    headers = [
        "Model",
        "Seeds",
        f"{metric} (mean ± std)",
        f"vs {base} (95% CI)",
        f"{metric}, search run",
        "search - confirmed",
        cost_header,
    ]
    table = pd.DataFrame(rows, columns=headers).to_markdown(
        index=False, disable_numparse=True, colalign=["left"] + ["right"] * (len(headers) - 1)
    )
    bias = summary.get("selection_bias")
    lines = [
        f"**Conclusion:** {summary['conclusion']}",
        "## Confirmed with fresh seeds",
        table,
        "Each row trained with the same fresh seeds, which the search never used; differences "
        "are paired t intervals over those seeds (n.s.: the interval contains 0)."
        + (
            f" Selection bias, the search run's value minus the confirmed mean, averaged over "
            f"the confirmed designs: {bias:+.1f} points."
            if bias is not None
            else ""
        ),
    ]
    return "\n\n".join(lines) + "\n"


def _seeds(entry: dict[str, Any]) -> str:
    return ", ".join(str(s) for s in entry["seeds"])


def _mean_std(entry: dict[str, Any]) -> str:
    if entry["mean"] is None:
        return "-"
    std = entry.get("std")
    return f"{entry['mean']:.1f} ± {std:.1f}%" if std is not None else f"{entry['mean']:.1f}%"


def _cost_cell(value: Any, cost: str) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if cost == "latency_pred_ms" else f"{value / 1e6:.2f}M"
