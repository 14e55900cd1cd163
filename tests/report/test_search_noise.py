"""A search's single runs with the seed noise ``lab calibrate`` measured at its budget: the
pooled std, each run's interval and which designs are distinguishable from the best."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from scaling_lab.report.calibration import calibration_stats
from scaling_lab.report.stats import SeedNoise, interaction_std, pooled_std
from scaling_lab.report.sweep_report import calibrated_noise
from scaling_lab.report.sweep_table import ReportContext, numeric_table
from scaling_lab.report.sweep_table_render import paper_table
from scaling_lab.sweep.calibrate import training_settings
from scaling_lab.sweep.experiment import load_experiment


def test_pooled_std_is_the_anova_within_mean_square():
    rng = np.random.default_rng(0)
    groups = [rng.normal(m, 0.03, n) for m, n in ((0.1, 3), (0.2, 2), (0.3, 4), (0.4, 1))]
    std, df = pooled_std(groups)
    assert df == (3 - 1) + (2 - 1) + (4 - 1)  # a lone run adds no degree of freedom
    # one-way ANOVA: F = MSB / MSW; MSW is the pooled variance, recovered from scipy's F
    kept = groups[:3]
    f = stats.f_oneway(*kept).statistic
    grand = np.concatenate(kept).mean()
    msb = sum(len(g) * (g.mean() - grand) ** 2 for g in kept) / (len(kept) - 1)
    assert std**2 == pytest.approx(msb / f, rel=1e-9)
    assert pooled_std([[0.1], [0.2]]) == (pytest.approx(math.nan, nan_ok=True), 0)


def test_calibration_records_the_pooled_noise():
    runs = pd.DataFrame(
        [
            {"design": d, "seed": s, "status": "finished", "final": v, "rung": v, "epochs_done": 3}
            for d, values in {"a": [0.10, 0.12, 0.11], "b": [0.30, 0.26, 0.28]}.items()
            for s, v in enumerate(values)
        ]
    )
    report = calibration_stats(runs, [{"label": "a"}, {"label": "b"}])
    expected = math.sqrt(
        (np.var([0.10, 0.12, 0.11], ddof=1) + np.var([0.30, 0.26, 0.28], ddof=1)) / 2
    )
    assert report["pooled_std"] == pytest.approx(expected, abs=1e-6) and report["pooled_df"] == 4


def _search_results() -> pd.DataFrame:
    rows = [("t0", 0.30), ("t1", 0.28), ("t2", 0.20), ("t3", None)]
    return pd.DataFrame(
        [
            {"key": k, "label": k, "status": "finished" if v is not None else "stopped",
             "AP50": v, "params": 1e6 * (i + 1), "param:scale.width": 0.25 * (i + 1)}
            for i, (k, v) in enumerate(rows)
        ]
    )  # fmt: skip


def test_single_runs_get_the_calibrated_interval_and_a_difference_from_the_best():
    noise = SeedNoise(metric="AP50", std=0.02, df=10, designs=5, seeds=3)
    ctx = ReportContext(experiment="s", kind="search", objectives={"AP50": "max"}, noise=noise)
    numeric = numeric_table(_search_results(), ctx)
    t = stats.t.ppf(0.975, 10)
    assert numeric.loc[0, "AP50_ci95"] == pytest.approx(100 * t * 0.02)
    assert np.isnan(numeric.loc[3, "AP50_ci95"])  # a stopped trial has no final value
    threshold = 100 * t * 0.02 * math.sqrt(2)  # about 6.3 points
    assert list(numeric["vs_best"].round(6)[:3]) == [0.0, -2.0, -10.0]
    assert 2.0 < threshold < 10.0
    assert list(numeric["vs_best_ns"][:3]) == [True, True, False]
    table = paper_table(_search_results(), ctx)
    assert list(table["AP50 vs best"][:3]) == ["best", "-2.0 (n.s.)", "-10.0"]
    assert table.loc[0, "AP50"] == f"30.0 ± {100 * t * 0.02:.1f}%"
    assert "pooled std 2.0 points over 5 designs x 3 seeds, 10 df" in table.attrs["stats_note"]


def test_without_a_calibration_the_table_says_there_is_no_noise_estimate():
    ctx = ReportContext(experiment="s", kind="search", objectives={"AP50": "max"})
    table = paper_table(_search_results(), ctx)
    assert "AP50 vs best" not in table.columns
    assert table.attrs["stats_note"].startswith("One seed: no noise estimate")


def test_a_calibration_counts_only_for_the_settings_it_ran(tmp_path):
    experiment = load_experiment("experiments/elan_search.yaml", check_graphs=False)
    report = {"metric": "AP50", "pooled_std": 0.02, "pooled_df": 10, "designs": 5, "seeds": 3,
              "train": training_settings(experiment, None)}  # fmt: skip
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(report))
    noise = calibrated_noise(experiment, path)
    assert noise == SeedNoise(metric="AP50", std=0.02, df=10, designs=5, seeds=3)
    assert calibrated_noise(experiment, path, "paper") is None  # another budget
    other = {**report, "train": {**report["train"], "epochs": 99}}
    path.write_text(json.dumps(other))
    assert calibrated_noise(experiment, path) is None  # the settings changed since
    path.write_text("{not json")
    assert calibrated_noise(experiment, path) is None


def _additive_fit_residual_std(table: np.ndarray) -> tuple[float, int]:
    """The residual std of value ~ design + seed by least squares on dummy columns."""
    n_designs, n_seeds = table.shape
    rows, y = [], []
    for d in range(n_designs):
        for s in range(n_seeds):
            dummies = [1.0] + [float(d == i) for i in range(1, n_designs)]
            rows.append(dummies + [float(s == j) for j in range(1, n_seeds)])
            y.append(table[d, s])
    design, y = np.asarray(rows), np.asarray(y)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    df = len(y) - design.shape[1]
    return math.sqrt(float(((y - design @ coef) ** 2).sum()) / df), df


def test_interaction_std_is_the_residual_of_the_additive_model():
    rng = np.random.default_rng(1)
    design_effect, seed_effect = rng.normal(0, 0.05, (5, 1)), rng.normal(0, 0.04, (1, 3))
    table = 0.2 + design_effect + seed_effect + rng.normal(0, 0.01, (5, 3))
    std, df = interaction_std(table)
    expected_std, expected_df = _additive_fit_residual_std(table)
    assert df == expected_df == (5 - 1) * (3 - 1)
    assert std == pytest.approx(expected_std, rel=1e-9)
    assert std < pooled_std(table)[0]  # the shared seed effect is removed
    with_gap = np.vstack([table, [0.3, np.nan, 0.3]])  # an incomplete design is left out
    assert interaction_std(with_gap) == (pytest.approx(std), df)
    assert interaction_std(table[:1])[1] == 0 and interaction_std(table[:, :1])[1] == 0


def test_a_search_compares_same_seed_runs_with_the_interaction_noise(tmp_path):
    experiment = load_experiment("experiments/elan_search.yaml", check_graphs=False)
    report = {"metric": "AP50", "pooled_std": 0.05, "pooled_df": 10, "designs": 5, "seeds": 3,
              "interaction_std": 0.02, "interaction_df": 8,
              "train": training_settings(experiment, None)}  # fmt: skip
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(report))
    noise = calibrated_noise(experiment, path)
    assert noise.paired and noise.shared_seed_df == 8
    assert noise.ci95 == pytest.approx(stats.t.ppf(0.975, 10) * 0.05)  # a run: total noise
    assert noise.difference_ci95 == pytest.approx(stats.t.ppf(0.975, 8) * 0.02 * math.sqrt(2))
    ctx = ReportContext(experiment="s", kind="search", objectives={"AP50": "max"}, noise=noise)
    table = paper_table(_search_results(), ctx)
    assert list(table["AP50 vs best"][:3]) == ["best", "-2.0 (n.s.)", "-10.0"]
    assert "interaction std 2.0 points, 8 df" in table.attrs["stats_note"]
    for damaged in ({"interaction_std": "x"}, {"interaction_df": 0}):
        path.write_text(json.dumps({**report, **damaged}))
        assert not calibrated_noise(experiment, path).paired  # falls back to the pooled noise


def test_calibration_records_the_interaction_noise():
    finals = {"a": [0.10, 0.14, 0.12], "b": [0.30, 0.33, 0.28], "c": [0.2, 0.25, 0.21]}
    runs = pd.DataFrame(
        [
            {"design": d, "seed": s, "status": "finished", "final": v, "rung": v, "epochs_done": 3}
            for d, values in finals.items()
            for s, v in enumerate(values)
        ]
    )
    report = calibration_stats(runs, [{"label": d} for d in finals])
    std, df = _additive_fit_residual_std(np.array(list(finals.values())))
    assert report["interaction_std"] == pytest.approx(std, abs=1e-6)
    assert report["interaction_df"] == df == 4
