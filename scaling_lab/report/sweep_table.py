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

KINDS = ("variant", "search")
FORMATS = ("md", "tex", "csv")

# (numeric column, display header, improvement: "rel" = relative %, "ap" = AP points, None)
COLUMNS: tuple[tuple[str, str, str | None], ...] = (
    ("params_m", "#Param.", "rel"),
    ("gflops", "FLOPs", "rel"),
    ("img_size", "Size", None),
    ("fps", "FPS", "rel"),
    ("latency_ms", "Latency (ms)", "rel"),
    ("AP", "AP", "ap"),
    ("AP50", "AP50", "ap"),
    ("AP75", "AP75", "ap"),
    ("APs", "APS", "ap"),
    ("APm", "APM", "ap"),
    ("APl", "APL", "ap"),
)
PAPER_KEYS = {"params_m", "gflops", "img_size", "fps", *AP_KEYS}
NUMERIC_INPUTS = ("order", "params", "params_m", "gmacs", "gflops", "img_size", "latency_ms")
NUMERIC_INPUTS += ("fps", "peak_memory_mb", "epochs_done", "wall_s", *AP_KEYS)
NOT_RUN = "not run"
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
        keep.append((done if len(done) else group).index[-1])
    df = df.loc[keep]
    missing = [label for label in dict.fromkeys(ctx.labels) if label not in set(df["label"])]
    if missing:
        df = pd.concat([df, pd.DataFrame({"label": missing, "status": NOT_RUN})], ignore_index=True)
    rank = {label: i for i, label in enumerate(ctx.labels)}
    df["_rank"] = [rank.get(label, len(rank)) for label in df["label"]]
    df = df.sort_values(["_rank", "order"], kind="mergesort", na_position="last")
    return df.drop(columns="_rank").reset_index(drop=True)


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
    """
    rows = _ordered_rows(results, ctx)
    shown = _shown(rows, ctx)
    out = pd.DataFrame({"label": rows["label"]})
    if "key" in rows.columns:
        out["key"] = rows["key"]
    if ctx.kind == "search":
        for col in _param_columns(rows):
            out[col] = rows[col]
    for col, _, _, paper in shown:
        out[col] = rows[col] * 100.0 if col in AP_KEYS else rows[col]
        if paper:
            out[f"{col}_paper"] = [_paper_value(ctx, label, col) for label in rows["label"]]
    if "latency_device" in rows.columns and "latency_ms" in out.columns:
        out["latency_device"] = rows["latency_device"]
    out["status"] = rows["status"]
    out["error"] = rows["error"] if "error" in rows.columns else None
    if ctx.kind == "search":
        out["pareto"] = pareto_flags(rows, ctx.search_objectives).to_numpy()
    out["row"] = "result"

    finished = dict(zip(rows["label"], finished_mask(rows)))
    if ctx.baseline and ctx.against and finished.get(ctx.baseline) and finished.get(ctx.against):
        base = out[out["label"] == ctx.baseline].iloc[-1]
        new = out[out["label"] == ctx.against].iloc[-1]
        extra: dict[str, Any] = {"label": improvement_label(ctx), "row": "improvement"}
        for col, _, how, paper in shown:
            extra[col] = _change(new[col], base[col], how)
            if paper:
                extra[f"{col}_paper"] = _change(new[f"{col}_paper"], base[f"{col}_paper"], how)
        if "pareto" in out.columns:
            extra["pareto"] = False
        out = pd.concat([out, pd.DataFrame([extra])], ignore_index=True)
    return out


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
    if col == "latency_ms":
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
            out[name] = [
                _format_change(v, how, decimals) if imp else _format_value(col, v, decimals)
                for v, imp in zip(numeric[source], improvement)
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
    out.attrs = {"improvement": bool(improvement.any()), "latency_device": devices}
    return out


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
    return "\n\n".join(parts) + "\n"


def _render_tex(table: pd.DataFrame, ctx: ReportContext) -> str:
    """A complete booktabs ``table`` environment, written by hand (no jinja2)."""
    label = re.sub(r"[^A-Za-z0-9:._-]+", "-", ctx.experiment)
    align = "".join("l" if col in TEXT_HEADERS else "r" for col in table.columns)
    caption = ctx.heading
    device = table.attrs.get("latency_device")
    if device and "Latency (ms)" in table.columns:
        caption += f" (latency measured on {device})"
    lines = [
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{{tex_escape(caption)}}}",
        f"\\label{{tab:{label}}}",
        f"\\begin{{tabular}}{{{align}}}",
        "\\toprule",
        " & ".join(tex_escape(c) for c in table.columns) + " \\\\",
        "\\midrule",
    ]
    for values, improvement in zip(table.itertuples(index=False), _is_improvement(table)):
        if improvement:
            lines.append("\\midrule")
        lines.append(" & ".join(tex_escape(v) for v in values) + " \\\\")
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
