"""A search's baselines and confirm phase: which extra runs train, under which keys and seeds.

A search trains each design once with the search's seed S and picks its best by those single
runs, so the best one's value is biased upward (the winner's curse), and without the model
the search started from nothing says whether any design beats it. So:

- every baseline (``baselines:``, default the base) is trained once more beside the designs,
  with seed S, at the same budget and data, to the end of the budget (no rung stop);
- with ``confirm: {top: K, seeds: N}``, after the search the K best designs (the Pareto front
  of the objectives over the finished trials ranked by the first objective, then the other
  finished trials by it) and every baseline are trained again with the seeds S+1 .. S+N,
  which the search never used. ``report/confirm.py`` states the paired differences.

The runs are Ray configs with an ``extra`` entry (``trial_keys.EXTRA``) that the trial reads:
their keys are ``base-MODEL-seedS`` and ``DESIGNKEY-seedS``, so a resumed sweep skips the ones
already done like any trial.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from scaling_lab.eval_protocol import AP_KEYS
from scaling_lab.sweep.experiment_format import Experiment
from scaling_lab.sweep.pareto import pareto_mask
from scaling_lab.sweep.trial_keys import EXTRA, slug
from scaling_lab.train.config import train_default


def model_label(model: str) -> str:
    """A baseline's name in tables: a zoo name, or a spec file's stem."""
    return Path(model).stem if model.endswith((".yaml", ".yml")) else model


def search_seed(settings: dict[str, Any]) -> int:
    """The seed every search trial trains with (the settings' own, else TrainConfig's)."""
    return int(settings.get("seed", train_default("seed")))


def confirm_seeds(settings: dict[str, Any], count: int) -> list[int]:
    """``count`` seeds the search never trained with: S+1 .. S+count."""
    first = search_seed(settings) + 1
    return list(range(first, first + count))


def _run(key: str, label: str, order: int, seed: int, phase: str, **what: Any) -> dict[str, Any]:
    entry = {"key": key, "label": label, "order": order, "seed": seed, "phase": phase}
    entry.update({"model": None, "params": {}, "baseline": False, "design_key": None, **what})
    return {EXTRA: entry}


def baseline_runs(
    experiment: Experiment, seeds: list[int], phase: str, first_order: int = 0
) -> list[dict[str, Any]]:
    """Each baseline once per seed: Ray configs of the trials that train it."""
    runs = []
    for model in experiment.search_baselines:
        label = model_label(model)
        for seed in seeds:
            key = f"base-{slug(label)}-seed{seed}"
            order = first_order + len(runs)
            runs.append(_run(key, label, order, seed, phase, model=model, baseline=True))
    return runs


def design_runs(
    designs: list[tuple[str, dict[str, Any]]], seeds: list[int], first_order: int = 0
) -> list[dict[str, Any]]:
    """Each (search key, sampled values) design once per confirm seed."""
    runs = []
    for design_key, params in designs:
        for seed in seeds:
            order = first_order + len(runs)
            runs.append(
                _run(
                    f"{design_key}-seed{seed}",
                    "",
                    order,
                    seed,
                    "confirm",
                    params=dict(params),
                    design_key=design_key,
                )
            )
    return runs


def _value(row: dict[str, Any], column: str) -> float:
    try:
        value = float(row.get(column))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return value if math.isfinite(value) else math.nan


def best_designs(
    rows: list[dict[str, Any]], objectives: dict[str, str], top: int
) -> list[tuple[str, dict[str, Any]]]:
    """The ``top`` designs to confirm among a search's finished trials (not baselines): the
    Pareto front ranked by the first objective, then the rest ranked by it; ties by key."""
    trials = [
        r
        for r in rows
        if r.get("phase", "search") == "search"
        and not r.get("baseline")
        and r.get("status") == "finished"
        and r.get("config")
    ]
    if not trials:
        return []
    names = list(objectives)
    values = np.array([[_value(r, c) for c in names] for r in trials], dtype=float)
    front = pareto_mask(values, [objectives[c] for c in names])
    sign = 1.0 if objectives[names[0]] == "max" else -1.0

    def rank(i: int) -> tuple[bool, float, str]:
        score = sign * values[i, 0]
        return (not front[i], -score if math.isfinite(score) else math.inf, trials[i]["key"])

    chosen = sorted(range(len(trials)), key=rank)[:top]
    return [(trials[i]["key"], json.loads(trials[i]["config"])) for i in chosen]


def extra_runs_planned(experiment: Experiment) -> int:
    """How many baseline and confirm runs a search adds to its trials (for progress)."""
    baselines = len(experiment.search_baselines)
    confirm = experiment.confirm
    if confirm is None:
        return baselines
    return baselines * (1 + confirm.seeds) + confirm.top * confirm.seeds


def ranked_by(experiment: Experiment) -> str:
    """The first AP objective of the search: what the confirm phase compares."""
    assert experiment.search is not None
    return next((c for c in experiment.search.objectives if c in AP_KEYS), "AP")
