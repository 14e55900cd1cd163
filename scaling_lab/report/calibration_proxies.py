"""``lab calibrate --proxies``: which predictors without training rank the calibration
designs like their trained metric does.

For each design of a calibration (its ``per_design`` list: label, overrides, mean over
seeds) this scores params, FLOPs, predicted latency and every training-free proxy as the
screen does (``sweep/screen.py``), then Kendall's tau of each with the mean metric and its
bootstrap interval (``report/proxy_stats.py``). It needs no training run: a committed
``calibration.json`` is enough, so the figures can be recomputed after the run storage is
gone.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from scaling_lab.atomic import atomic_write_text
from scaling_lab.spec.errors import SpecError
from scaling_lab.sweep.experiment_format import Experiment
from scaling_lab.sweep.screen import PROFILE_PREDICTORS

# predictor name in calibration.json -> the screen's column


def design_predictors(
    experiment: Experiment,
    per_design: list[dict[str, Any]],
    *,
    budget: str | None = None,
    seed: int = 0,
    progress: bool = True,
    table: str | Path | None = None,
) -> list[dict[str, float]]:
    """Every predictor of each design (``per_design`` entries' ``overrides``), in order;
    ``table``: the latency table (default: the experiment's)."""
    from tqdm import tqdm

    from scaling_lab.analyze.proxies import PROXIES
    from scaling_lab.sweep.screen import (
        latency_table,
        score_design,
        screen_batch,
        torch_threads,
    )

    lookup = latency_table(experiment, table)  # a bad table: said before any work
    batch = screen_batch(experiment, budget, seed)
    out = []
    bar = tqdm(per_design, desc="proxies", disable=not progress or None, leave=False)
    with torch_threads(experiment):
        for design in bar:
            changes = design.get("overrides") or {}
            row = score_design(experiment, changes, batch, table=lookup, seed=seed, force=True)
            values = {name: float(row[column]) for name, column in PROFILE_PREDICTORS.items()}
            values.update({name: float(row[name]) for name in PROXIES})
            out.append(values)
    return out


def with_proxies(
    report: dict[str, Any],
    experiment: Experiment,
    *,
    seed: int = 0,
    progress: bool = True,
    table: str | Path | None = None,
) -> dict[str, Any]:
    """``report`` (a calibration.json) with ``proxies`` (each predictor's tau, interval and
    its tau with params: a proxy that only counts parameters adds nothing to them),
    ``proxies_ci`` (how the interval is made) and each design's ``predictors``."""
    from scaling_lab.report.calibration import kendall_tau
    from scaling_lab.report.proxy_stats import CI_METHOD, predictor_taus
    from scaling_lab.sweep.screen import latency_table

    if table is None:  # latency: {table: auto}: this machine's cached table, built if missing
        from scaling_lab.sweep.latency_auto import resolve_auto_table

        experiment = resolve_auto_table(experiment, progress=progress or None)
    designs = list(report.get("per_design") or [])
    if len(designs) < 3:
        raise SpecError(
            f"the calibration has {len(designs)} designs; a rank correlation needs at least 3",
            source=experiment.path,
        )
    values = design_predictors(
        experiment,
        designs,
        budget=report.get("budget"),
        seed=seed,
        progress=progress,
        table=table,
    )
    target = [math.nan if d.get("mean") is None else float(d["mean"]) for d in designs]
    names = list(values[0])
    columns = {name: [v[name] for v in values] for name in names}
    sign = -1.0 if report.get("mode") == "min" else 1.0  # tau with "better", whatever the mode
    proxies = predictor_taus(columns, [sign * t for t in target])
    for name, entry in proxies.items():  # does it add anything to counting parameters?
        entry["tau_with_params"] = _plain(kendall_tau(columns[name], columns["params"]))
    per_design = [
        {**d, "predictors": {k: (round(x, 6) if math.isfinite(x) else None) for k, x in v.items()}}
        for d, v in zip(designs, values)
    ]
    settings = experiment.train_config(report.get("budget"))
    lookup = latency_table(experiment, table)
    return {
        **report,
        "per_design": per_design,
        "proxies": proxies,
        "proxies_ci": CI_METHOD,
        "proxies_batch": (
            f"the first {settings.get('batch_size', 8)} training images at "
            f"{settings.get('img_size')} px, letterboxed, seed {seed}"
        ),
        "proxies_latency_table": None if lookup is None else _table_note(lookup),
    }


def _table_note(table: Any) -> str:
    """Where latency_pred came from: the table's device and protocol (not its path, which is
    machine-local)."""
    p = table.protocol
    return (
        f"{p.get('device_name', p.get('device'))}, {p.get('threads')} threads, {p.get('dtype')}, "
        f"batch {p.get('batch')}, {p.get('layout')}; {len(table.entries)} op entries, deploy "
        "form at the spec's size, as a trial's latency_pred_ms"
    )


def _plain(value: float) -> float | None:
    return round(float(value), 6) if math.isfinite(value) else None


def read_calibration(experiment: Experiment, reports: str | Path) -> dict[str, Any]:
    """The experiment's committed ``calibration.json`` (an error naming the file if it is
    missing, unreadable or another experiment's)."""
    path = Path(reports) / experiment.name / "calibration.json"
    try:
        report = json.loads(path.read_text())
    except FileNotFoundError:
        raise SpecError(
            "no calibration to score: run `lab calibrate` first", source=str(path)
        ) from None
    except (OSError, ValueError) as exc:
        raise SpecError(f"unreadable calibration: {exc}", source=str(path)) from None
    if not isinstance(report, dict) or report.get("experiment") != experiment.name:
        raise SpecError(f"not a calibration of experiment '{experiment.name}'", source=str(path))
    return report


def rescore_calibration(
    experiment: Experiment,
    reports: str | Path = "reports",
    *,
    progress: bool = True,
    table: str | Path | None = None,
) -> list[Path]:
    """Add the predictors to the experiment's existing calibration without training:
    rewrite its ``calibration.json`` and ``calibration.md`` (the plot is left as it is)."""
    from scaling_lab.report.calibration import calibration_markdown

    report = with_proxies(
        read_calibration(experiment, reports), experiment, progress=progress, table=table
    )
    out_dir = Path(reports) / experiment.name
    return [
        atomic_write_text(out_dir / "calibration.json", json.dumps(report, indent=1) + "\n"),
        atomic_write_text(out_dir / "calibration.md", calibration_markdown(report)),
    ]
