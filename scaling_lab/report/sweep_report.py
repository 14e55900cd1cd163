"""``write_sweep_report``: an experiment's results -> paper-style tables and plots."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd

from scaling_lab.atomic import atomic_write_text
from scaling_lab.report.confirm import (
    ConfirmSetup,
    confirm_markdown,
    cost_column,
    summarize_confirm,
)
from scaling_lab.report.stats import SeedNoise
from scaling_lab.report.sweep_table import ReportContext, prepare
from scaling_lab.report.sweep_table_render import FORMATS, write_report
from scaling_lab.sweep.experiment_format import Experiment
from scaling_lab.sweep.paper_figures import paper_peers, paper_rows
from scaling_lab.sweep.store import read_results


def report_context(experiment: Experiment) -> ReportContext:
    """What the tables and plots need to know about the experiment besides its results."""
    labels = tuple(v.label for v in experiment.variants)
    rows: dict[str, dict[str, float]] = {}
    if experiment.paper_table is not None:
        reference = paper_rows(experiment.paper_table)
        for variant in experiment.variants:
            wanted = variant.paper_row or variant.label
            if wanted in reference:
                rows[variant.label] = reference[wanted]
    title = experiment.description or experiment.name
    if experiment.paper_table is not None:
        title = f"Table {experiment.paper_table}: {title}"
    return ReportContext(
        experiment=experiment.name,
        title=title,
        kind=experiment.kind,
        labels=labels,
        baseline=experiment.baseline,
        against=experiment.against,
        paper_rows=rows,
        paper_peers=paper_peers(),
        objectives=dict(experiment.search.objectives) if experiment.search else {},
        note=experiment.note,
    )


def parse_formats(text: str) -> tuple[str, ...]:
    formats = tuple(part.strip() for part in text.split(",") if part.strip())
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        from scaling_lab.spec.errors import SpecError

        raise SpecError(
            f"unknown format(s) {', '.join(bad) or '(none)'} (known: {', '.join(FORMATS)})",
            field="format",
        )
    return formats


def write_sweep_report(
    experiment: Experiment,
    *,
    reports: str | Path = "reports",
    formats: tuple[str, ...] = FORMATS,
    results: pd.DataFrame | None = None,
    budget: str | None = None,
) -> list[Path]:
    """Tables (``table.md/.tex/.csv``) and plots (PNG + SVG) in ``reports/EXPERIMENT/``."""
    out_dir = Path(reports) / experiment.name
    frame = read_results(out_dir) if results is None else results
    context = report_context(experiment)
    notes = (
        _size_note(frame),
        _proxy_note(frame),
        _machine_note(frame),
        _screen_note(out_dir),
        calibration_note(experiment, out_dir / "calibration.json", budget),
    )
    extra = [note for note in notes if note]
    if extra:
        context = dataclasses.replace(context, note=" ".join([context.note, *extra]).strip())
    written = []
    if experiment.kind == "search":
        noise = calibrated_noise(experiment, out_dir / "calibration.json", budget)
        context = dataclasses.replace(context, noise=noise)
        summary = confirm_summary(experiment, frame)
        if summary is not None:
            text = json.dumps(summary, indent=1) + "\n"
            written.append(atomic_write_text(out_dir / "confirm.json", text))
            context = dataclasses.replace(context, headline=confirm_markdown(summary))
        if "phase" in frame:  # the search's table: its trials and baselines
            frame = frame[~frame["phase"].eq("confirm")].reset_index(drop=True)
    return written + write_report(frame, context, out_dir, formats=formats)


def confirm_summary(experiment: Experiment, frame: pd.DataFrame) -> dict | None:
    """A search's confirm-phase statistics (``report/confirm.py``), or None without one."""
    from scaling_lab.sweep.confirm import model_label, ranked_by

    if experiment.search is None:
        return None
    metric = ranked_by(experiment)
    setup = ConfirmSetup(
        metric=metric,
        mode=experiment.search.objectives.get(metric, "max"),
        cost=cost_column(frame),
        baselines=tuple(model_label(m) for m in experiment.search_baselines),
    )
    return summarize_confirm(prepare(frame), setup)


