"""The screen (sweep/screen.py) and ``lab calibrate --proxies`` (report/calibration_proxies.py):
designs scored without training, deterministically, and each predictor's Kendall tau with a
calibration's trained metric, without retraining."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from scaling_lab.analyze.latency_predict import predict_latency
from scaling_lab.analyze.proxies import PROXIES
from scaling_lab.models import get_layer_graph, model_ref
from scaling_lab.report.calibration import calibration_stats
from scaling_lab.report.proxy_stats import predictor_taus
from scaling_lab.sweep.designs import enumerate_params
from scaling_lab.sweep.experiment import load_experiment
from scaling_lab.sweep.experiment_graphs import base_graph
from scaling_lab.sweep.materialize import Overrides, materialize
from scaling_lab.sweep.screen import draw_designs, latency_table, screen_designs
from scaling_lab.sweep.trial_keys import params_key
from tests.helpers.cli import run_lab_here
from tests.helpers.latency_fakes import hand_table, write_table

FITS = {"*": {"coef": [2e-8, 1e-8, 0.01], "n": 40, "cv_mape": 10.0}}
SEARCH = """\
name: scr
base: yolov7-tiny
metrics: [params, AP]
latency: {table: t.json}
search:
  space:
    img_size: {type: categorical, choices: [64]}
    elan2.depth: {type: int, low: 1, high: 2}
    scale.width: {type: float, low: 0.25, high: 0.5, step: 0.25}
  trials: 2
  objectives: {AP50: max, params: min}
  constraints: ["params <= 1500000"]
train: {data: "synth:images=24,size=64", img_size: 64, batch_size: 4, epochs: 1}
"""


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    folder = tmp_path_factory.mktemp("screen")
    graph = get_layer_graph("yolov7-tiny", deploy=True, img_size=64)
    write_table(folder / "t.json", hand_table(graph, fallback=FITS))
    (folder / "exp.yaml").write_text(textwrap.dedent(SEARCH))
    return load_experiment(folder / "exp.yaml")


@pytest.fixture(scope="module")
def screened(experiment, tmp_path_factory):
    reports = tmp_path_factory.mktemp("reports")
    return reports, screen_designs(experiment, 10, reports=reports, progress=False)


def test_screen_scores_the_whole_small_grid_and_writes_the_csv(experiment, screened):
    reports, frame = screened
    grid = list(enumerate_params(experiment.search.space))
    assert list(frame["key"]) == [params_key(p) for p in grid]  # 4 designs < 10: all of them
    on_disk = pd.read_csv(reports / "scr" / "screen.csv")
    assert list(on_disk["key"]) == list(frame["key"])
    table = latency_table(experiment)
    for params, row in zip(grid, frame.to_dict("records")):
        graph = materialize(base_graph(experiment), Overrides.from_paths(params))
        deploy = get_layer_graph(model_ref(graph, form="deploy"))
        expected = predict_latency(deploy, table).total_ms
        assert row["latency_pred_ms"] == pytest.approx(expected, abs=5e-5)  # 4 decimals
        assert row["param:elan2.depth"] == params["elan2.depth"]
        assert row["constraint_ok"] == (row["params"] <= 1_500_000)
        proxies = [row[name] for name in PROXIES]
        if row["constraint_ok"]:
            assert all(math.isfinite(v) for v in proxies), row
        else:  # never trained: not scored
            assert all(math.isnan(v) for v in proxies)
    assert frame["constraint_ok"].any() and not frame["constraint_ok"].all()


def test_screen_is_deterministic(experiment, screened):
    _, frame = screened
    again = screen_designs(experiment, 10, reports=None, progress=False)
    pd.testing.assert_frame_equal(
        frame.drop(columns="screen_s"), again.drop(columns="screen_s"), check_exact=True
    )


def test_a_sample_of_a_larger_space_is_distinct_and_repeatable(experiment):
    drawn = draw_designs(experiment, 3)
    assert len({params_key(p) for p in drawn}) == 3
    assert drawn == draw_designs(experiment, 3)


def _calibration(experiment, reports: Path, means: list[float]) -> Path:
    """A calibration.json of the grid's first 3 designs, two seeds each around ``means``."""
    designs = [
        {"label": f"d{i}", "key": f"{i:02d}-d{i}", "overrides": p}
        for i, p in enumerate(list(enumerate_params(experiment.search.space))[:3])
    ]
    runs = pd.DataFrame(
        [
            {"design": d["label"], "seed": s, "status": "finished", "final": m + e, "rung": m}
            for d, m in zip(designs, means)
            for s, e in enumerate((-0.01, 0.01))
        ]
    )
    report = {
        "experiment": experiment.name,
        "metric": "AP50",
        "mode": "max",
        "rung_metric": "AP50",
        "rung_epoch": 1,
        "budget": None,
        "epochs": 1,
        "designs": len(designs),
        "seeds": 2,
        "wall_s": 1.0,
        **calibration_stats(runs, designs),
    }
    path = reports / experiment.name / "calibration.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report))
    return path


