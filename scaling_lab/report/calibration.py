"""Whether a training budget tells designs apart: the statistics and files of ``lab calibrate``.

Three numbers, from K designs trained N times each at the budget:

- ``icc``: the one-way random-effects intraclass correlation ICC(1) of the final metric,
  (MSB - MSW) / (MSB + (k0 - 1) MSW) from the one-way ANOVA mean squares between and within
  designs (k0: the runs per design, adjusted for unequal counts). The share of the metric's
  variance that lies between designs: near 1, designs differ far more than seeds do; near 0
  (or below), the ranking is seed noise.
- ``kendall_tau_seeds``: Kendall's tau-b between the design rankings of two seed replicates
  (the designs' values at seed s against those at seed t), averaged over all pairs of seeds:
  would a second run of the table order the designs the same way?
- ``kendall_tau_rung_final``: Kendall's tau-b between the metric at the early-stopping rung
  and the final metric over all runs (each run as the scheduler sees it: one seed's rung value
  against where that run ended); ``kendall_tau_rung_final_means`` gives the same over the
  designs' means. High: stopping at the rung keeps the designs that would end best.

The budget separates designs when ``icc >= 0.8``, ``kendall_tau_seeds >= 0.7`` and
``kendall_tau_rung_final >= 0.6`` (the thresholds of issue #13); the rung criterion only where
the experiment stops runs early (a table without a scheduler trains every run to the end, and
its rung, epoch 1, decides nothing: it is reported, not checked). Nothing here imports torch.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from scaling_lab.atomic import atomic_write_text
from scaling_lab.eval_protocol import AP_KEYS
from scaling_lab.report.stats import interaction_std, pooled_std, summarize

if TYPE_CHECKING:
    from scaling_lab.sweep.calibrate import Calibration

THRESHOLDS = {"icc": 0.8, "kendall_tau_seeds": 0.7, "kendall_tau_rung_final": 0.6}


def _finite(values: Sequence[float]) -> np.ndarray:
    array = np.asarray([float(v) for v in values], dtype=float)
    return array[np.isfinite(array)]


def _one_way(groups: Sequence[Sequence[float]]) -> tuple[float, float, float, int, int] | None:
    """The one-way ANOVA of the groups' finite values: (MSB, MSW, k0, df between, df within);
    None with fewer than 2 groups or no repeat. k0 = (N - sum n_i^2 / N) / (a - 1) is the
    runs per group, adjusted for unequal counts."""
    clean = [g for g in (_finite(g) for g in groups) if len(g)]
    a = len(clean)
    n = np.array([len(g) for g in clean], dtype=float)
    total = n.sum()
    if a < 2 or total - a < 1:
        return None
    grand = np.concatenate(clean).mean()
    means = np.array([g.mean() for g in clean])
    msb = float((n * (means - grand) ** 2).sum() / (a - 1))
    msw = float(sum(((g - g.mean()) ** 2).sum() for g in clean) / (total - a))
    k0 = float((total - (n**2).sum() / total) / (a - 1))
    return msb, msw, k0, a - 1, int(total) - a


def icc1(groups: Sequence[Sequence[float]]) -> float:
    """ICC(1) of repeated measurements per group (NaN: fewer than 2 groups with values, no
    repeat, or no variance at all)."""
    anova = _one_way(groups)
    if anova is None:
        return math.nan
    msb, msw, k0, _, _ = anova
    denominator = msb + (k0 - 1) * msw
    return (msb - msw) / denominator if denominator > 0 else math.nan


def icc1_ci(groups: Sequence[Sequence[float]], level: float = 0.95) -> tuple[float, float]:
    """The exact confidence interval of ICC(1) under the one-way random-effects model (McGraw
    & Wong 1996, case 1): with F = MSB / MSW, F / F_q(df1, df2) and F * F_q(df2, df1) bound
    F / (1 + k0 ICC / (1 - ICC)), each mapped back by (F' - 1) / (F' + k0 - 1). A calibration
    of 5 designs x 3 seeds pins its ICC only loosely; this says how loosely. (NaN, NaN) where
    ICC(1) is undefined or there is no spread within designs."""
    anova = _one_way(groups)
    if anova is None or not anova[1] > 0:
        return math.nan, math.nan
    msb, msw, k0, df1, df2 = anova
    f = msb / msw
    q = 1 - (1 - level) / 2
    low = f / scipy_stats.f.ppf(q, df1, df2)
    high = f * scipy_stats.f.ppf(q, df2, df1)
    return (low - 1) / (low + k0 - 1), (high - 1) / (high + k0 - 1)


def repeats_for_icc(icc: float, target: float) -> int | None:
    """Seeds per design whose mean reaches ICC ``target`` (Spearman-Brown: the mean of n runs
    has ICC n r / (1 + (n - 1) r)): what a search needs in ``seeds:`` to rank designs this
    reliably at this budget. None where no number of seeds does (r <= 0) or r is undefined."""
    if not math.isfinite(icc) or icc <= 0:
        return None
    if icc >= target:
        return 1
    # ceil of t (1 - r) / (r (1 - t)), less a rounding hair so an exact integer stays put
    return math.ceil(target * (1 - icc) / (icc * (1 - target)) - 1e-9)


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b over the pairs where both are finite (NaN: under 2 pairs, or a side
    constant)."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 2:
        return math.nan
    statistic = scipy_stats.kendalltau(a[keep], b[keep]).statistic
    return float(statistic) if np.isfinite(statistic) else math.nan


def mean_seed_tau(table: pd.DataFrame) -> float:
    """Mean Kendall tau between the columns (seeds) of a designs x seeds table, over every
    pair of seeds that ranks at least two designs."""
    taus = [
        kendall_tau(table[s].to_numpy(float), table[t].to_numpy(float))
        for s, t in itertools.combinations(table.columns, 2)
    ]
    taus = [t for t in taus if math.isfinite(t)]
    return float(np.mean(taus)) if taus else math.nan


def _per_design(runs: pd.DataFrame, designs: Sequence[Mapping[str, Any]]) -> list[dict]:
    out = []
    for design in designs:
        mine = runs[runs["design"] == design["label"]]
        final = summarize(mine["final"].tolist())
        rung = summarize(mine["rung"].tolist())
        values = {
            str(int(s)): (None if not math.isfinite(v) else v)
            for s, v in zip(mine["seed"], mine["final"].astype(float))
            if s is not None and not pd.isna(s)
        }
        out.append(
            {
                **design,
                "n": final.n,
                "mean": _plain(final.mean),
                "std": _plain(final.std),
                "ci95": _plain(final.ci95),
                "rung_mean": _plain(rung.mean),
                "values": values,
            }
        )
    return out


def _plain(value: float) -> float | None:
    return round(float(value), 6) if math.isfinite(value) else None


def calibration_stats(
    runs: pd.DataFrame, designs: Sequence[Mapping[str, Any]], early_stopping: bool = True
) -> dict:
    """The three numbers and the per-design summaries from the runs (design, seed, final,
    rung); ``designs``: label plus what describes each design (its overrides);
    ``early_stopping``: whether the rung criterion is checked (None in ``checks`` if not)."""
    labels = [d["label"] for d in designs]
    groups = [runs.loc[runs["design"] == label, "final"].tolist() for label in labels]
    wide = runs.pivot_table(index="design", columns="seed", values="final", aggfunc="first")
    wide = wide.reindex([label for label in labels if label in wide.index])
    means = runs.groupby("design")[["rung", "final"]].mean()
    stats = {
        "icc": icc1(groups),
        "kendall_tau_seeds": mean_seed_tau(wide),
        "kendall_tau_rung_final": kendall_tau(runs["rung"], runs["final"]),
        "kendall_tau_rung_final_means": kendall_tau(means["rung"], means["final"]),
    }
    checks: dict[str, bool | None] = {
        name: bool(stats[name] >= low) for name, low in THRESHOLDS.items()
    }
    if not early_stopping:
        checks["kendall_tau_rung_final"] = None
    icc_low, icc_high = icc1_ci(groups)
    target = THRESHOLDS["icc"]
    std, df = pooled_std(groups)
    shared_std, shared_df = interaction_std(wide.to_numpy(dtype=float))
    return {
        **{name: _plain(value) for name, value in stats.items()},
        "icc_ci95": [_plain(icc_low), _plain(icc_high)],
        # seeds per design for a mean that reaches the ICC threshold; its interval from the
        # ICC's (None: unbounded, where the ICC's lower end is at or below 0)
        "seeds_for_icc": repeats_for_icc(stats["icc"], target),
        "seeds_for_icc_ci95": [
            repeats_for_icc(icc_high, target),
            repeats_for_icc(icc_low, target),
        ],
        "rung_final_over": "runs",
        "thresholds": THRESHOLDS,
        "checks": checks,
        "separates": all(ok for ok in checks.values() if ok is not None),
        "pooled_std": _plain(std),  # one run's seed noise, for the search table's intervals
        "pooled_df": df,
        # what is left of it between two designs trained with the same seed (a search's)
        "interaction_std": _plain(shared_std),
        "interaction_df": shared_df,
        "per_design": _per_design(runs, designs),
        "runs": int(np.isfinite(runs["final"].astype(float)).sum()),
        "failed_runs": int((runs["status"] != "finished").sum()),
    }


def _value(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f}" if metric in AP_KEYS else f"{value:.4g}"


def _verdict(report: dict) -> list[str]:
    """The conclusion in words, one line per criterion."""
    words = {
        "icc": "share of the variance between designs (ICC(1))",
        "kendall_tau_seeds": "agreement of the design ranking between seeds (Kendall tau)",
        "kendall_tau_rung_final": (
            f"agreement of the rung ({report['rung_metric']} after epoch "
            f"{report['rung_epoch']}) with the final ranking (Kendall tau, all runs)"
        ),
    }
    lines = []
    for name, low in THRESHOLDS.items():
        value = report[name]
        shown = "undefined (no spread, or too few runs)" if value is None else f"{value:.2f}"
        low_high = report.get(f"{name}_ci95") or [None, None]
        if value is not None and None not in low_high:
            shown += f" (95% CI {low_high[0]:.2f} to {low_high[1]:.2f})"
        ok = report["checks"][name]
        if ok is None:
            lines.append(f"- {words[name]}: {shown}, not a criterion: no run stops early here")
            continue
        lines.append(f"- {words[name]}: {shown}, {'meets' if ok else 'misses'} the threshold {low}")
    return lines


def _repeats_line(report: dict) -> list[str]:
    """How many seeds per design a ranking on their mean would need (older files lack it)."""
    if "seeds_for_icc" not in report or report["checks"]["icc"]:
        return []
    target = report["thresholds"]["icc"]
    n = report["seeds_for_icc"]
    if n is None:
        return [f"- no number of seeds per design brings the ranking to ICC {target}"]
    low, high = report.get("seeds_for_icc_ci95") or [None, None]
    span = f"{low if low is not None else '?'} to {high if high is not None else 'unbounded'}"
    return [
        f"- ranking on the mean of {n} seeds per design (`seeds: {n}`) would reach ICC "
        f"{target} (Spearman-Brown; from the ICC's 95% CI: {span})"
    ]


def _noise_lines(report: dict) -> list[str]:
    """The seed noise a search table will use (older files may lack the interaction)."""
    metric, std = report["metric"], report.get("pooled_std")
    if std is None:
        return []
    lines = [
        "",
        f"Seed noise of one run: pooled std {_value(metric, std)} points "
        f"({report.get('pooled_df')} df).",
    ]
    shared = report.get("interaction_std")
    if shared is not None:
        lines[-1] += (
            f" Between two designs trained with the same seed (as a search trains them), the "
            f"design x seed interaction std: {_value(metric, shared)} points "
            f"({report.get('interaction_df')} df)."
        )
    return lines


def calibration_markdown(report: dict) -> str:
    from scaling_lab.report.proxy_stats import proxy_markdown

    metric = report["metric"]
    unit = " (%)" if metric in AP_KEYS else ""
    if report["separates"]:
        head = "At this budget the designs are told apart: every criterion is met."
    else:
        head = (
            "At this budget the designs are not reliably told apart: differences between "
            "these designs are within seed noise for at least one criterion below."
        )
    lines = [
        f"# Calibration: {report['experiment']}",
        "",
        f"{report['designs']} designs x {report['seeds']} seeds at budget "
        f"'{report['budget'] or 'default'}' ({report['epochs']} epochs), ranked by {metric}; "
        f"{report['runs']} finished runs, {report['failed_runs']} not finished; "
        f"wall time {report['wall_s']:.0f} s"
        + (
            f" ({report['run_s']:.0f} s of training summed over the runs)."
            if report.get("run_s")
            else "."
        ),
        "",
        head,
        "",
        *_verdict(report),
        *_repeats_line(report),
        *_noise_lines(report),
        "",
        f"| design | changes | n | {metric}{unit} mean | std | "
        f"{report['rung_metric']} at epoch {report['rung_epoch']}{unit} |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for d in report["per_design"]:
        changes = json.dumps(d.get("overrides") or {}, sort_keys=True).replace("|", "\\|")
        lines.append(
            f"| {d['label']} | `{changes}` | {d['n']} | {_value(metric, d['mean'])} | "
            f"{_value(metric, d['std'])} | {_value(report['rung_metric'], d['rung_mean'])} |"
        )
    lines += proxy_markdown(report)
    return "\n".join(lines) + "\n"


def _plot(report: dict, runs: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Per-design mean ± one sample std, every seed's run as a point beside it."""
    from scaling_lab.report.sweep_plots import _figure, _save

    metric = report["metric"]
    scale = 100.0 if metric in AP_KEYS else 1.0
    designs = report["per_design"]
    fig, ax = _figure(max(4.0, 0.9 * len(designs) + 2), 4.0)
    for x, d in enumerate(designs):
        values = runs.loc[runs["design"] == d["label"], "final"].astype(float) * scale
        ax.scatter(np.full(len(values), x + 0.15), values, s=14, color="0.45", zorder=3)
        if d["mean"] is not None:
            std = d["std"] * scale if d["std"] is not None else 0.0
            ax.errorbar(x, d["mean"] * scale, yerr=std, fmt="o", color="C0", capsize=4)
    ax.set_xticks(range(len(designs)), [d["label"] for d in designs], rotation=30, ha="right")
    ax.set_ylabel(f"{metric}{' (%)' if scale != 1 else ''}")
    icc = "n/a" if report["icc"] is None else f"{report['icc']:.2f}"
    ax.set_title(f"{report['experiment']}: mean ± std over seeds (points: runs), ICC {icc}")
    return _save(fig, out_dir, "calibration")


def write_calibration(report: dict, runs: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """``calibration.json``, ``calibration.md`` and ``calibration.png`` (+ svg) in ``out_dir``."""
    out_dir = Path(out_dir)
    paths = [
        atomic_write_text(out_dir / "calibration.json", json.dumps(report, indent=1) + "\n"),
        atomic_write_text(out_dir / "calibration.md", calibration_markdown(report)),
    ]
    return paths + _plot(report, runs, out_dir)


def calibration_report(calibration: Calibration) -> dict:
    """The JSON of a ``sweep.calibrate.Calibration``: what ran, the statistics, per design."""
    designs = [
        {"label": v.label, "key": v.key, "overrides": v.changes.paths()}
        for v in calibration.designs
    ]
    return {
        "experiment": calibration.source,
        "metric": calibration.metric,
        "mode": calibration.mode,
        "rung_metric": calibration.rung_metric,
        "rung_epoch": calibration.rung_epoch,
        "budget": calibration.budget,
        "epochs": calibration.epochs,
        "train": calibration.train,
        "designs": len(designs),
        "seeds": calibration.seeds,
        "wall_s": calibration.wall_s,
        "run_s": calibration.run_s,
        **calibration_stats(calibration.runs, designs, calibration.early_stopping),
    }
