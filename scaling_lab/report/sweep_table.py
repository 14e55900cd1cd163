"""The numbers of a sweep's paper-style table, next to the paper's: one pandas frame.

The YOLOv7 paper reports each ablation as a small table (#Param., FLOPs, Size, FPS, AP...) with
an improvement row under it; a sweep over the same variants is laid out the same way so the
two can be read side by side. ``numeric_table`` builds the raw numbers (for CSV and plots): a
row's repeats aggregated, AP intervals, the improvement row with its significance marks;
``sweep_table_render`` turns them into Markdown and LaTeX. Which columns appear, their
headers and how repeats combine come from ``scaling_lab.sweep.columns``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from scaling_lab.eval_protocol import AP_KEYS
from scaling_lab.report.stats import SeedNoise, difference, summarize
from scaling_lab.sweep.columns import (
    PARAM_PREFIX,
    aggregated,
    numeric_columns,
    table_columns,
)
from scaling_lab.sweep.pareto import finished_mask, pareto_flags

KINDS = ("variant", "search")
NOT_RUN = "not run"


@dataclass(frozen=True)
class ReportContext:
    """What a report needs besides the results: row order, base/compared rows, paper numbers.

    ``paper_rows`` maps a row label to the paper's numbers for it (AP values in percent, as
    printed); ``paper_peers`` are Table 2 models drawn as reference points; ``objectives``
    (column -> "max"|"min") define a search's Pareto front.
    """

    experiment: str
    title: str = ""
    kind: str = "variant"
    labels: tuple[str, ...] = ()
    baseline: str | None = None
    against: str | None = None
    paper_rows: dict[str, dict[str, float]] = field(default_factory=dict)
    paper_peers: list[dict] = field(default_factory=list)
    objectives: dict[str, str] = field(default_factory=dict)
    note: str = ""
    noise: SeedNoise | None = None  # a search's single-run noise, from ``lab calibrate``
    headline: str = ""  # Markdown above the table (a search's confirmed table, conclusion)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"ReportContext.kind must be one of {list(KINDS)}, got {self.kind!r}")
        object.__setattr__(self, "labels", tuple(self.labels))

    @property
    def heading(self) -> str:
        """The title, or the experiment name when no title was given."""
        return self.title or self.experiment

    @property
    def search_objectives(self) -> dict[str, str]:
        """Objectives of the Pareto front; a search that declared none is ranked by AP."""
        return dict(self.objectives) or {"AP": "max"}


def prepare(results: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``results`` with the columns the report relies on filled in.

    ``label`` falls back to ``key``; a missing ``status`` column means every row finished;
    ``params_m`` and ``gflops`` are derived from ``params`` and ``gmacs`` where absent.
    """
    df = results.copy().reset_index(drop=True)
    n = len(df)
    fallback = df["key"] if "key" in df.columns else pd.Series([f"row {i}" for i in range(n)])
    label = df["label"] if "label" in df.columns else pd.Series([None] * n, dtype=object)
    label = label.astype(object).where(label.notna(), fallback.astype(object))
    df["label"] = [str(v) for v in label]
    if "status" in df.columns:
        df["status"] = [str(s) if isinstance(s, str) else "unknown" for s in df["status"]]
    else:
        df["status"] = "finished"
    for col in numeric_columns():
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    if "params" in df.columns:
        derived = df["params"] / 1e6
        df["params_m"] = df["params_m"].fillna(derived) if "params_m" in df.columns else derived
    if "gmacs" in df.columns:
        derived = 2 * df["gmacs"]
        df["gflops"] = df["gflops"].fillna(derived) if "gflops" in df.columns else derived
    if "order" not in df.columns:
        df["order"] = np.arange(n, dtype=float)
    return df


