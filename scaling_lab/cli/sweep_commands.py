"""``lab sweep``, ``lab calibrate`` and ``lab report``: one command per ablation table."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from scaling_lab.cli.args import add_switch, bounded, check_output_dir, pick
from scaling_lab.errors import UserError
from scaling_lab.limits import MAX_SEEDS, MAX_THREADS, MAX_VARIANTS

if TYPE_CHECKING:  # the CLI starts without pandas and the sweep package
    import pandas as pd

    from scaling_lab.sweep.experiment_format import Experiment


def _write_report(experiment, reports: str, formats: str, budget: str | None) -> None:
    from scaling_lab.report.sweep_report import parse_formats, write_sweep_report

    paths = write_sweep_report(
        experiment, reports=reports, formats=parse_formats(formats), budget=budget
    )
    for path in paths:
        print(path)


def _verbosity(args: argparse.Namespace) -> int:
    """0: --quiet (the summary only), 1: trial lines and a live line, 2: --verbose (Ray's
    own status table and log lines too)."""
    if args.quiet and args.verbose:
        raise UserError("--quiet and --verbose contradict each other", field="verbose")
    return 0 if args.quiet else 2 if args.verbose else 1


def _cmd_sweep(args: argparse.Namespace) -> int:
    from scaling_lab.report.stats import summarize
    from scaling_lab.sweep.experiment import load_experiment
    from scaling_lab.sweep.ray_setup import stop_ray_in_background
    from scaling_lab.sweep.runner import default_progress, run_sweep

    verbose = _verbosity(args)
    experiment = load_experiment(args.experiment)
    check_output_dir(args.storage, "storage")
    check_output_dir(args.reports, "reports")
    progress = None
    if verbose:
        progress = default_progress(experiment, args.profile_only, verbose, summarize=summarize)
    frame = run_sweep(
        experiment,
        verbose=verbose,
        progress=progress,
        **pick(
            args,
            "profile_only",
            "address",
            "storage",
            "reports",
            "resume",
            "budget",
            "retry_failed",
            "num_cpus",
        ),
    )
    stopping = stop_ray_in_background()  # no trial is left: Ray stops while we report
    try:
        return _after_sweep(args, experiment, frame, verbose)
    finally:
        if stopping is not None:
            stopping.join()


def _after_sweep(
    args: argparse.Namespace, experiment: Experiment, frame: pd.DataFrame, verbose: int
) -> int:
    """The summary line and the report of a finished sweep; 1 when every trial failed."""
    if not verbose:  # the display printed its summary otherwise
        counts = frame["status"].value_counts().to_dict() if len(frame) else {}
        summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        print(f"{experiment.name}: {len(frame)} trials ({summary or 'none'})")
    print(f"results: {args.reports}/{experiment.name}/results.csv (and .parquet)")
    if len(frame) and (frame["status"] == "failed").all():  # nothing was measured
        errors = [e for e in frame["error"] if isinstance(e, str) and e]
        first = " ".join(errors[0].split())[:300] if errors else "no error recorded"
        sys.stderr.write(
            f"lab sweep: error: all {len(frame)} trials failed (first: {first}); their rows: "
            f"{args.storage}/{experiment.name}/trials/*/row.json\n"
        )
        return 1
    if not args.no_report:
        _write_report(experiment, args.reports, "md,tex,csv", args.budget)
        table = Path(args.reports) / experiment.name / "table.md"
        print("\n" + table.read_text())
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from scaling_lab.sweep.experiment import load_experiment

    experiment = load_experiment(args.experiment, check_graphs=False)
    check_output_dir(args.reports, "reports")
    if args.budget is not None:
        experiment.train_config(args.budget)  # an unknown budget is an error here
    _write_report(experiment, args.reports, args.format, args.budget)
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from scaling_lab.report.calibration import calibration_report, write_calibration
    from scaling_lab.report.stats import summarize
    from scaling_lab.sweep.calibrate import run_calibration
    from scaling_lab.sweep.experiment import load_experiment

    verbose = _verbosity(args)
    experiment = load_experiment(args.experiment)
    check_output_dir(args.storage, "storage")
    check_output_dir(args.reports, "reports")
    if args.proxies and (Path(args.reports) / experiment.name / "calibration.json").is_file():
        return _rescore(experiment, args, verbose)
    calibration = run_calibration(
        experiment,
        designs=args.designs,
        seeds=args.seeds,
        verbose=verbose,
        progress_options={"summarize": summarize},
        **pick(args, "budget", "storage", "reports", "resume", "address", "num_cpus"),
    )
    report = calibration_report(calibration)
    out_dir = Path(args.reports) / experiment.name
    for path in write_calibration(report, calibration.runs, out_dir):
        print(path)
    if args.proxies:
        return _rescore(experiment, args, verbose)
    values = ", ".join(
        f"{name} {'n/a' if report[name] is None else format(report[name], '.2f')}"
        for name in ("icc", "kendall_tau_seeds", "kendall_tau_rung_final")
    )
    verdict = "separates the designs" if report["separates"] else "does not separate the designs"
    print(f"{experiment.name}: {values}: the budget {verdict}")
    return 0


def _rescore(experiment, args: argparse.Namespace, verbose: int) -> int:
    """``--proxies``: the predictors' taus added to the existing calibration, no training."""
    from scaling_lab.report.calibration_proxies import rescore_calibration
    from scaling_lab.report.proxy_stats import above_zero

    reports, table = args.reports, args.latency_table
    for path in rescore_calibration(experiment, reports, progress=verbose >= 1, table=table):
        print(path)
    report = json.loads((Path(reports) / experiment.name / "calibration.json").read_text())
    taus = ", ".join(
        f"{name} {'n/a' if e['kendall_tau'] is None else format(e['kendall_tau'], '+.2f')}"
        for name, e in report["proxies"].items()
    )
    good = above_zero(report["proxies"])
    verdict = (
        f"interval above 0: {', '.join(good)}" if good else "no predictor's interval lies above 0"
    )
    print(f"{experiment.name}: Kendall tau with {report['metric']}: {taus}; {verdict}")
    return 0


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    """Where a sweep runs and writes, and how much it prints (``lab sweep``, ``calibrate``)."""
    parser.add_argument(
        "--address", help="a running Ray cluster (default: start Ray embedded on this machine)"
    )
    parser.add_argument(
        "--storage", default="runs/sweeps", help="trial folders, checkpoints, Optuna study"
    )
    parser.add_argument("--reports", default="reports", help="results and report folder root")
    add_switch(parser, "--resume", "finish a killed sweep: finished trials are kept")
    parser.add_argument("--budget", help="a named training budget of the experiment (e.g. paper)")
    parser.add_argument(
        "--num-cpus", type=bounded(1, MAX_THREADS), help="CPUs of the embedded Ray (default: all)"
    )
    add_switch(parser, "--quiet", "no trial lines or live status: the summary only")
    add_switch(parser, "--verbose", "Ray's own status table, log lines and warnings too")


