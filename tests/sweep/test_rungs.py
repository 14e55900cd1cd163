"""The rung rule of a search: ASHA's cutoffs, judged against the batches up to b - lag."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from scaling_lab.sweep.calibrate import sample_designs
from scaling_lab.sweep.experiment import load_experiment
from scaling_lab.sweep.experiment_format import Scheduler
from scaling_lab.sweep.rungs import RungRule, row_history
from scaling_lab.sweep.trial import Trial, TrialContext, evaluated_rungs

ROOT = Path(__file__).resolve().parents[2]


def _rule(**kw) -> RungRule:
    settings = {"metric": "AP50", "mode": "max", "grace_period": 2, "reduction_factor": 2}
    return RungRule(**{**settings, "max_t": 10, **kw})


def test_milestones_are_asha_rungs_below_the_budget():
    assert _rule().milestones == [2, 4, 8]
    assert _rule(grace_period=1, reduction_factor=3, max_t=9).milestones == [1, 3]
    assert _rule(grace_period=5, max_t=5).milestones == []


def test_a_trial_evaluates_its_rungs_whatever_the_cadence(tmp_path):
    """The shipped search evaluates only at its rung and the end (``eval_every: 0``); every
    trial's settings name the rung, so ASHA's decision has its metric."""
    experiment = load_experiment(ROOT / "experiments" / "elan_search.yaml")
    assert experiment.train["eval_every"] == 0 and experiment.scheduler.grace_period == 6
    design = dict(sample_designs(experiment, 2)[0].overrides)
    ctx = TrialContext(experiment, str(tmp_path / "runs"), str(tmp_path / "reports"))
    assert Trial(design, ctx).settings["eval_epochs"] == [6]
    quartered = dataclasses.replace(
        experiment, scheduler=Scheduler(metric="AP50", grace_period=2, reduction_factor=3)
    )
    assert evaluated_rungs(quartered, {"epochs": 20, "eval_epochs": [5]}) == [2, 5, 6, 18]
    assert evaluated_rungs(quartered, {"epochs": 2}) == []  # the end is evaluated anyway
    unscheduled = dataclasses.replace(experiment, scheduler=None)
    assert evaluated_rungs(unscheduled, {"epochs": 10, "eval_epochs": [3]}) == [3]


def test_the_first_batch_is_never_stopped_and_later_ones_face_its_median():
    rule = _rule()
    assert not rule.stops("a", 2, 0.0)  # nothing recorded at the rung yet
    for key, values in (("p", [0.1, 0.2, 0.3, 0.4]), ("q", [0.3, 0.5, 0.6, 0.7])):
        rule.record(key, {"AP50": values})  # value at epoch 2 (index 1): 0.2, then 0.5
    rule.record("q", {"AP50": [0.3, 0.5, 0.6, 0.7]})  # proposed again: recorded once
    assert rule.cutoff(2) == pytest.approx(0.35)  # median of 0.2 and 0.5
    assert not rule.stops("b", 1, 0.0)  # before the rung: no verdict
    assert rule.stops("b", 2, 0.3)
    assert not rule.stops("c", 2, 0.4)
    assert not rule.stops("c", 3, 0.0)  # judged once per rung
    assert rule.cutoff(4) == pytest.approx(0.55) and rule.stops("c", 4, 0.5)


def test_min_mode_and_a_skipped_evaluation():
    rule = _rule(metric="AP", mode="min")
    rule.record("p", {"AP": [None, 0.5, None, None, 0.2]})  # rung 4 taken at the next evaluation
    assert rule.records == {2: [0.5], 4: [0.2]}
    assert rule.stops("x", 2, 0.6) and not rule.stops("y", 2, 0.4)
    assert not rule.stops("z", 5, 0.1)  # first result past rung 4 is judged there (0.1 < 0.2)
    assert rule.stops("w", 5, 0.3)


def test_the_verdict_does_not_depend_on_the_order_results_arrive():
    """Two trials of one batch reach the rung in either order: the same verdicts."""
    verdicts = []
    for order in (("a", "b"), ("b", "a")):
        rule = _rule()
        rule.record("p", {"AP50": [0.1, 0.3]})
        values = {"a": 0.2, "b": 0.4}
        verdicts.append({t: rule.stops(t, 2, values[t]) for t in order})
    assert verdicts[0] == verdicts[1] == {"a": True, "b": False}


def test_row_history_reads_the_rows_json():
    assert row_history({"history": json.dumps({"AP": [0.1, None]})}) == {"AP": [0.1, None]}
    assert row_history({"history": None}) == {} and row_history({}) == {}


def test_the_ray_scheduler_applies_the_rule_to_each_result():
    pytest.importorskip("ray")
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    from scaling_lab.sweep.rungs import rung_scheduler

    rule = _rule()
    rule.record("p", {"AP50": [0.1, 0.3]}, batch=0)
    rule.record("q", {"AP50": [0.1, 0.9]}, batch=1)  # batch 2 trials do not see it (lag 2)
    scheduler = rung_scheduler(rule, lag=2)
    trial = SimpleNamespace(trial_id="t1", config={"design": {"batch": 2}})
    assert scheduler.on_trial_result(None, trial, {"epochs_done": 1, "AP50": 0.0}) == "CONTINUE"
    assert scheduler.on_trial_result(None, trial, {"epochs_done": 2}) == "CONTINUE"  # no metric
    keeps = scheduler.on_trial_result(None, trial, {"epochs_done": 2, "AP50": 0.35})
    assert keeps == "CONTINUE"  # above batch 0's 0.3 (the pooled median with q would stop it)
    later = SimpleNamespace(trial_id="t2", config={"design": {"batch": 2}})
    stop = scheduler.on_trial_result(None, later, {"epochs_done": 2, "AP50": 0.2})
    assert stop == TrialScheduler.STOP
    extra = SimpleNamespace(trial_id="t3", config={"extra": {"key": "base-seed0"}})
    assert scheduler.on_trial_result(None, extra, {"epochs_done": 2, "AP50": 0.0}) == "CONTINUE"
