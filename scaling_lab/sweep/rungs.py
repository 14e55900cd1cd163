"""Early stopping of a batch-synchronous search: ASHA's rung rule, judged against earlier batches.

Ray's ASHA compares a trial at a rung with the trials that reached that rung before it, so
which of two concurrent trials is stopped depends on which one finished its epoch first. A
search that must propose and train the same designs on every run (``search.py``) judges a
trial only against the trials of earlier batches: at each rung (``grace_period`` x
``reduction_factor``^k epochs, below ``max_t``) a trial continues when its metric reaches the
(1 - 1/reduction_factor) quantile of theirs (the median for 2), as in ASHA, and the first
batch is never stopped. The rule needs nothing but the metric per epoch, so the records come
from the trial rows' ``history`` and the verdict does not depend on timing.

A pipelined search (``pipeline.py``) asks batch b while batch b-1 still trains, so a trial
of batch b is judged against the batches up to b-2 only (``upto``): the ones told before it was
proposed, whatever else has finished meanwhile.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def rung_epochs(grace_period: int, reduction_factor: int, max_t: int) -> list[int]:
    """The epochs where a trial is judged: ``grace_period`` x ``reduction_factor``^k below
    ``max_t`` (Ray's ASHA places its rungs there too)."""
    out, t = [], grace_period
    while t < max_t:
        out.append(t)
        t *= reduction_factor
    return out


@dataclass
class RungRule:
    """The stop rule; ``records``: milestone -> the metric of earlier batches' trials there."""

    metric: str
    mode: str  # max | min
    grace_period: int
    reduction_factor: int
    max_t: int
    records: dict[int, list[float]] = field(default_factory=dict)
    judged: dict[str, set[int]] = field(default_factory=dict)  # trial -> milestones passed
    recorded: set[str] = field(default_factory=set)  # designs in the records (once each)
    by_batch: dict[int, dict[int, list[float]]] = field(default_factory=dict)  # batch -> records

    @property
    def milestones(self) -> list[int]:
        return rung_epochs(self.grace_period, self.reduction_factor, self.max_t)

    def cutoff(self, milestone: int, upto: int | None = None) -> float | None:
        """The quantile of the records at ``milestone`` (of batches up to ``upto`` only)."""
        if upto is None:
            values = self.records.get(milestone) or []
        else:
            values = [
                v
                for batch, records in sorted(self.by_batch.items())
                if batch <= upto
                for v in records.get(milestone, [])
            ]
        if not values:
            return None
        return float(np.percentile(values, (1 - 1 / self.reduction_factor) * 100))

    def stops(self, trial: str, epoch: int, value: float, upto: int | None = None) -> bool:
        """Whether ``trial``, at ``epoch`` (1-based) with ``value``, stops here: judged once
        per milestone, at its first result at or past it, against the records of batches up
        to ``upto`` (None: all)."""
        done = self.judged.setdefault(trial, set())
        due = [m for m in self.milestones if m <= epoch and m not in done]
        if not due or not math.isfinite(value):
            return False
        milestone = max(due)
        done.update(due)
        cutoff = self.cutoff(milestone, upto)
        if cutoff is None:
            return False
        return value < cutoff if self.mode == "max" else value > cutoff

    def record(self, key: str, history: dict[str, list[float | None]], batch: int = 0) -> None:
        """Add a trained design's per-epoch metric (its row's ``history``) to the records, once
        (a design proposed again adds nothing): its value at each milestone, taken at the first
        evaluated epoch at or past it."""
        if key in self.recorded:
            return
        self.recorded.add(key)
        values = history.get(self.metric) or []
        for milestone in self.milestones:
            later = [v for v in values[milestone - 1 :] if v is not None]
            if later:
                self.records.setdefault(milestone, []).append(float(later[0]))
                mine = self.by_batch.setdefault(batch, {})
                mine.setdefault(milestone, []).append(float(later[0]))


def row_history(row: dict[str, Any]) -> dict[str, list[float | None]]:
    """A trial row's per-epoch metrics (``{}`` when it trained nothing)."""
    text = row.get("history")
    return json.loads(text) if isinstance(text, str) and text else {}


def rung_scheduler(rule: RungRule, lag: int = 1) -> Any:
    """A Ray Tune scheduler applying ``rule`` to each per-epoch result (by ``epochs_done``, so
    a trial resumed from its checkpoint is judged at its true epoch); a trial of batch b
    faces the records of batches up to b - ``lag``."""
    from ray.tune.schedulers import FIFOScheduler, TrialScheduler

    class _RungScheduler(FIFOScheduler):
        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
            epoch, value = result.get("epochs_done"), result.get(rule.metric)
            if epoch is None or value is None:
                return TrialScheduler.CONTINUE
            design = (getattr(trial, "config", None) or {}).get("design")
            if design is None:  # a baseline or confirm run trains to the end
                return TrialScheduler.CONTINUE
            batch = design.get("batch")
            upto = None if batch is None else int(batch) - lag
            stop = rule.stops(trial.trial_id, int(epoch), float(value), upto)
            return TrialScheduler.STOP if stop else TrialScheduler.CONTINUE

        def debug_string(self) -> str:
            return f"rungs {rule.milestones} on {rule.metric} (batches up to b - {lag})"

    return _RungScheduler()
