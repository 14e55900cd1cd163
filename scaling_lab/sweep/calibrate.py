"""``lab calibrate``: train a few designs several times at an experiment's budget, so that the
report can say whether that budget tells designs apart (``report/calibration.py``).

A table of single runs at a tiny budget ranks designs by seed noise as much as by design. This
trains K designs of the experiment (its first K variants, or K designs drawn from its search
space with a fixed seed, each within the search's profile constraints) N times each, through
the sweep machinery: a derived experiment ``NAME-calibration`` whose rows are the K designs
with ``seeds: N``, run by ``run_sweep`` with early stopping off, so every run reaches the end
of the budget. Each run's metric at the early-stopping rung (the scheduler's metric after its
grace period) comes from the per-epoch history the trial rows keep.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from scaling_lab.eval_protocol import AP_KEYS
from scaling_lab.spec.errors import SpecError
from scaling_lab.sweep.experiment_format import Experiment, Scheduler, Variant, planned_epochs
from scaling_lab.sweep.experiment_graphs import base_graph
from scaling_lab.sweep.materialize import Overrides, materialize
from scaling_lab.sweep.rungs import row_history
from scaling_lab.sweep.trial_keys import params_key, slug

DEFAULT_SEEDS = 3
DEFAULT_SEARCH_DESIGNS = 6
# settings that change no trained weight and no final metric: a calibration holds for a
# search whatever it sets them to (evaluation draws no training randomness: trainer.rng_fork)
NOT_TRAINING = ("eval_every", "eval_epochs", "save_every", "progress", "tensorboard")
MAX_DRAWS_PER_DESIGN = 50  # draws from a search space per design wanted, before giving up


@dataclass(frozen=True)
class Calibration:
    """What ``lab calibrate`` ran and measured: one row per run in ``runs``."""

    experiment: Experiment  # the derived NAME-calibration experiment that ran
    source: str  # the calibrated experiment's name
    metric: str  # the final metric designs are ranked by
    mode: str  # max | min
    rung_metric: str
    rung_epoch: int
    budget: str | None
    epochs: int
    train: dict[str, Any]  # the budget's training settings (a search table matches on them)
    seeds: int
    designs: tuple[Variant, ...]
    runs: pd.DataFrame  # design, seed, status, final, rung, epochs_done
    wall_s: float  # this invocation (a resumed one only finishes what was left)
    run_s: float = 0.0  # the runs' own times, summed (resumed ones included)
    early_stopping: bool = True  # the experiment stops runs at the rung (a scheduler)


def training_settings(experiment: Experiment, budget: str | None) -> dict[str, Any]:
    """The budget's training settings and proxy as plain JSON values: what a calibration is
    valid for (a report uses its noise only for a search trained with exactly these)."""
    settings = {
        key: value
        for key, value in experiment.train_config(budget).items()
        if key not in NOT_TRAINING
    }
    if experiment.proxy is not None and budget is None:  # named budgets train full size
        settings["proxy"] = experiment.proxy.describe()
    return json.loads(json.dumps(settings, sort_keys=True, default=str))


def ranking_metric(experiment: Experiment) -> tuple[str, str]:
    """The metric designs are ranked by: the search's first AP objective, the scheduler's
    metric, or AP."""
    search = experiment.search
    if search is not None:
        for name, mode in search.objectives.items():
            if name in AP_KEYS:
                return name, mode
    if isinstance(experiment.scheduler, Scheduler):
        return experiment.scheduler.metric, experiment.scheduler.mode
    return "AP", "max"


def rung_of(experiment: Experiment, metric: str) -> tuple[str, int]:
    """The early-stopping rung: the scheduler's metric after its grace period (no scheduler:
    the ranking metric after one epoch)."""
    if isinstance(experiment.scheduler, Scheduler):
        return experiment.scheduler.metric, experiment.scheduler.grace_period
    return metric, 1


def _feasible(experiment: Experiment, changes: Overrides) -> bool:
    """The design keeps the search's constraints on its profile (latency ones are not timed
    here and left to the trial)."""
    from scaling_lab.analyze.profile import profile
    from scaling_lab.models import model_ref

    graph = materialize(base_graph(experiment), changes, source=experiment.path)
    counted = profile(model_ref(graph, form=experiment.form))
    measured = {"params": counted.params, "gmacs": counted.gmacs, "gflops": counted.gflops}
    return all(c.holds(measured[c.metric]) for c in experiment.constraints if c.metric in measured)


def sample_designs(experiment: Experiment, count: int) -> list[Variant]:
    """``count`` distinct feasible designs drawn from the search space (``designs``' seeded
    sample with ``search.seed``: the same designs on every call)."""
    from scaling_lab.sweep.designs import sample_params

    search = experiment.search
    assert search is not None
    designs: dict[str, dict[str, Any]] = {}
    for params in sample_params(search.space, MAX_DRAWS_PER_DESIGN * count, search.seed):
        key = params_key(params)
        if key not in designs and _feasible(experiment, Overrides.from_paths(params)):
            designs[key] = params
            if len(designs) == count:
                break
    if len(designs) < 2:
        raise SpecError(
            f"found {len(designs)} feasible design(s) in {MAX_DRAWS_PER_DESIGN * count} draws "
            "from the search space; calibration compares at least 2",
            source=experiment.path,
            field="search.space",
        )
    return [Variant(label=f"d{i}", overrides=p) for i, p in enumerate(designs.values())]


def calibration_designs(experiment: Experiment, count: int | None) -> list[Variant]:
    """The designs to calibrate: the first ``count`` variants (default all), or ``count``
    sampled designs (default ``DEFAULT_SEARCH_DESIGNS``)."""
    if count is not None and count < 2:
        raise SpecError(f"--designs must be at least 2, got {count}", field="designs")
    if experiment.search is not None:
        return sample_designs(experiment, count or DEFAULT_SEARCH_DESIGNS)
    variants = list(experiment.variants)
    if len(variants) < 2:
        raise SpecError(
            "calibration compares at least 2 designs; the experiment has 1 variant",
            source=experiment.path,
            field="variants",
        )
    return variants[: count or len(variants)]


def calibration_experiment(
    experiment: Experiment, designs: list[Variant], seeds: int
) -> Experiment:
    """The derived experiment that runs: the designs as rows, repeated, nothing stopped, and
    the rung's epoch evaluated under every budget (its scheduler, which would ask for it, is
    off)."""
    if seeds < 2:
        raise SpecError(f"--seeds must be at least 2 to measure noise, got {seeds}", field="seeds")
    _, rung_epoch = rung_of(experiment, ranking_metric(experiment)[0])
    rows = tuple(
        dataclasses.replace(v, order=i, key=v.key or f"{i:02d}-{slug(v.label)}")
        for i, v in enumerate(designs)
    )
    return dataclasses.replace(
        experiment,
        name=f"{experiment.name}-calibration",
        variants=rows,
        train=_evaluating(experiment.train, rung_epoch),
        budgets={name: _evaluating(b, rung_epoch) for name, b in experiment.budgets.items()},
        search=None,
        seeds=seeds,
        scheduler=None,  # every run reaches the end of the budget
        time_budget_s=None,
        constraints=(),
        paper_table=None,
        baseline=rows[0].label,
        against=rows[-1].label,
    )


def _evaluating(settings: dict[str, Any], epoch: int) -> dict[str, Any]:
    return {**settings, "eval_epochs": sorted({*settings.get("eval_epochs", ()), epoch})}


def _rung_value(row: dict[str, Any], metric: str, epoch: int) -> float:
    values = row_history(row).get(metric) or []
    value = values[epoch - 1] if len(values) >= epoch else None
    return float(value) if value is not None else math.nan


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan


def run_table(rows: list[dict[str, Any]], metric: str, rung: tuple[str, int]) -> pd.DataFrame:
    """One line per run: design label, seed, status, final metric, rung metric, epochs."""
    lines = []
    for row in rows:
        finished = row.get("status") == "finished"
        seed = _number(row.get("seed"))
        lines.append(
            {
                "design": row.get("label"),
                "seed": int(seed) if math.isfinite(seed) else None,
                "status": row.get("status"),
                "final": _number(row.get(metric)) if finished else math.nan,
                "rung": _rung_value(row, *rung) if finished else math.nan,
                "epochs_done": row.get("epochs_done"),
            }
        )
    return pd.DataFrame(lines, columns=["design", "seed", "status", "final", "rung", "epochs_done"])


def run_calibration(
    experiment: Experiment,
    *,
    designs: int | None = None,
    seeds: int = DEFAULT_SEEDS,
    budget: str | None = None,
    storage: str | Path = "runs/sweeps",
    reports: str | Path = "reports",
    verbose: int = 1,
    progress_options: dict[str, Any] | None = None,
    **sweep_options: Any,
) -> Calibration:
    """Train the designs ``seeds`` times each (``sweep_options`` go to ``run_sweep``: resume,
    address, num_cpus; ``progress_options`` to its display, e.g. ``summarize``)."""
    from scaling_lab.sweep.latency_auto import resolve_auto_table
    from scaling_lab.sweep.runner import default_progress, run_sweep

    # the designs are drawn within the search's constraints, a latency budget among them
    experiment = resolve_auto_table(experiment, progress=verbose >= 1 or None)
    if not experiment.wants("AP"):
        raise SpecError(
            "calibration trains: the experiment collects no AP metric (add AP to 'metrics')",
            source=experiment.path,
            field="metrics",
        )
    experiment.check_runnable(False, budget, local=not sweep_options.get("address"))
    metric, mode = ranking_metric(experiment)
    rung = rung_of(experiment, metric)
    chosen = calibration_designs(experiment, designs)
    derived = calibration_experiment(experiment, chosen, seeds)
    progress = None
    if verbose >= 1:
        options = {"metric": metric, "mode": mode, **(progress_options or {})}
        progress = default_progress(derived, False, verbose, **options)
    started = time.monotonic()
    frame = run_sweep(
        derived,
        budget=budget,
        storage=storage,
        reports=reports,
        verbose=verbose,
        progress=progress,
        **sweep_options,
    )
    return Calibration(
        experiment=derived,
        source=experiment.name,
        metric=metric,
        mode=mode,
        rung_metric=rung[0],
        rung_epoch=rung[1],
        early_stopping=isinstance(experiment.scheduler, Scheduler),
        budget=budget,
        epochs=planned_epochs(experiment.train_config(budget)),
        train=training_settings(experiment, budget),
        seeds=seeds,
        designs=derived.variants,
        runs=run_table(frame.to_dict("records"), metric, rung),
        wall_s=round(time.monotonic() - started, 1),
        run_s=round(float(pd.to_numeric(frame["wall_s"], errors="coerce").sum()), 1)
        if "wall_s" in frame
        else 0.0,
    )