def test_calibrate_proxies_rescores_an_existing_calibration(experiment, tmp_path):
    path = _calibration(experiment, tmp_path, [0.1, 0.3, 0.2])
    result = run_lab_here(
        "calibrate", experiment.path, "--proxies", "--reports", str(tmp_path), "--quiet"
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(path.read_text())
    assert list(report["proxies"]) == ["params", "flops", "latency_pred", *PROXIES]
    # each tau recomputed from the per-design values the file records
    values = {
        name: [d["predictors"][name] for d in report["per_design"]] for name in report["proxies"]
    }
    expected = predictor_taus(values, [d["mean"] for d in report["per_design"]])
    for name, entry in report["proxies"].items():
        assert entry["kendall_tau"] == expected[name]["kendall_tau"]
        assert entry["ci95"] == expected[name]["ci95"]
    # the grid's order: (depth 1, width .25), (1, .5), (2, .25); width adds far more params
    # than a stage's depth, so params order them d0 < d2 < d1, as the means do: tau 1
    p0, p1, p2 = values["params"]
    assert p0 < p2 < p1
    assert report["proxies"]["params"]["kendall_tau"] == 1.0
    assert report["proxies"]["params"]["tau_with_params"] == 1.0
    md = (tmp_path / experiment.name / "calibration.md").read_text()
    assert "| params | +1.00 |" in md and "## Predictors without training" in md


def test_calibrate_proxies_refuses_another_experiments_calibration(experiment, tmp_path):
    path = _calibration(experiment, tmp_path, [0.1, 0.3, 0.2])
    path.write_text(json.dumps({**json.loads(path.read_text()), "experiment": "other"}))
    result = run_lab_here(
        "calibrate", experiment.path, "--proxies", "--reports", str(tmp_path), "--quiet"
    )
    assert result.returncode == 2
    assert "not a calibration of experiment 'scr'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_screen_computes_only_the_proxies_asked_for(experiment, screened):
    _, full = screened
    some = screen_designs(experiment, 10, reports=None, progress=False, proxies=["naswot"])
    assert "naswot" in some and "synflow" not in some and "grad_norm" not in some
    pd.testing.assert_series_equal(some["naswot"], full["naswot"])
    counts = screen_designs(experiment, 10, reports=None, progress=False, proxies=False)
    assert not set(PROXIES) & set(counts.columns)
    assert list(counts["params"]) == list(full["params"])


def test_a_latency_constraint_without_a_table_is_left_to_the_trial(tmp_path):
    text = textwrap.dedent(SEARCH).replace("t.json", "not-built-yet.json")
    text = text.replace('constraints: ["params <= 1500000"]', 'constraints: ["latency_pred <= 1"]')
    (tmp_path / "exp.yaml").write_text(
        text.replace("metrics: [params, AP]", "metrics: [params, latency_pred, AP]")
    )
    experiment = load_experiment(tmp_path / "exp.yaml", check_graphs=False)
    frame = screen_designs(experiment, 2, reports=None, progress=False, proxies=False)
    assert frame["latency_pred_ms"].isna().all() and frame["constraint_ok"].all()


def test_calibrate_proxies_prices_with_the_auto_table(experiment, tmp_path, monkeypatch):
    """``latency: {table: auto}``: the machine's cached table (built on first use; here the
    hand-made one stands in for it)."""
    import dataclasses

    from scaling_lab.report.calibration_proxies import with_proxies
    from scaling_lab.sweep import latency_auto

    table = experiment.latency.table
    auto = dataclasses.replace(
        experiment, latency=dataclasses.replace(experiment.latency, table="auto")
    )

    def resolved(exp, progress=None):
        assert exp.latency.table == "auto"
        return dataclasses.replace(exp, latency=dataclasses.replace(exp.latency, table=table))

    monkeypatch.setattr(latency_auto, "resolve_auto_table", resolved)
    report = json.loads(_calibration(auto, tmp_path, [0.1, 0.3, 0.2]).read_text())
    scored = with_proxies(report, auto, progress=False)
    assert all(d["predictors"]["latency_pred"] > 0 for d in scored["per_design"])
    assert scored["proxies_latency_table"] is not None
