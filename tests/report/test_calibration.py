"""Calibration statistics against hand computations and scipy; the files ``lab calibrate``
writes."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from scaling_lab.report.calibration import (
    calibration_markdown,
    calibration_stats,
    icc1,
    icc1_ci,
    kendall_tau,
    mean_seed_tau,
    repeats_for_icc,
    write_calibration,
)


def test_icc_by_hand():
    # means 2, 5, 8 around 5: MSB = 3 * (9 + 0 + 9) / 2 = 27; within: SS 2 per group, MSW = 6 / 6
    assert icc1([[1, 2, 3], [4, 5, 6], [7, 8, 9]]) == pytest.approx((27 - 1) / (27 + 2 * 1))
    # no spread between designs: MSB 0, ICC = -MSW / ((k - 1) MSW) = -1 / (k - 1)
    assert icc1([[1, 3], [1, 3]]) == pytest.approx(-1.0)


@pytest.mark.parametrize("seed", range(4))
def test_icc_matches_the_anova_f_statistic(seed):
    """ICC(1) = (F - 1) / (F + k0 - 1) with F = MSB / MSW from scipy's one-way ANOVA."""
    rng = np.random.default_rng(seed)
    sizes = [3, 3, 3, 3] if seed % 2 else [2, 3, 4, 3]  # balanced and unbalanced
    groups = [rng.normal(rng.normal(0.3, 0.05), 0.02, n) for n in sizes]
    f = stats.f_oneway(*groups).statistic
    total = sum(sizes)
    k0 = (total - sum(n * n for n in sizes) / total) / (len(sizes) - 1)
    assert icc1(groups) == pytest.approx((f - 1) / (f + k0 - 1), rel=1e-9)


def test_icc_is_undefined_without_repeats_or_spread():
    assert math.isnan(icc1([[0.1], [0.2], [0.3]]))  # one run each: no within-design variance
    assert math.isnan(icc1([[0.2, 0.2], [0.2, 0.2]]))  # nothing varies
    assert math.isnan(icc1([[0.1, 0.2]]))  # one design
    assert icc1([[0.1, float("nan"), 0.11], [0.3, 0.31]]) > 0.9  # a failed run left out


@pytest.mark.parametrize("true_icc", [0.3, 0.8])
def test_icc_interval_covers_the_true_value_95_percent_of_the_time(true_icc):
    """Simulated 5 designs x 3 seeds from the one-way random-effects model with a known ICC:
    an exact 95% interval misses it in about 5% of the draws, half of them on each side."""
    rng = np.random.default_rng(int(true_icc * 10))
    draws, misses_low, misses_high = 2000, 0, 0
    for _ in range(draws):
        design = rng.normal(0.0, math.sqrt(true_icc), (5, 1))
        groups = design + rng.normal(0.0, math.sqrt(1 - true_icc), (5, 3))
        low, high = icc1_ci(groups)
        assert low <= icc1(groups) <= high
        misses_low += true_icc < low
        misses_high += true_icc > high
    # binomial(2000, 0.025): mean 50, sd 7; the bounds are 4 sd wide
    assert 22 <= misses_low <= 78 and 22 <= misses_high <= 78


def test_icc_interval_narrows_with_more_seeds_and_is_undefined_without_spread():
    rng = np.random.default_rng(0)
    design = rng.normal(0.0, 1.0, (5, 1))
    few = design + rng.normal(0.0, 1.0, (5, 3))
    many = design + rng.normal(0.0, 1.0, (5, 30))
    assert np.ptp(icc1_ci(many)) < np.ptp(icc1_ci(few))
    assert all(math.isnan(v) for v in icc1_ci([[0.2, 0.2], [0.3, 0.3]]))  # no noise at all
    assert all(math.isnan(v) for v in icc1_ci([[0.1], [0.2]]))  # no repeats


def _tau_a(x, y) -> float:
    """Kendall's tau by counting concordant and discordant pairs (no ties)."""
    score = sum(
        np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])
        for i, j in itertools.combinations(range(len(x)), 2)
    )
    return score / math.comb(len(x), 2)


def _spearman_brown(icc: float, n: int) -> float:
    return n * icc / (1 + (n - 1) * icc)