def _ordered_rows(results: pd.DataFrame, ctx: ReportContext) -> pd.DataFrame:
    """Report rows in display order.

    Variants: one row per label (a finished trial wins over others; the last one of those),
    declared labels first in ``ctx.labels`` order, declared labels without any result added
    with status "not run". Searches: every trial, by ``order``.
    """
    df = prepare(results)
    if ctx.kind == "search":
        return df.sort_values("order", kind="mergesort", na_position="last").reset_index(drop=True)
    keep = []
    for _, group in df.groupby("label", sort=False):
        done = group[finished_mask(group)]
        if _repeated(done):
            keep.append(_mean_row(done))
        else:
            row = group.loc[(done if len(done) else group).index[-1]].copy()
            row["n_seeds"] = min(len(done), 1)
            keep.append(row)
    df = _numbers(pd.DataFrame(keep).reset_index(drop=True))
    missing = [label for label in dict.fromkeys(ctx.labels) if label not in set(df["label"])]
    if missing:
        df = pd.concat([df, pd.DataFrame({"label": missing, "status": NOT_RUN})], ignore_index=True)
    rank = {label: i for i, label in enumerate(ctx.labels)}
    df["_rank"] = [rank.get(label, len(rank)) for label in df["label"]]
    df = df.sort_values(["_rank", "order"], kind="mergesort", na_position="last")
    return df.drop(columns="_rank").reset_index(drop=True)


def _numbers(df: pd.DataFrame) -> pd.DataFrame:
    """Numeric columns back to numbers after rows were rebuilt from Series (object dtype)."""
    numeric = numeric_columns()
    for col in df.columns:
        if col in (*numeric, "n_seeds") or str(col).endswith(("_std", "_ci95")):
            df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


def collapse_repeats(finished: pd.DataFrame) -> pd.DataFrame:
    """Finished prepared rows with each repeated row's trials replaced by their aggregate
    (means, ``<AP>_std``, ``<AP>_ci95``, ``n_seeds``): one point per design in the plots."""
    if finished.empty or "seed" not in finished.columns:
        return finished
    parts = []
    for _, group in finished.groupby("label", sort=False):
        parts.append(_mean_row(group).to_frame().T if _repeated(group) else group)
    return _numbers(pd.concat(parts, ignore_index=True))


def _repeated(done: pd.DataFrame) -> bool:
    """Several finished trials of one row, each with its own seed: repeats to aggregate."""
    if len(done) < 2 or "seed" not in done.columns:
        return False
    seeds = done["seed"]
    return bool(seeds.notna().all() and seeds.is_unique)


def _mean_row(done: pd.DataFrame) -> pd.Series:
    """One row of a label's finished repeats: the last trial's values, means where a
    column aggregates so (``columns.py``), and for AP its std and 95% CI."""
    row = done.iloc[-1].copy()
    for col in aggregated("mean"):
        if col in done.columns:
            row[col] = done[col].mean()
    for col in aggregated("spread"):
        if col in done.columns:
            summary = summarize(done[col].tolist())
            row[col], row[f"{col}_std"], row[f"{col}_ci95"] = (
                summary.mean,
                summary.std,
                summary.ci95,
            )
    row["n_seeds"] = len(done)
    row["seed"] = math.nan
    if isinstance(row.get("key"), str):
        row["key"] = re.sub(r"-seed-?\d+$", "", row["key"])
    return row


def _seed_values(df: pd.DataFrame, label: str, col: str) -> dict[int, float]:
    """seed -> value of a row's finished trials (position when a trial has no seed)."""
    done = df[(df["label"] == label) & finished_mask(df)]
    if col not in done.columns:
        return {}
    seeds = done["seed"] if "seed" in done.columns else pd.Series(math.nan, index=done.index)
    return {
        int(seed) if pd.notna(seed) else i: float(value)
        for i, (seed, value) in enumerate(zip(seeds, done[col]))
    }


def _paper_value(ctx: ReportContext, label: str, col: str) -> float:
    """The paper's number for one cell, NaN when it has none."""
    value = ctx.paper_rows.get(label, {}).get(col)
    try:
        return float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def _change(new: float, old: float, how: str | None) -> float:
    """Improvement of ``new`` over ``old``: relative % ("rel") or difference ("ap")."""
    if how is None or pd.isna(new) or pd.isna(old):
        return math.nan
    if how == "ap":
        return float(new) - float(old)
    return math.nan if old == 0 else 100.0 * (float(new) / float(old) - 1.0)


def improvement_label(ctx: ReportContext) -> str:
    """Label of the improvement row: ``improvement (<against> vs <baseline>)``."""
    return f"improvement ({ctx.against} vs {ctx.baseline})"


