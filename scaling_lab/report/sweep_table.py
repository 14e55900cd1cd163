"""Paper-style tables of a sweep's results (Markdown, LaTeX, CSV), next to the paper's numbers.

The YOLOv7 paper reports each ablation as a small table (#Param., FLOPs, Size, FPS, AP...) with
an improvement row under it; a sweep over the same variants should print the same way so the
two can be read side by side. ``numeric_table`` holds the raw numbers (for CSV and plots),
``paper_table`` the formatted strings (for Markdown and LaTeX).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scaling_lab.atomic import atomic_write_bytes
from scaling_lab.eval_protocol import AP_KEYS
from scaling_lab.report.pareto import finished_mask, pareto_flags
from scaling_lab.report.stats import LEVEL, SeedNoise, difference, summarize

KINDS = ("variant", "search")
FORMATS = ("md", "tex", "csv")

# (numeric column, display header, improvement: "rel" = relative %, "ap" = AP points, None)
COLUMNS: tuple[tuple[str, str, str | None], ...] = (
    ("params_m", "#Param.", "rel"),
    ("gflops", "FLOPs", "rel"),
    ("img_size", "Size", None),
    ("fps", "FPS", "rel"),
    ("latency_ms", "Latency (ms)", "rel"),
    ("latency_pred_ms", "Latency, predicted (ms)", "rel"),
    ("AP", "AP", "ap"),
    ("AP50", "AP50", "ap"),
    ("AP75", "AP75", "ap"),
    ("APs", "APS", "ap"),
    ("APm", "APM", "ap"),
    ("APl", "APL", "ap"),
)
PAPER_KEYS = {"params_m", "gflops", "img_size", "fps", *AP_KEYS}
NUMERIC_INPUTS = ("order", "params", "params_m", "gmacs", "gflops", "img_size", "latency_ms")
NUMERIC_INPUTS += ("latency_pred_ms",)
NUMERIC_INPUTS += ("fps", "peak_memory_mb", "epochs_done", "wall_s", "seed", *AP_KEYS)
MEANS = ("params", "params_m", "gmacs", "gflops", "latency_ms", "fps", "peak_memory_mb")
MEANS += ("latency_pred_ms",)
MEANS += ("epochs_done", "wall_s")  # averaged over a row's seeds (AP_KEYS: with their spread)
NOT_RUN = "not run"
HEADER = {col: header for col, header, _ in COLUMNS}  # column -> its header in the table
TEXT_HEADERS = ("Model", "Status")
MISSING = "-"
ERROR_CHARS = 80


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
    for col in NUMERIC_INPUTS:
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
    for col in df.columns:
        if col in (*NUMERIC_INPUTS, "n_seeds") or str(col).endswith(("_std", "_ci95")):
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
    """One row of a label's finished repeats: means, and for AP its std and 95% CI."""
    row = done.iloc[-1].copy()
    for col in MEANS:
        if col in done.columns:
            row[col] = done[col].mean()
    for col in AP_KEYS:
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
    for col, header, how in COLUMNS:
        if col not in rows.columns or not rows[col].notna().any():
            continue
        paper = any(not math.isnan(_paper_value(ctx, label, col)) for label in rows["label"])
        shown.append((col, header, how, paper))
    return shown


def _param_columns(rows: pd.DataFrame) -> list[str]:
    """Sampled-parameter columns (``param:<path>``) of a search."""
    return [c for c in rows.columns if isinstance(c, str) and c.startswith("param:")]


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
        for col in _param_columns(rows):
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


def _ap_decimals(ctx: ReportContext) -> int:
    """1 decimal like most of the paper's tables, 2 where its numbers have 2 (Tables 4-5)."""
    for values in ctx.paper_rows.values():
        for col in AP_KEYS:
            v = values.get(col)
            if v is not None and not pd.isna(v) and abs(round(float(v), 1) - float(v)) > 1e-9:
                return 2
    return 1


def _format_value(col: str, v: Any, ap_decimals: int) -> str:
    """One measured or paper cell, paper style: 36.9M, 104.7G, 640, 161, 51.2%."""
    if v is None or pd.isna(v):
        return MISSING
    v = float(v)
    if col == "params_m":
        return f"{v:.1f}M"
    if col == "gflops":
        return f"{v:.1f}G"
    if col == "img_size":
        return f"{v:.0f}"
    if col == "fps":
        return f"{v:.0f}" if v >= 100 else f"{v:.1f}"
    if col in ("latency_ms", "latency_pred_ms"):
        return f"{v:.2f}" if v < 10 else f"{v:.1f}"
    if col in AP_KEYS:
        return f"{v:.{ap_decimals}f}%"
    return f"{v:g}"


