"""Repeat statistics against scipy's own tests and hand-checked numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from scaling_lab.report.stats import difference, summarize


def test_summary_of_repeats_is_mean_sample_std_and_t_interval():
    s = summarize([1.0, 2.0, 3.0])
    # by hand: mean 2, std 1, t(0.975, 2) = 4.302653, half-width 4.302653 / sqrt(3)
    assert (s.n, s.mean, s.std) == (3, 2.0, 1.0)
    assert s.ci95 == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    lo, hi = stats.t.interval(0.95, 2, loc=2.0, scale=stats.sem([1.0, 2.0, 3.0]))
    assert (s.mean - s.ci95, s.mean + s.ci95) == pytest.approx((lo, hi))


def test_one_value_has_no_spread_and_failed_seeds_are_left_out():
    one = summarize([0.4])
    assert one.n == 1 and one.mean == 0.4 and math.isnan(one.std) and math.isnan(one.ci95)
    assert summarize([0.4, float("nan"), 0.6]).n == 2
    assert summarize([]).n == 0


@pytest.mark.parametrize("seed", range(5))
def test_paired_interval_matches_ttest_rel(seed):
    rng = np.random.default_rng(seed)
    old = rng.normal(0.30, 0.01, 4)
    new = old + rng.normal(0.005, 0.004, 4)
    diff = difference(dict(enumerate(old)), dict(enumerate(new)))
    assert diff.test == "paired" and diff.delta == pytest.approx(np.mean(new - old))
    p = stats.ttest_rel(new, old).pvalue
    assert diff.significant == (p < 0.05)
    # the interval's edge is where the test's p-value is exactly 0.05
    shifted = new - (diff.delta - diff.ci95)
    assert stats.ttest_rel(shifted, old).pvalue == pytest.approx(0.05, rel=1e-6)
    low = stats.ttest_rel(new, old).confidence_interval(0.95).low
    assert diff.delta - diff.ci95 == pytest.approx(low)


@pytest.mark.parametrize("seed", range(5))
def test_welch_interval_matches_ttest_ind_unequal_variances(seed):
    rng = np.random.default_rng(seed)
    old, new = rng.normal(0.30, 0.01, 3), rng.normal(0.31, 0.02, 5)
    diff = difference(dict(enumerate(old)), {10 + i: v for i, v in enumerate(new)})
    assert diff.test == "welch" and diff.delta == pytest.approx(new.mean() - old.mean())
    result = stats.ttest_ind(new, old, equal_var=False)
    assert diff.significant == (result.pvalue < 0.05)
    shifted = new - (diff.delta - diff.ci95)
    assert stats.ttest_ind(shifted, old, equal_var=False).pvalue == pytest.approx(0.05, rel=1e-6)
    assert diff.delta + diff.ci95 == pytest.approx(result.confidence_interval(0.95).high)


def test_hand_checked_paired_difference_and_no_estimate_with_one_seed():
    # differences 1, 2, 3: mean 2, std 1, half-width t(0.975, 2) / sqrt(3) = 2.484
    diff = difference({0: 10.0, 1: 10.0, 2: 10.0}, {0: 11.0, 1: 12.0, 2: 13.0})
    assert diff.delta == 2.0 and diff.ci95 == pytest.approx(2.484138, rel=1e-6)
    assert not diff.significant  # 2 < 2.484: the interval [-0.48, 4.48] contains 0
    shifted = difference({0: 10.0, 1: 10.0, 2: 10.0}, {0: 12.0, 1: 13.0, 2: 14.0})
    assert shifted.delta == 3.0 and shifted.significant
    noisy = difference({0: 10.0, 1: 12.0}, {0: 11.0, 1: 12.5})  # diffs 1, 0.5: CI 3.18
    assert noisy.estimated and not noisy.significant
    single = difference({0: 10.0}, {0: 11.0})
    assert single.delta == 1.0 and not single.estimated and not single.significant
