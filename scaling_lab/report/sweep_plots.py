"""Figures of a sweep report (PNG and SVG): AP against cost, Pareto fronts, design spaces.

Every plot draws only finished trials and is skipped (returns ``[]``) when its data is missing,
e.g. AP plots of a profile-only sweep. Figures are built with matplotlib's object API on the
Agg canvas, so no pyplot state is touched and nothing needs closing or can leak.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from scaling_lab.atomic import atomic_write_bytes
from scaling_lab.eval_protocol import AP_KEYS
from scaling_lab.report.sweep_table import ReportContext, collapse_repeats, prepare
from scaling_lab.sweep.columns import PARAM_PREFIX, axis_label
from scaling_lab.sweep.pareto import finished_mask, pareto_flags, pareto_mask

DPI = 150
SVG_SALT = "scaling_lab"  # SVG ids: the same on every run (matplotlib draws a random salt)
# Beyond this many points only the Pareto-front points get a text label (the rest would clutter).
MAX_LABELS = 15
PEER_MARKERS = ("s", "^", "v", "D", "P", "X", "<", ">", "h", "p")


def _figure(width: float = 6.4, height: float = 4.8) -> tuple[Figure, Axes]:
    """A figure on the Agg canvas with one axes."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _save(fig: Figure, out_dir: Path, name: str) -> list[Path]:
    """Write ``<name>.png`` and ``<name>.svg`` atomically, byte for byte the same on a rerun
    (no timestamp; SVG element ids from a fixed salt instead of a random one), so a committed
    report changes only where its content does."""
    import matplotlib

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "svg"):
        buffer = io.BytesIO()
        metadata = {"Date": None} if ext == "svg" else None
        # "tight" keeps point labels near the right edge inside the image
        with matplotlib.rc_context({"svg.hashsalt": SVG_SALT}):
            fig.savefig(buffer, format=ext, dpi=DPI, metadata=metadata, bbox_inches="tight")
        paths.append(atomic_write_bytes(out_dir / f"{name}.{ext}", buffer.getvalue()))
    return paths


def _finished(results: pd.DataFrame) -> pd.DataFrame:
    """Prepared rows of the trials that finished."""
    df = prepare(results)
    return collapse_repeats(df[finished_mask(df)])


def _values(df: pd.DataFrame, col: str) -> np.ndarray:
    """A metric column as floats, AP fractions as percent."""
    if col not in df.columns:
        return np.full(len(df), np.nan)
    values = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
    return values * 100.0 if col in AP_KEYS else values


def _draw_ours(ax: Axes, d: pd.DataFrame, x: np.ndarray, y: np.ndarray) -> None:
    """Our finished points; repeated rows with error bars of one sample std over seeds."""
    std = 100.0 * _values(d, "AP_std")  # a fraction, like AP; NaN: one seed
    label = "ours (finished)"
    if np.isfinite(std).any():
        label = "ours (finished; mean ± 1 std over seeds)"
        ax.errorbar(x, y, yerr=np.nan_to_num(std), fmt="none", ecolor="C0", capsize=3, zorder=3)
    ax.scatter(x, y, color="C0", zorder=3, label=label)


def _draw_baselines(ax: Axes, d: pd.DataFrame, x: np.ndarray, y: np.ndarray) -> None:
    """A search's baseline models (``baseline`` rows) as black diamonds over their points."""
    if "baseline" not in d.columns:
        return
    mine = d["baseline"].eq(True).fillna(False).to_numpy(dtype=bool)
    for i in np.flatnonzero(mine):
        ax.scatter(
            [x[i]],
            [y[i]],
            marker="D",
            s=70,
            color="black",
            zorder=5,
            label=f"baseline: {d['label'].iloc[i]}",
        )


def _with_data(df: pd.DataFrame, cols: Sequence[str]) -> pd.DataFrame:
    """Rows having a number in every one of ``cols`` (empty if a column is missing)."""
    if any(c not in df.columns for c in cols):
        return df.iloc[0:0]
    keep = np.ones(len(df), dtype=bool)
    for c in cols:
        keep &= ~np.isnan(_values(df, c))
    return df[keep]