def _shown(rows: pd.DataFrame, ctx: ReportContext) -> list[tuple[str, str, str | None, bool]]:
    """Metric columns with any data, each with whether a paper column goes beside it."""
    shown = []
    for col, header, how in table_columns():
        if col not in rows.columns or not rows[col].notna().any():
            continue
        paper = any(not math.isnan(_paper_value(ctx, label, col)) for label in rows["label"])
        shown.append((col, header, how, paper))
    return shown


def param_columns(rows: pd.DataFrame) -> list[str]:
    """Sampled-parameter columns (``param:<path>``) of a search."""
    return [c for c in rows.columns if isinstance(c, str) and c.startswith(PARAM_PREFIX)]


def numeric_table(results: pd.DataFrame, ctx: ReportContext) -> pd.DataFrame:
    """Raw numbers of the report, same rows as ``paper_table`` (for CSV and plots).

    Columns: ``label``, ``key``, a search's ``param:*`` columns, each shown metric with a
    ``<metric>_paper`` column beside it where the paper has numbers, ``latency_device``,
    ``status``, ``error``, ``pareto`` (searches), ``row`` ("result" or "improvement"). AP
    columns are in PERCENT here (ours x 100) so they compare directly with the paper's. The
    improvement row holds relative change in % for params/FLOPs/FPS/latency and differences
    in AP points for AP columns.

    Repeats (a row trained with several seeds): a ``seed`` column, each trial's own row
    (``row`` "seed") before its row's aggregate ("result": means, with ``<AP>_std`` and
    ``<AP>_ci95`` and ``n_seeds``); the improvement row adds ``<AP>_ci95`` (of the
    difference), ``<AP>_test`` (paired / welch) and ``<AP>_ns`` (the interval contains 0).
    """
    rows = _ordered_rows(results, ctx)
    repeated = bool((rows.get("n_seeds", pd.Series(dtype=float)) > 1).any())
    shown = _shown(rows, ctx)
    out = pd.DataFrame({"label": rows["label"]})
    if "key" in rows.columns:
        out["key"] = rows["key"]
    if repeated:
        out["seed"] = rows["seed"]
    if ctx.kind == "search":
        for col in param_columns(rows):
            out[col] = rows[col]
    for col, _, _, paper in shown:
        out[col] = rows[col] * 100.0 if col in AP_KEYS else rows[col]
        if repeated and col in AP_KEYS:
            out[f"{col}_std"] = rows[f"{col}_std"] * 100.0
            out[f"{col}_ci95"] = rows[f"{col}_ci95"] * 100.0
        if paper:
            out[f"{col}_paper"] = [_paper_value(ctx, label, col) for label in rows["label"]]
    if "latency_device" in rows.columns and "latency_ms" in out.columns:
        out["latency_device"] = rows["latency_device"]
    out["status"] = rows["status"]
    out["error"] = rows["error"] if "error" in rows.columns else None
    if ctx.kind == "search":
        out["pareto"] = pareto_flags(rows, ctx.search_objectives).to_numpy()
    out["row"] = "result"
    if ctx.kind == "search" and not repeated and ctx.noise is not None:
        _with_noise_bands(out, ctx.noise, ctx.search_objectives.get(ctx.noise.metric, "max"))
    if ctx.kind == "search" and "baseline" in rows.columns:
        _with_base_differences(out, rows, ctx)
    if repeated:
        out["n_seeds"] = rows["n_seeds"]
    finished = dict(zip(rows["label"], finished_mask(rows)))
    if ctx.baseline and ctx.against and finished.get(ctx.baseline) and finished.get(ctx.against):
        extra = _improvement(out, prepare(results), ctx, shown, repeated)
        out = pd.concat([out, pd.DataFrame([extra])], ignore_index=True)
    if repeated:
        out = _with_seed_rows(out, results, shown)
    return out