def _format_change(v: Any, how: str | None, ap_decimals: int) -> str:
    """One improvement cell: signed relative % ("-39%") or signed AP points ("+0.4")."""
    if how is None:
        return ""
    if v is None or pd.isna(v):
        return MISSING
    if how == "ap":
        return f"{v:+.{ap_decimals}f}"
    return f"{v:+.0f}%" if abs(v) >= 10 else f"{v:+.1f}%"


def _format_status(status: Any, error: Any) -> str:
    """``status`` alone, or ``status: <first line of the error>`` (shortened) when there is one."""
    status = str(status) if isinstance(status, str) and status else "unknown"
    if not isinstance(error, str) or not error.strip():
        return status
    line = error.strip().splitlines()[0].strip()
    if len(line) > ERROR_CHARS:
        line = line[: ERROR_CHARS - 3].rstrip() + "..."
    return f"{status}: {line}"


def _format_param(v: Any) -> str:
    """A sampled parameter's value as a table cell."""
    if v is None or (not isinstance(v, (str, list, tuple, dict)) and pd.isna(v)):
        return MISSING
    if isinstance(v, float):
        return f"{v:.0f}" if v.is_integer() else f"{v:.4g}"
    return str(v)


def _display(numeric: pd.DataFrame, ctx: ReportContext) -> pd.DataFrame:
    """Format a ``numeric_table`` into the paper-style string table."""
    shown = [
        (col, header, how, f"{col}_paper" in numeric.columns)
        for col, header, how in COLUMNS
        if col in numeric.columns
    ]
    decimals = _ap_decimals(ctx)
    numeric = numeric[numeric["row"] != "seed"].reset_index(drop=True)
    improvement = numeric["row"].eq("improvement").to_numpy()
    out = pd.DataFrame({"Model": numeric["label"].astype(str)})
    if ctx.kind == "search":
        for col in _param_columns(numeric):
            out[col.removeprefix("param:")] = [
                "" if imp else _format_param(v) for v, imp in zip(numeric[col], improvement)
            ]
    for col, header, how, paper in shown:
        names = [(col, header)] + ([(f"{col}_paper", f"{header} (paper)")] if paper else [])
        for source, name in names:
            out[name] = _cells(numeric, col, source, how, decimals)
    if "vs_best" in numeric.columns and ctx.noise is not None:
        header = HEADER.get(ctx.noise.metric, ctx.noise.metric)
        out[f"{header} vs best"] = [
            "" if imp else _format_versus_best(d, ns, decimals)
            for d, ns, imp in zip(numeric["vs_best"], numeric["vs_best_ns"], improvement)
        ]
    if ctx.kind == "search":
        pareto = numeric["pareto"].fillna(False).astype(bool)
        out["Pareto"] = ["*" if p and not imp else "" for p, imp in zip(pareto, improvement)]
    if not numeric.loc[~improvement, "status"].eq("finished").all():
        out["Status"] = [
            "" if imp else _format_status(s, e)
            for s, e, imp in zip(numeric["status"], numeric["error"], improvement)
        ]
    devices = _devices(numeric.loc[~improvement]) if "latency_ms" in numeric.columns else ""
    out.attrs = {
        "improvement": bool(improvement.any()),
        "latency_device": devices,
        "stats_note": _stats_note(numeric, [col for col, *_ in shown], ctx),
    }
    return out


