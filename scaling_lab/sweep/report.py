"""``write_sweep_report``: an experiment's results -> paper-style tables and plots."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from scaling_lab.report.sweep_table import ReportContext, write_report
from scaling_lab.sweep.experiment import Experiment
from scaling_lab.sweep.reference import paper_peers, paper_rows
from scaling_lab.sweep.store import read_results

FORMATS = ("md", "tex", "csv")


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
) -> list[Path]:
    """Tables (``table.md/.tex/.csv``) and plots (PNG + SVG) in ``reports/EXPERIMENT/``."""
    out_dir = Path(reports) / experiment.name
    frame = read_results(out_dir) if results is None else results
    return write_report(frame, report_context(experiment), out_dir, formats=formats)