def add_commands(sub) -> None:
    """``lab sweep``, ``lab calibrate`` and ``lab report``."""
    sweep = sub.add_parser(
        "sweep", help="run an experiment's trials with Ray Tune (grid or Optuna search)"
    )
    sweep.add_argument("experiment", metavar="EXPERIMENT.yaml", help="experiment spec")
    add_switch(sweep, "--profile-only", "count params / FLOPs (and latency); no training")
    _add_run_flags(sweep)
    add_switch(sweep, "--retry-failed", "with --resume: rerun failures")
    add_switch(sweep, "--no-report", "skip writing the report")
    sweep.set_defaults(func=_cmd_sweep)

    calibrate = sub.add_parser(
        "calibrate",
        help="train K designs N times at the budget: does it tell designs apart?",
    )
    calibrate.add_argument("experiment", metavar="EXPERIMENT.yaml", help="experiment spec")
    calibrate.add_argument(
        "--designs",
        type=bounded(2, MAX_VARIANTS),
        help="designs to train: the first K variants (default all), or K drawn from the "
        "search space (default 6)",
    )
    calibrate.add_argument(
        "--seeds", type=bounded(2, MAX_SEEDS), default=3, help="runs per design (default 3)"
    )
    add_switch(
        calibrate,
        "--proxies",
        "Kendall tau of params, FLOPs, predicted latency and training-free proxies with the "
        "trained metric; an existing calibration.json is rescored without training",
    )
    calibrate.add_argument(
        "--latency-table",
        metavar="TABLE.json",
        help="with --proxies: the latency table latency_pred comes from (default: the "
        "experiment's latency.table; none: latency_pred is n/a)",
    )
    _add_run_flags(calibrate)
    calibrate.set_defaults(func=_cmd_calibrate)

    report = sub.add_parser("report", help="paper-style tables and plots of a sweep's results")
    report.add_argument("experiment", metavar="EXPERIMENT.yaml", help="experiment spec")
    report.add_argument("--format", default="md,tex,csv", help="comma list of md, tex, csv")
    report.add_argument("--reports", default="reports", help="results and report folder root")
    report.add_argument(
        "--budget",
        help="the named budget the sweep ran (a search's intervals come from a calibration "
        "of that budget)",
    )
    report.set_defaults(func=_cmd_report)