@pytest.mark.parametrize("icc", [0.05, 0.2, 0.28, 0.5, 0.55, 0.6, 0.79, 0.8, 0.95])
def test_repeats_for_icc_is_the_fewest_seeds_whose_mean_reaches_the_target(icc):
    fewest = next(n for n in range(1, 10_000) if _spearman_brown(icc, n) >= 0.8 - 1e-12)
    assert repeats_for_icc(icc, 0.8) == fewest
    assert repeats_for_icc(0.5, 0.8) == 4  # exactly 0.8 at 4: 4 * 0.5 / (1 + 3 * 0.5)
    assert repeats_for_icc(0.0, 0.8) is repeats_for_icc(-0.2, 0.8) is None
    assert repeats_for_icc(math.nan, 0.8) is None


def test_the_mean_of_n_seeds_has_the_spearman_brown_icc():
    # simulated: 4000 designs, design std 1, seed std 1.5 (ICC 1 / 3.25); the ICC of means of
    # 4 runs (two such means per design) is the formula's 4 r / (1 + 3 r)
    rng = np.random.default_rng(0)
    design = rng.normal(0, 1.0, (4000, 1, 1))
    runs = design + rng.normal(0, 1.5, (4000, 2, 4))
    measured = icc1(runs.mean(axis=2))
    assert measured == pytest.approx(_spearman_brown(1 / 3.25, 4), abs=0.02)
    assert icc1(runs[:, :, 0]) == pytest.approx(1 / 3.25, abs=0.03)


def test_kendall_tau_counts_pairs_and_skips_missing_values():
    x, y = [0.1, 0.4, 0.3, 0.2, 0.5], [0.2, 0.5, 0.1, 0.3, 0.4]
    assert kendall_tau(x, y) == pytest.approx(_tau_a(x, y))  # 2 discordant of 10: 0.2
    assert kendall_tau([*x, float("nan")], [*y, 0.9]) == pytest.approx(_tau_a(x, y))
    assert math.isnan(kendall_tau([0.1, 0.1], [0.2, 0.3]))  # a constant side
    assert math.isnan(kendall_tau([0.1], [0.2]))


def test_seed_tau_is_the_mean_over_pairs_of_seeds():
    table = pd.DataFrame(
        {0: [0.1, 0.2, 0.3, 0.4], 1: [0.2, 0.1, 0.3, 0.4], 5: [0.4, 0.3, 0.2, 0.1]}
    )
    pairs = [(0, 1), (0, 5), (1, 5)]
    want = np.mean([stats.kendalltau(table[a], table[b]).statistic for a, b in pairs])
    assert mean_seed_tau(table) == pytest.approx(want)
    assert mean_seed_tau(table) == pytest.approx((4 / 6 - 1 - 4 / 6) / 3)  # by hand


