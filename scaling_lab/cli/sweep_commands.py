"""``lab sweep`` and ``lab report``: one command per ablation table."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scaling_lab.cli.args import add_switch, bounded, check_output_dir, pick
from scaling_lab.limits import MAX_THREADS


def _write_report(experiment, reports: str, formats: str) -> None:
    from scaling_lab.report.sweep_report import parse_formats, write_sweep_report

    for path in write_sweep_report(experiment, reports=reports, formats=parse_formats(formats)):
        print(path)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from scaling_lab.sweep.experiment import load_experiment
    from scaling_lab.sweep.runner import run_sweep

    experiment = load_experiment(args.experiment)
    check_output_dir(args.storage, "storage")
    check_output_dir(args.reports, "reports")
    frame = run_sweep(
        experiment,
        verbose=0 if args.quiet else 1,
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
        _write_report(experiment, args.reports, "md,tex,csv")
        table = Path(args.reports) / experiment.name / "table.md"
        print("\n" + table.read_text())
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from scaling_lab.sweep.experiment import load_experiment

    experiment = load_experiment(args.experiment, check_graphs=False)
    check_output_dir(args.reports, "reports")
    _write_report(experiment, args.reports, args.format)
    return 0


def add_commands(sub) -> None:
    """``lab sweep`` and ``lab report``."""
    sweep = sub.add_parser(
        "sweep", help="run an experiment's trials with Ray Tune (grid or Optuna search)"
    )
    sweep.add_argument("experiment", metavar="EXPERIMENT.yaml", help="experiment spec")
    add_switch(sweep, "--profile-only", "count params / FLOPs (and latency); no training")
    sweep.add_argument(
        "--address", help="a running Ray cluster (default: start Ray embedded on this machine)"
    )
    sweep.add_argument(
        "--storage", default="runs/sweeps", help="trial folders, checkpoints, Optuna study"
    )
    sweep.add_argument("--reports", default="reports", help="results and report folder root")
    add_switch(sweep, "--resume", "finish a killed sweep: finished trials are kept")
    add_switch(sweep, "--retry-failed", "with --resume: rerun failures")
    sweep.add_argument("--budget", help="a named training budget of the experiment (e.g. paper)")
    sweep.add_argument(
        "--num-cpus", type=bounded(1, MAX_THREADS), help="CPUs of the embedded Ray (default: all)"
    )
    add_switch(sweep, "--no-report", "skip writing the report")
    add_switch(sweep, "--quiet", "no Ray Tune progress table")
    sweep.set_defaults(func=_cmd_sweep)

    report = sub.add_parser("report", help="paper-style tables and plots of a sweep's results")
    report.add_argument("experiment", metavar="EXPERIMENT.yaml", help="experiment spec")
    report.add_argument("--format", default="md,tex,csv", help="comma list of md, tex, csv")
    report.add_argument("--reports", default="reports", help="results and report folder root")
    report.set_defaults(func=_cmd_report)