def _cells(numeric: pd.DataFrame, col: str, source: str, how: str | None, decimals: int) -> list:
    """One display column: values (``mean ± std`` over repeats) and the improvement cell
    (``+Δ ± CI``, ``(n.s.)`` when the interval contains 0)."""
    spread = source == col and f"{col}_std" in numeric.columns
    band = source == col and not spread and f"{col}_ci95" in numeric.columns
    cells = []
    for _, row in numeric.iterrows():
        v = row[source]
        if row["row"] != "improvement":
            cell = _format_value(col, v, decimals)
            std = row.get(f"{col}_std") if spread else None
            if std is not None and pd.notna(std) and cell != MISSING:
                cell = f"{cell.removesuffix('%')} ± {std:.{decimals}f}%"
            ci = row.get(f"{col}_ci95") if band else None
            if ci is not None and pd.notna(ci) and cell != MISSING:
                cell = f"{cell.removesuffix('%')} ± {ci:.{decimals}f}%"
            cells.append(cell)
            continue
        cell = _format_change(v, how, decimals)
        ci = row.get(f"{col}_ci95") if source == col else None
        if ci is not None and pd.notna(ci) and cell != MISSING:
            cell += f" ± {ci:.{decimals}f}"
            if row.get(f"{col}_ns") is True:
                cell += " (n.s.)"
        cells.append(cell)
    return cells


def _format_versus_best(delta: Any, not_significant: Any, decimals: int) -> str:
    if pd.isna(delta):
        return MISSING
    if delta == 0:
        return "best"
    return f"{delta:+.{decimals}f}" + (" (n.s.)" if not_significant else "")


def _stats_note(numeric: pd.DataFrame, shown: list[str], ctx: ReportContext) -> str:
    """What the AP cells state about seed noise: the repeats and tests, the calibrated noise
    of a search's single runs, or that no estimate exists."""
    measured = numeric[numeric["row"] == "result"]
    aps = [col for col in shown if col in AP_KEYS]
    if not aps or not measured[aps].notna().any().any():
        return ""
    if "vs_best" in numeric.columns and ctx.noise is not None:
        return _noise_note(ctx.noise)
    if "n_seeds" not in numeric.columns:
        return "One seed: no noise estimate (set seeds: N in the experiment to repeat each row)."
    counts = sorted({int(n) for n in measured["n_seeds"].dropna() if n > 0})
    runs = "/".join(map(str, counts))
    tests = {numeric[f"{c}_test"].dropna().iloc[0] for c in aps if f"{c}_test" in numeric}
    test = {"paired": "paired t over seeds", "welch": "Welch's t"}
    how = " / ".join(test[t] for t in sorted(tests) if t in test)
    note = f"AP: mean ± sample std over {runs} seeds."
    if how:
        level = f"{LEVEL:.0%}"
        note += f" Improvement: difference ± {level} CI ({how}); n.s.: the CI contains 0."
    return note


def _noise_note(noise: SeedNoise) -> str:
    header = HEADER.get(noise.metric, noise.metric)
    level = f"{LEVEL:.0%}"
    return (
        f"One run per design. {header}: ± the {level} interval of a single run, from the seed "
        f"noise lab calibrate measured at this budget (pooled std {100 * noise.std:.1f} points "
        f"over {noise.designs} designs x {noise.seeds} seeds, {noise.df} df). '{header} vs "
        f"best': difference from the best run; n.s. within ±{100 * noise.difference_ci95:.1f}, "
        f"the {level} interval of the difference of two single runs"
        + (
            f" with the same seed, as here (design x seed interaction std "
            f"{100 * noise.shared_seed_std:.1f} points, {noise.shared_seed_df} df)."
            if noise.paired
            else "."
        )
    )


def _devices(numeric: pd.DataFrame) -> str:
    """The latency device(s) of the rows with a latency, for the note under the table."""
    if "latency_device" not in numeric.columns:
        return ""
    has = numeric["latency_ms"].notna()
    names = [str(d) for d in numeric.loc[has, "latency_device"].dropna().unique()]
    return ", ".join(names)


def paper_table(results: pd.DataFrame, ctx: ReportContext) -> pd.DataFrame:
    """The report table laid out like the YOLOv7 paper's (all cells strings).

    Columns, where they have data: Model, #Param., FLOPs, Size, FPS, Latency (ms), AP, AP50,
    AP75, APS, APM, APL, each measured one followed by ``<col> (paper)`` when the paper has a
    number for some row; searches add their sampled parameters after Model and a Pareto column
    ("*" on the front of ``ctx.objectives``); Status only when some row did not finish. The
    last row is the improvement row when ``ctx.against`` and ``ctx.baseline`` both finished.
    """
    return _display(numeric_table(results, ctx), ctx)