def _runs(means: list[float], noise: float, seeds: int = 3, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for d, mean in enumerate(means):
        for s in range(seeds):
            final = mean + rng.normal(0, noise)
            rows.append(
                {"design": f"d{d}", "seed": s, "status": "finished", "final": final,
                 "rung": final / 2 + rng.normal(0, noise / 10), "epochs_done": 10}
            )  # fmt: skip
    return pd.DataFrame(rows)


DESIGNS = [{"label": f"d{i}", "overrides": {"elan1.depth": i + 1}} for i in range(4)]
CONTEXT = {"experiment": "x", "metric": "AP50", "rung_metric": "AP50", "rung_epoch": 2,
           "budget": None, "epochs": 10, "designs": 4, "seeds": 3, "wall_s": 12.0}  # fmt: skip


def test_a_budget_that_separates_designs_passes_every_check():
    runs = _runs([0.1, 0.2, 0.3, 0.4], noise=0.002)
    report = calibration_stats(runs, DESIGNS)
    assert report["icc"] > 0.99 and report["kendall_tau_seeds"] == 1.0
    assert report["kendall_tau_rung_final"] > 0.9 and report["kendall_tau_rung_final_means"] == 1.0
    assert report["separates"] and all(report["checks"].values())
    groups = [runs.loc[runs["design"] == d["label"], "final"] for d in DESIGNS]
    assert report["icc"] == pytest.approx(icc1(groups), abs=1e-6)
    first = report["per_design"][0]
    assert first["n"] == 3 and first["mean"] == pytest.approx(groups[0].mean(), abs=1e-6)
    assert first["std"] == pytest.approx(groups[0].std(ddof=1), abs=1e-6)
    assert first["values"] == {str(s): pytest.approx(v, abs=1e-9) for s, v in enumerate(groups[0])}


def test_noise_alone_does_not_pass():
    report = calibration_stats(_runs([0.2, 0.2, 0.2, 0.2], noise=0.05, seed=3), DESIGNS)
    assert report["icc"] < 0.8 and not report["separates"]
    low, high = report["icc_ci95"]
    assert low < report["icc"] < high
    text = calibration_markdown({**CONTEXT, **report})
    assert "not reliably told apart" in text and "misses the threshold 0.8" in text
    assert f"{report['icc']:.2f} (95% CI {low:.2f} to {high:.2f})" in text


def test_a_report_that_misses_the_icc_says_how_many_seeds_would_reach_it():
    report = calibration_stats(_runs([0.10, 0.14, 0.18, 0.22], noise=0.04, seed=1), DESIGNS)
    assert 0 < report["icc"] < 0.8
    n = report["seeds_for_icc"]
    assert n == repeats_for_icc(report["icc"], 0.8) and n > 1
    low, high = report["icc_ci95"]
    assert report["seeds_for_icc_ci95"] == [repeats_for_icc(high, 0.8), repeats_for_icc(low, 0.8)]
    text = calibration_markdown({**CONTEXT, **report})
    assert f"ranking on the mean of {n} seeds per design (`seeds: {n}`)" in text
    # a budget that meets the ICC needs no such line
    good = calibration_stats(_runs([0.1, 0.2, 0.3, 0.4], noise=0.002), DESIGNS)
    assert good["seeds_for_icc"] == 1
    assert "seeds per design" not in calibration_markdown({**CONTEXT, **good})


def test_without_early_stopping_the_rung_is_reported_but_not_a_criterion():
    runs = _runs([0.1, 0.2, 0.3, 0.4], noise=0.002)
    runs["rung"] = runs["final"].to_numpy()[::-1]  # a rung that ranks the designs backwards
    stopped = calibration_stats(runs, DESIGNS)
    assert stopped["kendall_tau_rung_final"] < 0 and not stopped["separates"]
    table = calibration_stats(runs, DESIGNS, early_stopping=False)  # a table: no scheduler
    assert table["kendall_tau_rung_final"] == stopped["kendall_tau_rung_final"]
    assert table["checks"]["kendall_tau_rung_final"] is None and table["separates"]
    text = calibration_markdown({**CONTEXT, **table})
    assert "every criterion is met" in text
    assert "not a criterion: no run stops early here" in text


def test_failed_runs_are_left_out_and_counted():
    runs = _runs([0.1, 0.2, 0.3, 0.4], noise=0.002)
    runs.loc[0, ["status", "final", "rung"]] = ["failed", math.nan, math.nan]
    report = calibration_stats(runs, DESIGNS)
    assert report["failed_runs"] == 1 and report["runs"] == 11
    assert report["per_design"][0]["n"] == 2 and report["separates"]


def test_files(tmp_path):
    runs = _runs([0.1, 0.2, 0.3, 0.4], noise=0.002)
    report = {**CONTEXT, **calibration_stats(runs, DESIGNS)}
    paths = write_calibration(report, runs, tmp_path)
    assert {p.name for p in paths} == {
        "calibration.json",
        "calibration.md",
        "calibration.png",
        "calibration.svg",
    }
    stored = json.loads((tmp_path / "calibration.json").read_text())
    for key in ("icc", "kendall_tau_seeds", "kendall_tau_rung_final", "per_design", "metric",
                "budget", "designs", "seeds", "wall_s"):  # fmt: skip
        assert key in stored
    text = (tmp_path / "calibration.md").read_text()
    assert "the designs are told apart: every criterion is met" in text
    assert '`{"elan1.depth": 1}`' in text and "| d3 |" in text
    assert (tmp_path / "calibration.png").read_bytes()[:4] == b"\x89PNG"
