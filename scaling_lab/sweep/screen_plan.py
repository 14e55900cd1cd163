"""How a search uses its screen: only as far as the calibration supports the predictor.

On synthetic data most training-free proxies rank designs no better than chance, so the screen
is trusted only where ``lab calibrate --proxies`` measured, at this very budget, a Kendall tau
between the predictor and the trained metric whose 95% interval excludes 0:

- supported: the search's first generation is seeded with the designs the screen ranks best
  at their cost: the non-dominated layers of (predictor, in its measured direction; the
  search's cost objective), peeled front by front, each front's members spread evenly from
  the cheapest to the dearest;
- not supported (no calibration, another budget, an interval containing 0): the first
  generation is the first designs of the screen that keep the constraints, in the screen's
  (seeded) order: the screen then only removes designs that break a constraint.

Either way the seeds are a pure function of the screen and the calibration: the same search
proposes the same designs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scaling_lab.eval_protocol import AP_KEYS
from scaling_lab.spec.errors import SpecError
from scaling_lab.sweep.columns import PARAM_PREFIX
from scaling_lab.sweep.experiment_format import Experiment
from scaling_lab.sweep.pareto import pareto_mask
from scaling_lab.sweep.screen import PROFILE_PREDICTORS


@dataclass(frozen=True)
class ScreenPlan:
    """The designs that open the search, and what the report says about why."""

    seeds: list[dict[str, Any]]
    supported: bool
    note: str


def predictor_column(by: str, frame: pd.DataFrame, experiment: Experiment) -> str:
    """The screen.csv column of predictor ``by``; a SpecError naming ``screen.by``."""
    column = PROFILE_PREDICTORS.get(by, by)
    if column not in frame.columns or column in ("key", "constraint_ok", "screen_s"):
        known = sorted({*PROFILE_PREDICTORS, *(c for c in frame.columns if c.islower())} - {"key"})
        raise SpecError(
            f"unknown predictor '{by}' (known: {', '.join(k for k in known if k != 'screen_s')})",
            source=experiment.path,
            field="screen.by",
        )
    return column


def calibrated_tau(calibration: Path, by: str, train: dict[str, Any]) -> tuple[float, list]:
    """The predictor's tau and 95% interval in ``calibration.json`` when it calibrated these
    training settings; (NaN, []) otherwise."""
    try:
        report = json.loads(calibration.read_text())
    except (OSError, ValueError):
        return math.nan, []
    if not isinstance(report, dict) or report.get("train") != train:
        return math.nan, []
    entry = (report.get("proxies") or {}).get(by) or {}
    tau, ci = entry.get("kendall_tau"), entry.get("ci95")
    if not isinstance(tau, int | float) or not isinstance(ci, list) or len(ci) != 2:
        return math.nan, []
    return float(tau), [float(ci[0]), float(ci[1])]


def _cost_objective(experiment: Experiment) -> tuple[str, str] | None:
    """The search's first objective that is not an AP: (screen column, mode)."""
    assert experiment.search is not None
    for column, mode in experiment.search.objectives.items():
        if column not in AP_KEYS:
            return column, mode
    return None


def _layers(values: np.ndarray, modes: list[str]) -> list[np.ndarray]:
    """Indices of the non-dominated layers of ``values``, front by front."""
    left = np.arange(len(values))
    out = []
    while len(left):
        front = pareto_mask(values[left], modes)
        if not front.any():  # only rows with NaN are left
            break
        out.append(left[front])
        left = left[~front]
    return out


def _spread(front: np.ndarray, count: int) -> list[int]:
    """``count`` members of a front sorted by cost, evenly spaced from the cheapest to the
    dearest (all of it when it has no more): the first generation spans the trade-off."""
    if len(front) <= count:
        return front.tolist()
    picks = np.unique(np.round(np.linspace(0, len(front) - 1, count)).astype(int))
    return front[picks].tolist()


def plan_screen(
    frame: pd.DataFrame,
    experiment: Experiment,
    count: int,
    calibration: Path,
    train: dict[str, Any],
) -> ScreenPlan:
    """The ``count`` designs that open the search (see the module docstring)."""
    screen = experiment.screen
    assert screen is not None and experiment.search is not None
    column = predictor_column(screen.by, frame, experiment)
    feasible = frame[frame["constraint_ok"].astype(bool)].reset_index(drop=True)
    tau, ci = calibrated_tau(calibration, screen.by, train)
    supported = bool(ci) and (ci[0] > 0 or ci[1] < 0)
    if supported:
        direction = "max" if tau > 0 else "min"
        cost = _cost_objective(experiment)
        names, modes = [column], [direction]
        if cost is not None and cost[0] in feasible.columns and cost[0] != column:
            names.append(cost[0])
            modes.append(cost[1])
        values = feasible[names].to_numpy(dtype=float)
        order: list[int] = []
        for layer in _layers(values, modes):
            need = count - len(order)
            if need <= 0:
                break
            by_cost = layer[np.lexsort((feasible.loc[layer, "key"].to_numpy(), values[layer, -1]))]
            order += _spread(by_cost, need)
        chosen = feasible.loc[order]
        note = (
            f"Screen: {len(frame)} designs scored without training; the first {len(chosen)} "
            f"proposals are the best by {screen.by} at their cost (calibrated Kendall tau "
            f"{tau:.2f} [{ci[0]:.2f}, {ci[1]:.2f}] with the trained metric)."
        )
    else:
        chosen = feasible.head(count)
        why = (
            f"its calibrated Kendall tau {tau:.2f} [{ci[0]:.2f}, {ci[1]:.2f}] includes 0"
            if ci
            else "no calibration of this budget measured it (lab calibrate --proxies)"
        )
        note = (
            f"Screen: {len(frame)} designs scored without training; {screen.by} is not used "
            f"to choose ({why}): the screen only removed the {len(frame) - len(feasible)} "
            "designs that break a constraint."
        )
    params = [c for c in chosen.columns if c.startswith(PARAM_PREFIX)]
    seeds = [
        {c.removeprefix(PARAM_PREFIX): _plain(row[c]) for c in params}
        for _, row in chosen.iterrows()
    ]
    return ScreenPlan(seeds=seeds, supported=supported, note=note)


def _plain(value: Any) -> Any:
    """A pandas cell as the plain Python value the search space holds."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value