def _draw_front(
    ax: Axes, x: np.ndarray, y: np.ndarray, modes: tuple[str, str], label: str = "Pareto front"
) -> np.ndarray:
    """Mark and connect the Pareto front of (x, y) as a staircase; returns its mask.

    The stair steps so that it bounds the dominated region: horizontal first when smaller x
    is better, vertical first when larger x is better.
    """
    mask = pareto_mask(np.column_stack([x, y]), modes)
    if mask.any():
        order = np.lexsort((y[mask], x[mask]))
        style = "steps-post" if modes[0] == "min" else "steps-pre"
        ax.plot(
            x[mask][order],
            y[mask][order],
            drawstyle=style,
            color="C3",
            linewidth=1.5,
            zorder=2,
            label=label,
        )
        ax.scatter(
            x[mask], y[mask], s=90, facecolors="none", edgecolors="C3", linewidths=1.5, zorder=4
        )
    return mask


def _annotate(
    ax: Axes, x: np.ndarray, y: np.ndarray, labels: Sequence[str], front: np.ndarray
) -> None:
    """Label the points (only the front's when there are many)."""
    everything = len(labels) <= MAX_LABELS
    for xi, yi, text, on_front in zip(x, y, labels, front):
        if everything or on_front:
            ax.annotate(str(text), (xi, yi), textcoords="offset points", xytext=(5, 4), fontsize=8)


