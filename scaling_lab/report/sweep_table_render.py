"""A sweep's paper-style table as text (Markdown, booktabs LaTeX, CSV), and the report's
files: ``numeric_table``'s numbers formatted paper style (36.9M, 104.7G, 51.2% ± 0.3%),
the improvement row's signed changes with ``(n.s.)`` marks, and the notes under the table."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scaling_lab.atomic import atomic_write_bytes
from scaling_lab.eval_protocol import AP_KEYS
from scaling_lab.report.stats import LEVEL, POWER, SeedNoise
from scaling_lab.report.sweep_table import (
    ReportContext,
    numeric_table,
    param_columns,
    search_metric,
)
from scaling_lab.sweep.columns import PARAM_PREFIX, header, table_columns

FORMATS = ("md", "tex", "csv")
TEXT_HEADERS = ("Model", "Status")
MISSING = "-"
ERROR_CHARS = 80


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
        (col, name, how, f"{col}_paper" in numeric.columns)
        for col, name, how in table_columns()
        if col in numeric.columns
    ]
    decimals = _ap_decimals(ctx)
    numeric = numeric[numeric["row"] != "seed"].reset_index(drop=True)
    improvement = numeric["row"].eq("improvement").to_numpy()
    out = pd.DataFrame({"Model": numeric["label"].astype(str)})
    if ctx.kind == "search":
        for col in param_columns(numeric):
            out[col.removeprefix(PARAM_PREFIX)] = [
                "" if imp else _format_param(v) for v, imp in zip(numeric[col], improvement)
            ]
    for col, name, how, paper in shown:
        names = [(col, name)] + ([(f"{col}_paper", f"{name} (paper)")] if paper else [])
        for source, name in names:
            out[name] = _cells(numeric, col, source, how, decimals)
    if "vs_best" in numeric.columns and ctx.noise is not None:
        out[f"{header(ctx.noise.metric)} vs best"] = [
            "" if imp else _format_versus_best(d, ns, decimals)
            for d, ns, imp in zip(numeric["vs_best"], numeric["vs_best_ns"], improvement)
        ]
    if "vs_base" in numeric.columns:
        base = numeric.loc[numeric["baseline"].eq(True), "label"].iloc[0]
        out[f"{header(search_metric(ctx))} vs {base}"] = [
            "" if imp else ("baseline" if b else _format_versus(d, ns, decimals))
            for d, ns, b, imp in zip(
                numeric["vs_base"], numeric["vs_base_ns"], numeric["baseline"], improvement
            )
        ]
    if "baseline" in numeric.columns:
        out["Model"] = [
            f"{label} (baseline)" if b is True else label
            for label, b in zip(out["Model"], numeric["baseline"])
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
    if not pd.isna(delta) and delta == 0:
        return "best"
    return _format_versus(delta, not_significant, decimals)


def _format_versus(delta: Any, not_significant: Any, decimals: int) -> str:
    """A difference in points, ``(n.s.)`` when within the noise (None: no noise estimate)."""
    if pd.isna(delta):
        return MISSING
    return f"{delta:+.{decimals}f}" + (" (n.s.)" if not_significant is True else "")


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
    conclusion = ablation_conclusion(numeric, aps, ctx)
    return f"{note} {conclusion}" if conclusion else note


def ablation_conclusion(numeric: pd.DataFrame, aps: list[str], ctx: ReportContext) -> str:
    """An ablation's answer on its first AP column: the improvement supported or not at this
    budget, with its interval, and the minimum detectable difference at these seeds and
    this noise beside the paper's improvement, so a reader sees whether it could show."""
    rows = numeric[numeric["row"] == "improvement"]
    col = next((c for c in aps if f"{c}_ci95" in rows and rows[f"{c}_ci95"].notna().any()), None)
    if rows.empty or col is None:
        return ""
    row = rows.iloc[0]
    delta, half, mdd = (float(row[c]) for c in (col, f"{col}_ci95", f"{col}_mdd"))
    name = header(col)
    verdict = "supported" if abs(delta) > half else "not supported"
    text = (
        f"Conclusion: {ctx.against} vs {ctx.baseline}: {name} {delta:+.1f} "
        f"[{delta - half:+.1f}, {delta + half:+.1f}] points, {verdict} at this budget."
    )
    if np.isfinite(mdd):
        text += (
            f" The smallest difference these seeds detect with {POWER:.0%} power is "
            f"{mdd:.1f} points"
        )
        paper = row.get(f"{col}_paper")
        if paper is not None and pd.notna(paper):
            shows = "could" if abs(float(paper)) >= mdd else "could not"
            text += f"; the paper's {float(paper):+.1f} {shows} have shown up"
        text += "."
    return text


def _noise_note(noise: SeedNoise) -> str:
    name = header(noise.metric)
    level = f"{LEVEL:.0%}"
    return (
        f"One run per design. {name}: ± the {level} interval of a single run, from the seed "
        f"noise lab calibrate measured at this budget (pooled std {100 * noise.std:.1f} points "
        f"over {noise.designs} designs x {noise.seeds} seeds, {noise.df} df). '{name} vs "
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
    if ctx.headline.strip():
        parts += [ctx.headline.strip(), "## Search"]
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
    if device and header("latency_ms") in table.columns:
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
