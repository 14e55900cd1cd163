"""How a search uses its screen (issue #27): the predictor chooses the first generation only
where the calibration's interval excludes 0; otherwise the screen only removes designs that
break a constraint. And the auto latency table: built once per machine fingerprint, cached
outside the repository."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest

from scaling_lab.errors import UserError
from scaling_lab.sweep import latency_auto
from scaling_lab.sweep.experiment import load_experiment
from scaling_lab.sweep.experiment_format import Screen
from scaling_lab.sweep.screen_plan import plan_screen

SEARCH = """\
base: yolov7-tiny
metrics: [params, gflops, latency_pred, AP]
latency: {table: auto}
search:
  space:
    elan1.depth: {type: int, low: 1, high: 4}
  trials: 4
  objectives: {AP50: max, latency_pred: min}
screen: {designs: 5, by: flops}
train: {data: synth, epochs: 1}
"""
TRAIN = {"data": "synth", "epochs": 1}


@pytest.fixture()
def experiment(tmp_path):
    path = tmp_path / "search.yaml"
    path.write_text(SEARCH)
    return load_experiment(path, check_graphs=False)


def _screen() -> pd.DataFrame:
    """Five designs: flops and predicted latency, one breaking a constraint."""
    return pd.DataFrame(
        {
            "key": ["a", "b", "c", "d", "e"],
            "param:elan1.depth": [1, 2, 3, 4, 5],
            "gflops": [1.0, 2.0, 1.5, 3.0, 9.0],
            "latency_pred_ms": [1.0, 2.0, 2.5, 3.0, 0.5],
            "params": [1, 2, 3, 4, 5],
            "constraint_ok": [True, True, True, True, False],
        }
    )


def _calibration(tmp_path, tau: float, ci: list[float], train: dict = TRAIN):
    path = tmp_path / "calibration.json"
    report = {"train": train, "proxies": {"flops": {"kendall_tau": tau, "ci95": ci}}}
    path.write_text(json.dumps(report))
    return path


def test_a_supported_predictor_seeds_the_best_at_their_cost(experiment, tmp_path):
    calibration = _calibration(tmp_path, 0.85, [0.6, 1.0])
    plan = plan_screen(_screen(), experiment, 3, calibration, TRAIN)
    # front of (flops max, latency min) over the feasible a..d: a, b, d (c is dominated by b)
    assert plan.supported and [s["elan1.depth"] for s in plan.seeds] == [1, 2, 4]
    spread = plan_screen(_screen(), experiment, 2, calibration, TRAIN)
    assert [s["elan1.depth"] for s in spread.seeds] == [1, 4]  # the front's two ends
    more = plan_screen(_screen(), experiment, 4, calibration, TRAIN)
    assert [s["elan1.depth"] for s in more.seeds] == [1, 2, 4, 3]  # then the next layer
    assert isinstance(plan.seeds[0]["elan1.depth"], int)
    assert "0.85 [0.60, 1.00]" in plan.note


def test_a_negative_tau_ranks_the_other_way(experiment, tmp_path):
    plan = plan_screen(_screen(), experiment, 1, _calibration(tmp_path, -0.7, [-0.9, -0.3]), TRAIN)
    assert plan.supported and [s["elan1.depth"] for s in plan.seeds] == [1]  # fewest flops


@pytest.mark.parametrize(
    ("ci", "train", "why"),
    [
        ([-0.1, 0.7], TRAIN, "includes 0"),
        ([0.6, 1.0], {"data": "synth", "epochs": 2}, "no calibration of this budget"),
    ],
)
def test_an_unsupported_predictor_only_removes_constraint_breakers(
    experiment, tmp_path, ci, train, why
):
    plan = plan_screen(_screen(), experiment, 5, _calibration(tmp_path, 0.3, ci, train), TRAIN)
    assert not plan.supported
    assert [s["elan1.depth"] for s in plan.seeds] == [1, 2, 3, 4]  # screen order, e dropped
    assert why in plan.note and "removed the 1 designs that break a constraint" in plan.note


def test_an_unknown_predictor_is_one_line_naming_the_field(experiment, tmp_path):
    broken = dataclasses.replace(experiment, screen=Screen(designs=5, by="nope"))
    with pytest.raises(UserError, match=r"screen\.by.*unknown predictor 'nope'"):
        plan_screen(_screen(), broken, 3, tmp_path / "none.json", TRAIN)


def test_the_auto_table_is_built_once_per_machine(experiment, tmp_path, monkeypatch):
    monkeypatch.setenv("SCALING_LAB_CACHE", str(tmp_path / "cache"))
    built = []

    def fake_build(sources, path, **protocol):
        built.append((len(sources), protocol))
        path.write_text("{}")

    monkeypatch.setattr("scaling_lab.analyze.latency_build.build_table", fake_build)
    resolved = latency_auto.resolve_auto_table(experiment)
    assert resolved.latency.table.startswith(str(tmp_path / "cache" / "latency"))
    assert built == [(1 + latency_auto.SAMPLES, built[0][1])] and built[0][1]["threads"] == 1
    assert latency_auto.resolve_auto_table(experiment).latency.table == resolved.latency.table
    assert len(built) == 1  # cached
    card = {**latency_auto.machine_fingerprint(), "aten_isa": "AVX2"}
    monkeypatch.setattr(latency_auto, "machine_fingerprint", lambda: card)
    other = latency_auto.resolve_auto_table(experiment)
    assert other.latency.table != resolved.latency.table and len(built) == 2  # another machine