def _is_improvement(table: pd.DataFrame) -> np.ndarray:
    """Which rows of a display or numeric table are the improvement row."""
    if "row" in table.columns:
        return table["row"].eq("improvement").to_numpy()
    first = table.columns[0]
    return table[first].astype(str).str.startswith("improvement (").to_numpy()


_TEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "|": r"\textbar{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
}
_TEX_RE = re.compile("|".join(re.escape(c) for c in _TEX_SPECIAL))


def tex_escape(text: Any) -> str:
    """Escape LaTeX's special characters in a cell (one pass, so nothing is escaped twice)."""
    return _TEX_RE.sub(lambda m: _TEX_SPECIAL[m.group()], str(text))


def _tex_cell(text: Any) -> str:
    """An escaped cell, ``±`` in math mode (no unicode needed from the document)."""
    return tex_escape(text).replace("±", r"$\pm$")


def _render_md(table: pd.DataFrame, ctx: ReportContext) -> str:
    """Markdown: title, note, the table (pipes in cells escaped), latency device."""
    cells = table.copy()
    for col in cells.columns:
        cells[col] = [str(v).replace("|", "\\|") for v in cells[col]]
    parts = [f"# {ctx.heading}"]
    if ctx.note.strip():
        parts.append(ctx.note.strip())
    align = ["left" if col in TEXT_HEADERS else "right" for col in cells.columns]
    parts.append(cells.to_markdown(index=False, disable_numparse=True, colalign=align))
    device = table.attrs.get("latency_device")
    if device:
        parts.append(f"Latency: median, measured on {device}.")
    if table.attrs.get("stats_note"):
        parts.append(table.attrs["stats_note"])
    return "\n\n".join(parts) + "\n"


def _render_tex(table: pd.DataFrame, ctx: ReportContext) -> str:
    """A complete booktabs ``table`` environment, written by hand (no jinja2)."""
    label = re.sub(r"[^A-Za-z0-9:._-]+", "-", ctx.experiment)
    align = "".join("l" if col in TEXT_HEADERS else "r" for col in table.columns)
    caption = ctx.heading
    device = table.attrs.get("latency_device")
    if device and "Latency (ms)" in table.columns:
        caption += f" (latency measured on {device})"
    if table.attrs.get("stats_note"):
        caption += ". " + table.attrs["stats_note"]
    lines = [
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{{_tex_cell(caption)}}}",
        f"\\label{{tab:{label}}}",
        f"\\begin{{tabular}}{{{align}}}",
        "\\toprule",
        " & ".join(tex_escape(c) for c in table.columns) + " \\\\",
        "\\midrule",
    ]
    for values, improvement in zip(table.itertuples(index=False), _is_improvement(table)):
        if improvement:
            lines.append("\\midrule")
        lines.append(" & ".join(_tex_cell(v) for v in values) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def render(table: pd.DataFrame, ctx: ReportContext, fmt: str) -> str:
    """The table as text: ``md`` and ``tex`` take ``paper_table``, ``csv`` ``numeric_table``.

    ``csv`` writes whatever table it is given (``write_report`` passes the numeric one).
    """
    if fmt == "md":
        return _render_md(table, ctx)
    if fmt == "tex":
        return _render_tex(table, ctx)
    if fmt == "csv":
        return table.to_csv(index=False)
    raise ValueError(f"unknown report format {fmt!r}; known formats: {', '.join(FORMATS)}")


def write_report(
    results: pd.DataFrame,
    ctx: ReportContext,
    out_dir: str | Path,
    formats: Iterable[str] = FORMATS,
) -> list[Path]:
    """Write ``table.<fmt>`` for each format and every applicable plot; returns the paths.

    Unknown formats raise ``ValueError`` before anything is written.
    """
    formats = (formats,) if isinstance(formats, str) else tuple(formats)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(
            f"unknown report format(s) {', '.join(map(repr, unknown))}; "
            f"known formats: {', '.join(FORMATS)}"
        )
    from scaling_lab.report.sweep_plots import write_plots  # lazy: matplotlib only when needed

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    numeric = numeric_table(results, ctx)
    display = _display(numeric, ctx)
    paths = []
    for fmt in dict.fromkeys(formats):
        text = render(numeric if fmt == "csv" else display, ctx, fmt)
        paths.append(atomic_write_bytes(out_dir / f"table.{fmt}", text.encode("utf-8")))
    paths += write_plots(results, ctx, out_dir)
    return paths