def _finish(ax: Axes, title: str, xlabel: str, ylabel: str) -> None:
    """Title, axis labels, grid and legend, the same on every plot."""
    ax.set_title(textwrap.fill(title, 60), fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")


def _number(value: Any) -> float:
    """A float from a context value, NaN when it is missing or not a number."""
    try:
        return float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def _draw_peers(ax: Axes, peers: Sequence[dict], x_of: Any) -> int:
    """The paper's Table 2 detectors as grey reference markers, one marker per family;
    returns how many were drawn."""
    families: dict[str, list[tuple[float, float]]] = {}
    for peer in peers:
        px, py = x_of(peer), _number(peer.get("AP"))
        if not (math.isnan(px) or math.isnan(py)):
            families.setdefault(str(peer.get("family") or "peers"), []).append((px, py))
    for i, (family, points) in enumerate(families.items()):
        ax.scatter(
            *zip(*points),
            marker=PEER_MARKERS[i % len(PEER_MARKERS)],
            color=str(0.25 + 0.45 * (i % 4) / 3),
            s=28,
            alpha=0.8,
            zorder=1,
            label=f"{family} (paper Table 2, COCO)",
        )
    return sum(len(points) for points in families.values())


def _v100_latency_ms(peer: dict) -> float:
    """The paper's Fig. 1 axis: batch-1 V100 latency, 1000 / FPS."""
    fps = _number(peer.get("fps"))
    return 1000.0 / fps if fps > 0 else math.nan


def plot_ap_vs_latency(results: pd.DataFrame, ctx: ReportContext, out_dir: Path) -> list[Path]:
    """Fig. 1 style: our AP against our measured latency, with the Pareto front.

    The paper's Table 2 detectors are the reference points, on their own top axis (V100
    latency, 1000 / FPS): our latency is measured on another device, so the two x scales are
    never mixed; the bottom label names our device.
    """
    d = _with_data(_finished(results), ["latency_ms", "AP"])
    if d.empty:
        return []
    x, y = _values(d, "latency_ms"), _values(d, "AP")
    fig, ax = _figure()
    if ctx.paper_peers:
        top = ax.twiny()
        if _draw_peers(top, ctx.paper_peers, _v100_latency_ms):
            top.set_xlabel("paper Table 2: V100 latency (ms, 1000 / FPS), COCO AP", fontsize=8)
            top.legend(fontsize=7, loc="lower right")
    _draw_ours(ax, d, x, y)
    _draw_baselines(ax, d, x, y)
    front = _draw_front(ax, x, y, ("min", "max"))
    _annotate(ax, x, y, list(d["label"]), front)
    devices = []
    if "latency_device" in d.columns:
        devices = [str(v) for v in d["latency_device"].dropna().unique()]
    device = ", ".join(devices) or "unknown device"
    ap = axis_label("AP")
    _finish(ax, f"{ctx.heading}: AP vs latency", f"latency (ms, median) on {device}", ap)
    return _save(fig, out_dir, "ap_vs_latency")


def _plot_ap_vs_cost(
    results: pd.DataFrame, ctx: ReportContext, out_dir: Path, col: str, name: str
) -> list[Path]:
    """AP against a cost column, with our front, the paper's numbers for our rows, and peers."""
    d = _with_data(_finished(results), [col, "AP"])
    if d.empty:
        return []
    x, y = _values(d, col), _values(d, "AP")
    fig, ax = _figure()
    _draw_peers(ax, ctx.paper_peers, lambda peer: _number(peer.get(col)))
    paper_label = "paper, same rows (COCO)"
    for label, xi, yi in zip(d["label"], x, y):
        row = ctx.paper_rows.get(label, {})
        px, py = _number(row.get(col)), _number(row.get("AP"))
        if math.isnan(px) or math.isnan(py):
            continue
        ax.scatter(
            [px], [py], marker="o", s=50, facecolors="none", edgecolors="C2", label=paper_label
        )
        ax.plot([xi, px], [yi, py], linestyle=":", color="C2", linewidth=0.8)
        paper_label = None
    _draw_ours(ax, d, x, y)
    _draw_baselines(ax, d, x, y)
    front = _draw_front(ax, x, y, ("min", "max"))
    _annotate(ax, x, y, list(d["label"]), front)
    _finish(ax, f"{ctx.heading}: AP vs {axis_label(col)}", axis_label(col), axis_label("AP"))
    return _save(fig, out_dir, name)


def plot_ap_vs_params(results: pd.DataFrame, ctx: ReportContext, out_dir: Path) -> list[Path]:
    """AP against parameter count (M); the paper's Table 2 peers as grey reference points."""
    return _plot_ap_vs_cost(results, ctx, out_dir, "params_m", "ap_vs_params")


def plot_ap_vs_flops(results: pd.DataFrame, ctx: ReportContext, out_dir: Path) -> list[Path]:
    """AP against GFLOPs; the paper's Table 2 peers as grey reference points."""
    return _plot_ap_vs_cost(results, ctx, out_dir, "gflops", "ap_vs_flops")


def _is_numeric(column: pd.Series) -> bool:
    """Whether a sampled parameter is numeric (plotted on a value axis) or categorical."""
    present = column.dropna()
    if present.empty or any(isinstance(v, (bool, np.bool_)) for v in present):
        return False
    return bool(pd.to_numeric(present, errors="coerce").notna().all())


def plot_design_space(results: pd.DataFrame, ctx: ReportContext, out_dir: Path) -> list[Path]:
    """One panel per sampled parameter (``param:*``): the first objective against its value.

    Categorical parameters sit at category positions; Pareto-front trials are starred.
    """
    objectives = ctx.search_objectives
    objective = next(iter(objectives))
    d = _with_data(_finished(results), [objective])
    params = [c for c in d.columns if isinstance(c, str) and c.startswith(PARAM_PREFIX)]
    if d.empty or not params:
        return []
    y = _values(d, objective)
    front = pareto_flags(d, objectives).to_numpy()
    ncols = min(3, len(params))
    nrows = math.ceil(len(params) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.4 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, param in zip(axes, params):
        column = d[param]
        has = column.notna().to_numpy()
        if _is_numeric(column):
            x = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)
        else:
            categories = sorted({str(v) for v in column[has]})
            position = {c: i for i, c in enumerate(categories)}
            x = np.array([position[str(v)] if h else np.nan for v, h in zip(column, has)])
            ax.set_xticks(range(len(categories)), categories, rotation=30 if categories else 0)
            ax.set_xlim(-0.5, len(categories) - 0.5)
        rest, best = has & ~front, has & front
        ax.scatter(x[rest], y[rest], color="C0", alpha=0.7, label="trial")
        ax.scatter(x[best], y[best], color="C3", marker="*", s=120, label="Pareto front")
        ax.set_xlabel(param.removeprefix(PARAM_PREFIX))
        ax.set_ylabel(axis_label(objective))
        ax.grid(True, alpha=0.3)
    for ax in axes[len(params) :]:
        ax.set_visible(False)
    axes[0].legend(fontsize=8, loc="best")
    heading = f"{ctx.heading}: design space ({objective}, {len(d)} finished trials)"
    fig.suptitle(textwrap.fill(heading, 90), fontsize=10)
    return _save(fig, out_dir, "design_space")


def plot_error_edf(results: pd.DataFrame, ctx: ReportContext, out_dir: Path) -> list[Path]:
    """pycls-style error EDF: fraction of finished trials with error (100 - AP%) <= e."""
    d = _with_data(_finished(results), ["AP"])
    if d.empty:
        return []
    errors = np.sort(100.0 - _values(d, "AP"))
    fraction = np.arange(1, len(errors) + 1) / len(errors)
    fig, ax = _figure()
    ax.step(
        np.concatenate([[errors[0]], errors]),
        np.concatenate([[0.0], fraction]),
        where="post",
        color="C0",
        label=f"{ctx.experiment} (n={len(errors)})",
    )
    ax.set_ylim(0.0, 1.02)
    _finish(
        ax,
        f"{ctx.heading}: error EDF",
        "error = 100 - AP (%)",
        "cumulative fraction of trials",
    )
    return _save(fig, out_dir, "error_edf")


def plot_objectives(results: pd.DataFrame, ctx: ReportContext, out_dir: Path) -> list[Path]:
    """The first two objectives against each other, their Pareto front connected.

    With one "min" and one "max" objective the cost goes on x and the quality on y.
    """
    objectives = list(ctx.objectives.items())
    if len(objectives) < 2:
        return []
    (xc, xm), (yc, ym) = objectives[:2]
    if xm == "max" and ym == "min":
        (xc, xm), (yc, ym) = (yc, ym), (xc, xm)
    d = _with_data(_finished(results), [xc, yc])
    if d.empty:
        return []
    front_label = f"Pareto front ({xc}, {yc})"
    # raw parameter counts plot as millions (same front: a positive scale keeps the order)
    xc, yc = ("params_m" if c == "params" else c for c in (xc, yc))
    x, y = _values(d, xc), _values(d, yc)
    fig, ax = _figure()
    ax.scatter(x, y, color="C0", zorder=3, label="trial (finished)")
    _draw_baselines(ax, d, x, y)
    front = _draw_front(ax, x, y, (xm, ym), label=front_label)
    _annotate(ax, x, y, list(d["label"]), front)

    def better(mode: str) -> str:
        return "higher is better" if mode == "max" else "lower is better"

    _finish(
        ax,
        f"{ctx.heading}: {axis_label(yc)} vs {axis_label(xc)}",
        f"{axis_label(xc)}, {better(xm)}",
        f"{axis_label(yc)}, {better(ym)}",
    )
    return _save(fig, out_dir, "objectives")


def plot_params_vs_flops(results: pd.DataFrame, ctx: ReportContext, out_dir: Path) -> list[Path]:
    """GFLOPs against params: ours (labelled) and the paper's rows as hollow markers.

    The one plot a profile-only sweep (no AP) can draw; a dotted line joins each of our rows
    to the paper's numbers for the same row.
    """
    df = _with_data(prepare(results), ["params_m", "gflops"])
    done = finished_mask(df).to_numpy()
    paper = [
        (label, _number(row.get("params_m")), _number(row.get("gflops")))
        for label, row in ctx.paper_rows.items()
    ]
    paper = [p for p in paper if not (math.isnan(p[1]) or math.isnan(p[2]))]
    if df.empty and not paper:
        return []
    x, y = _values(df, "params_m"), _values(df, "gflops")
    fig, ax = _figure()
    if paper:
        _, px, py = zip(*paper)
        ax.scatter(px, py, s=60, facecolors="none", edgecolors="C2", label="paper", zorder=2)
    ours = dict(zip(df["label"], zip(x, y)))
    for label, px, py in paper:
        if label in ours:
            ax.plot([ours[label][0], px], [ours[label][1], py], ":", color="C2", linewidth=0.8)
        else:
            ax.annotate(label, (px, py), textcoords="offset points", xytext=(5, -10), fontsize=8)
    if done.any():
        ax.scatter(x[done], y[done], color="C0", zorder=3, label="ours (finished)")
    if (~done).any():
        ax.scatter(x[~done], y[~done], color="C1", marker="x", zorder=3, label="ours (unfinished)")
    _annotate(ax, x, y, list(df["label"]), np.ones(len(df), dtype=bool))
    x_name, y_name = axis_label("params_m"), axis_label("gflops")
    _finish(ax, f"{ctx.heading}: FLOPs vs params", x_name, y_name)
    return _save(fig, out_dir, "params_vs_flops")


def write_plots(results: pd.DataFrame, ctx: ReportContext, out_dir: str | Path) -> list[Path]:
    """Every plot that applies to this sweep; returns the files written.

    AP plots need finished trials with AP; searches add the design space, the error EDF and,
    with two or more objectives, the objectives plot. When nothing else could be drawn (a
    profile-only sweep), ``params_vs_flops`` is, so a report has a plot whenever it has counts.
    """
    out_dir = Path(out_dir)
    paths = plot_ap_vs_latency(results, ctx, out_dir)
    paths += plot_ap_vs_params(results, ctx, out_dir)
    paths += plot_ap_vs_flops(results, ctx, out_dir)
    if ctx.kind == "search":
        paths += plot_design_space(results, ctx, out_dir)
        paths += plot_error_edf(results, ctx, out_dir)
        paths += plot_objectives(results, ctx, out_dir)
    if not paths:
        paths += plot_params_vs_flops(results, ctx, out_dir)
    return paths