def _with_noise_bands(out: pd.DataFrame, noise: SeedNoise, mode: str) -> None:
    """A search's single runs with the calibrated noise: ``<metric>_ci95`` (a run's 95%
    interval) and ``vs_best`` (difference from the best run, points) with ``vs_best_ns``
    (within the 95% interval of a difference of two single runs); ``mode``: max or min."""
    metric = noise.metric
    if metric not in out.columns:
        return
    values = out[metric].where(finished_mask(out))
    out[f"{metric}_ci95"] = np.where(values.notna(), noise.ci95 * 100.0, np.nan)
    if not values.notna().any():
        return
    best = values.max() if mode == "max" else values.min()
    out["vs_best"] = values - best
    out["vs_best_ns"] = [
        None if pd.isna(d) else bool(abs(d) <= noise.difference_ci95 * 100.0)
        for d in out["vs_best"]
    ]


def search_metric(ctx: ReportContext) -> str:
    """The AP column a search ranks designs by: its first AP objective, else AP."""
    return next((c for c in ctx.search_objectives if c in AP_KEYS), "AP")


def _with_base_differences(out: pd.DataFrame, rows: pd.DataFrame, ctx: ReportContext) -> None:
    """A search's baseline rows (``baseline``), and every run's difference from the first
    baseline's run (``vs_base``, points; same seed), n.s. within the calibrated interval of
    a difference of two single runs (``vs_base_ns``; None without a calibration)."""
    metric = search_metric(ctx)
    is_base = rows["baseline"].eq(True).fillna(False).astype(bool).to_numpy()
    out["baseline"] = is_base
    done = finished_mask(out).to_numpy()
    if metric not in out.columns or not (is_base & done).any():
        return
    base = float(out.loc[is_base & done, metric].iloc[0])
    out["vs_base"] = np.where(done & ~is_base, out[metric] - base, np.nan)
    noise = ctx.noise
    out["vs_base_ns"] = [
        None if pd.isna(d) or noise is None else bool(abs(d) <= noise.difference_ci95 * 100.0)
        for d in out["vs_base"]
    ]


def _improvement(
    out: pd.DataFrame, trials: pd.DataFrame, ctx: ReportContext, shown: list, repeated: bool
) -> dict[str, Any]:
    """The improvement row: ``against`` vs ``baseline``, AP differences with their 95% CI."""
    base = out[out["label"] == ctx.baseline].iloc[-1]
    new = out[out["label"] == ctx.against].iloc[-1]
    extra: dict[str, Any] = {"label": improvement_label(ctx), "row": "improvement"}
    for col, _, how, paper in shown:
        extra[col] = _change(new[col], base[col], how)
        if repeated and col in AP_KEYS:
            diff = difference(
                _seed_values(trials, ctx.baseline, col), _seed_values(trials, ctx.against, col)
            )
            extra[f"{col}_ci95"] = diff.ci95 * 100.0
            extra[f"{col}_test"] = diff.test or None
            extra[f"{col}_ns"] = (not diff.significant) if diff.estimated else None
            extra[f"{col}_mdd"] = diff.minimum_detectable() * 100.0
        if paper:
            extra[f"{col}_paper"] = _change(new[f"{col}_paper"], base[f"{col}_paper"], how)
    if "pareto" in out.columns:
        extra["pareto"] = False
    return extra


def _with_seed_rows(out: pd.DataFrame, results: pd.DataFrame, shown: list) -> pd.DataFrame:
    """Each repeated row's trials (``row`` "seed") put before its aggregate row."""
    trials = prepare(results)
    trials = trials[finished_mask(trials) & trials["seed"].notna()]
    pieces = []
    for _, result in out.iterrows():
        if result["row"] == "result" and result.get("n_seeds", 0) > 1:
            mine = trials[trials["label"] == result["label"]].sort_values("seed")
            seed_rows = pd.DataFrame({"label": mine["label"], "key": mine["key"]})
            seed_rows["seed"] = mine["seed"]
            for col, _, _, _ in shown:
                seed_rows[col] = mine[col] * 100.0 if col in AP_KEYS else mine[col]
            seed_rows["status"], seed_rows["row"] = mine["status"], "seed"
            pieces.append(seed_rows)
        pieces.append(result.to_frame().T)
    table = pd.concat(pieces, ignore_index=True)[list(out.columns)].infer_objects()
    table["seed"] = pd.to_numeric(table["seed"]).astype("Int64")
    return table