def calibrated_noise(
    experiment: Experiment, path: Path, budget: str | None = None
) -> SeedNoise | None:
    """The single-run seed noise ``lab calibrate`` measured for exactly this budget (same
    training settings and proxy), or None: a calibration of other settings says nothing."""
    from scaling_lab.sweep.calibrate import ranking_metric

    report = matching_calibration(experiment, path, budget)
    metric, _ = ranking_metric(experiment)
    if report is None or report.get("metric") != metric:
        return None
    std, df = report.get("pooled_std"), report.get("pooled_df")
    designs, seeds = report.get("designs"), report.get("seeds")
    counts = (df, designs, seeds)
    if not isinstance(std, int | float) or not all(isinstance(n, int) for n in counts):
        return None  # a damaged file says nothing either
    if df < 1:
        return None
    shared_std, shared_df = report.get("interaction_std"), report.get("interaction_df")
    shared = isinstance(shared_std, int | float) and isinstance(shared_df, int) and shared_df >= 1
    return SeedNoise(
        metric=metric,
        std=float(std),
        df=df,
        designs=designs,
        seeds=seeds,
        shared_seed_std=float(shared_std) if shared else None,
        shared_seed_df=shared_df if shared else 0,
    )


def _proxy_note(frame: pd.DataFrame) -> str:
    """Say so when AP comes from scaled-down proxies of the rows' models (``proxy:``)."""
    if "proxy" not in frame:
        return ""
    factors = sorted({text for text in frame["proxy"].dropna() if isinstance(text, str)})
    if not factors:
        return ""
    described = "; ".join(
        ", ".join(
            f"{name} {value:g}" for name, value in sorted(json.loads(text).items()) if value != 1
        )
        or "1 (unscaled)"
        for text in factors
    )
    return (
        f"AP: proxy models, each row's model scaled by {described} (transforms.scale, depth "
        "then width) and trained in its place; #Param. and FLOPs: the full-size models."
    )


def matching_calibration(
    experiment: Experiment, path: Path, budget: str | None = None
) -> dict | None:
    """``calibration.json`` at ``path`` if ``lab calibrate`` measured it at exactly this
    budget (same training settings and proxy), else None (none, damaged, or other settings)."""
    from scaling_lab.sweep.calibrate import training_settings

    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(report, dict) or report.get("train") != training_settings(experiment, budget):
        return None
    return report


def calibration_note(experiment: Experiment, path: Path, budget: str | None = None) -> str:
    """What ``lab calibrate`` found at exactly this budget: does it tell the rows apart
    beyond seed noise? Empty without such a calibration."""
    report = matching_calibration(experiment, path, budget)
    if report is None:
        return ""
    try:
        icc, (low, high) = float(report["icc"]), (float(v) for v in report["icc_ci95"])
        tau, separates = float(report["kendall_tau_seeds"]), bool(report["separates"])
        unit = "designs" if experiment.kind == "search" else "rows"
        shape = f"{int(report['designs'])} {unit} x {int(report['seeds'])} seeds"
    except (ValueError, TypeError, KeyError):
        return ""  # a damaged one says nothing
    verdict = f"tells the {unit} apart" if separates else f"does not tell the {unit} apart reliably"
    return (
        f"Calibrated (lab calibrate, {shape}, calibration.md): this budget {verdict}; share of "
        f"variance between {unit} (ICC) {icc:.2f} [{low:.2f}, {high:.2f}], "
        f"ranking agreement between seeds (Kendall tau) {tau:.2f}."
    )


def _screen_note(out_dir: Path) -> str:
    """What a search's screen chose and why (``screen.json``, written by the sweep)."""
    try:
        note = json.loads((out_dir / "screen.json").read_text()).get("note")
    except (OSError, ValueError, AttributeError):
        return ""
    return note if isinstance(note, str) else ""


def _machine_note(frame: pd.DataFrame) -> str:
    """The machines the runs trained on: a table is bit-identical only on the same one."""
    if "machine" not in frame:
        return ""
    machines = sorted({m for m in frame["machine"].dropna() if isinstance(m, str)})
    if not machines:
        return ""
    return "Trained on " + "; ".join(machines) + "."


def _size_note(frame: pd.DataFrame) -> str:
    """Say so when AP was measured at another size than params / FLOPs were counted at."""
    if "train_img_size" not in frame or frame["train_img_size"].isna().all():
        return ""
    counted = sorted({int(v) for v in frame["img_size"].dropna()})
    trained = sorted({int(v) for v in frame["train_img_size"].dropna()})
    if counted == trained:
        return ""
    counted_px, trained_px = ("/".join(map(str, v)) + " px" for v in (counted, trained))
    return (
        f"Size, #Param. and FLOPs: the model at {counted_px}; "
        f"AP: trained and evaluated at {trained_px}."
    )
