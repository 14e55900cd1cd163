"""The confirm phase's statistics against hand computations (issue #26): paired intervals over
the fresh seeds, the selection bias, the conclusion line for a clear winner, a clear loser and
a tie; and an ablation's minimum detectable difference."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from scaling_lab.report.confirm import ConfirmSetup, confirm_markdown, summarize_confirm
from scaling_lab.report.stats import difference

# Student's t with 2 df has the closed-form quantile (2p - 1) / sqrt(2p(1 - p))
T_975_2DF = 0.95 / math.sqrt(2 * 0.975 * 0.025)  # 4.3027 (printed tables: 4.303)
T_80_2DF = 0.6 / math.sqrt(2 * 0.8 * 0.2)  # 1.0607
SETUP = ConfirmSetup(metric="AP50", mode="max", cost="params", baselines=("yolov7-tiny",))


def _frame(base: list[float], design: list[float], searched: float) -> pd.DataFrame:
    """A search's rows: one search trial (t000), the base's and t000's confirm runs."""
    rows = [
        {
            "key": "s-1",
            "label": "t000",
            "seed": 0,
            "phase": "search",
            "baseline": False,
            "status": "finished",
            "AP50": searched / 100,
            "params": 2e6,
        },
    ]
    for seed, (b, d) in enumerate(zip(base, design), start=1):
        rows.append(
            {
                "key": f"base-seed{seed}",
                "label": "yolov7-tiny",
                "seed": seed,
                "phase": "confirm",
                "baseline": True,
                "status": "finished",
                "AP50": b / 100,
                "params": 4e6,
            }
        )
        rows.append(
            {
                "key": f"s-1-seed{seed}",
                "label": "t000",
                "seed": seed,
                "phase": "confirm",
                "baseline": False,
                "design_key": "s-1",
                "status": "finished",
                "AP50": d / 100,
                "params": 2e6,
            }
        )
    return pd.DataFrame(rows)


def test_a_clear_winner_gets_its_paired_interval_and_the_cost_ratio():
    summary = summarize_confirm(_frame([30, 32, 31], [35, 36, 38], searched=40.0), SETUP)
    (entry,) = summary["confirmed"]
    # by hand: d = 5, 4, 7; mean 16/3; sd = sqrt(7/3); half-width t(2) * sd / sqrt(3)
    mean, half = 16 / 3, T_975_2DF * math.sqrt(7 / 3) / math.sqrt(3)
    (versus,) = entry["vs_base"]
    assert versus["diff"] == pytest.approx(mean, abs=1e-4)
    assert versus["ci95"] == pytest.approx([mean - half, mean + half], abs=1e-4)
    assert versus["significant"] is True and versus["cost_ratio"] == pytest.approx(0.5)
    assert entry["mean"] == pytest.approx(109 / 3, abs=1e-4)
    assert entry["std"] == pytest.approx(math.sqrt(7 / 3), abs=1e-4)  # 35, 36, 38: same spread
    assert summary["selection_bias"] == pytest.approx(40 - 109 / 3, abs=1e-4)
    assert summary["winner"] == "s-1"
    assert summary["conclusion"] == (
        f"t000 beats yolov7-tiny by +5.3 [{mean - half:+.1f}, {mean + half:+.1f}] AP50 points, "
        "paired over 3 fresh seeds at 50% of its parameters."
    )
    assert confirm_markdown(summary).startswith(f"**Conclusion:** {summary['conclusion']}")


def test_a_clear_loser_trails_the_base():
    summary = summarize_confirm(_frame([35, 36, 38], [30, 32, 31], searched=33.0), SETUP)
    assert summary["winner"] is None
    assert summary["conclusion"].startswith(
        "no design beats yolov7-tiny at this budget: the best confirmed, t000, trails it by -5.3"
    )


def test_a_tie_is_not_distinguishable():
    summary = summarize_confirm(_frame([30, 32, 31], [33, 30, 32], searched=35.0), SETUP)
    (versus,) = summary["confirmed"][0]["vs_base"]
    assert versus["significant"] is False and versus["ci95"][0] < 0 < versus["ci95"][1]
    assert summary["winner"] is None
    assert summary["conclusion"].startswith(
        "no design is distinguishable from yolov7-tiny at this budget"
    )


def test_no_confirm_runs_no_summary():
    frame = _frame([30], [31], searched=30.0)
    assert summarize_confirm(frame[frame["phase"] == "search"], SETUP) is None


def test_the_minimum_detectable_difference_is_t_quantiles_times_the_standard_error():
    diff = difference({1: 30.0, 2: 32.0, 3: 31.0}, {1: 35.0, 2: 36.0, 3: 38.0})
    se = math.sqrt(7 / 3) / math.sqrt(3)
    assert diff.minimum_detectable() == pytest.approx((T_975_2DF + T_80_2DF) * se, rel=1e-6)
    assert math.isnan(difference({1: 30.0}, {1: 31.0}).minimum_detectable())
