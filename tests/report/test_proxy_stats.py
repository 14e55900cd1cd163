"""Kendall tau of a predictor with the trained metric and its bootstrap interval."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from scaling_lab.report.proxy_stats import (
    above_zero,
    predictor_taus,
    proxy_markdown,
    tau_b_rows,
    tau_interval,
)


def _tau_a(x, y) -> float:
    """Kendall's tau by counting pairs (no ties in the data used here)."""
    pairs = list(itertools.combinations(range(len(x)), 2))
    signs = [np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]) for i, j in pairs]
    return float(sum(signs) / len(pairs))


def test_tau_and_interval_of_perfect_and_reversed_orders():
    x = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert tau_interval(x, [10, 20, 30, 40, 50]) == pytest.approx((1.0, 1.0))
    assert tau_interval(x, [5, 4, 3, 2, 1]) == pytest.approx((-1.0, -1.0))
    assert all(math.isnan(v) for v in tau_interval([1, 2], [1, 2]))


def test_interval_brackets_the_counted_tau_and_is_repeatable():
    rng = np.random.default_rng(1)
    x = rng.normal(size=12)
    y = x + rng.normal(size=12)
    taus = predictor_taus({"p": x.tolist(), "flat": [1.0] * 12}, y.tolist())
    tau, (low, high) = taus["p"]["kendall_tau"], taus["p"]["ci95"]
    assert tau == pytest.approx(_tau_a(x, y), abs=1e-6)
    assert low < tau < high
    assert predictor_taus({"p": x.tolist()}, y.tolist())["p"] == taus["p"]
    assert taus["flat"]["kendall_tau"] is None  # a constant predictor ranks nothing
    assert taus["p"]["n"] == 12


def test_vectorized_tau_b_equals_scipys_with_ties():
    from scipy.stats import kendalltau

    rng = np.random.default_rng(2)
    x = rng.integers(0, 4, (50, 9)).astype(float)  # many ties
    y = rng.integers(0, 3, (50, 9)).astype(float)
    x[0] = 1.0  # a constant row: undefined
    got = tau_b_rows(x, y)
    assert math.isnan(got[0])
    for row, tau in zip(zip(x[1:], y[1:]), got[1:]):
        assert tau == pytest.approx(kendalltau(*row).statistic, abs=1e-12)


def test_nan_designs_are_left_out():
    taus = predictor_taus({"p": [1, 2, math.nan, 4, 5]}, [1, 2, 3, 4, 5])
    assert taus["p"]["n"] == 4 and taus["p"]["kendall_tau"] == 1.0


def test_markdown_says_whether_any_interval_lies_above_zero():
    report = {"metric": "AP50", "designs": 12}
    weak = {"a": {"kendall_tau": 0.2, "ci95": [-0.1, 0.5], "n": 12}}
    strong = {**weak, "b": {"kendall_tau": 0.8, "ci95": [0.5, 0.95], "n": 12}}
    assert above_zero(weak) == [] and above_zero(strong) == ["b"]
    text = "\n".join(proxy_markdown({**report, "proxies": weak}))
    assert "No predictor's 95% interval lies above 0" in text
    assert "| a | +0.20 | -0.10 to +0.50 | 12 | - |" in text
    assert "above 0 (they rank these designs like the trained AP50): b." in "\n".join(
        proxy_markdown({**report, "proxies": strong})
    )
    assert proxy_markdown(report) == []
