"""Reports of repeated rows (``seeds: N``): aggregates, seed rows in the CSV, significance."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.container import ErrorbarContainer
from scipy import stats

from scaling_lab.report import sweep_plots
from scaling_lab.report.sweep_plots import write_plots
from scaling_lab.report.sweep_table import ReportContext, numeric_table
from scaling_lab.report.sweep_table_render import paper_table, render

CTX = ReportContext(experiment="rep", labels=("base", "new"), baseline="base", against="new")
APS = {"base": [0.300, 0.310, 0.290], "new": [0.330, 0.320, 0.345]}


def _results(aps: dict[str, list[float]], seeds: dict[str, list[int]] | None = None):
    rows = []
    for order, (label, values) in enumerate(aps.items()):
        for i, ap in enumerate(values):
            seed = (seeds or {}).get(label, list(range(len(values))))[i]
            key = f"{order:02d}-{label}" + (f"-seed{seed}" if len(values) > 1 else "")
            rows.append(
                {"label": label, "key": key, "order": order, "seed": seed, "AP": ap,
                 "status": "finished", "params": 1e6 * (order + 1), "gmacs": 1.0}
            )  # fmt: skip
    return pd.DataFrame(rows)


def test_repeats_aggregate_to_mean_std_and_ci_with_every_seed_kept_in_the_csv():
    table = numeric_table(_results(APS), CTX)
    expected = ["seed"] * 3 + ["result"] + ["seed"] * 3 + ["result", "improvement"]
    assert list(table["row"]) == expected
    seeds = table[table["row"] == "seed"]
    assert list(seeds["seed"]) == [0, 1, 2, 0, 1, 2]
    assert list(seeds["AP"]) == pytest.approx([100 * v for v in APS["base"] + APS["new"]])
    result = table[table["row"] == "result"].set_index("label")
    for label, values in APS.items():
        percent = 100 * np.array(values)
        assert result.loc[label, "AP"] == pytest.approx(percent.mean())
        assert result.loc[label, "AP_std"] == pytest.approx(percent.std(ddof=1))
        sem = stats.sem(percent)
        half = stats.t.interval(0.95, 2, loc=0, scale=sem)[1]
        assert result.loc[label, "AP_ci95"] == pytest.approx(half)
        assert result.loc[label, "n_seeds"] == 3 and result.loc[label, "key"].endswith(label)
    text = render(table, CTX, "csv")
    assert pd.read_csv(io.StringIO(text))["row"].tolist() == table["row"].tolist()


def test_improvement_states_the_paired_difference_and_its_ci_and_marks_ns():
    table = numeric_table(_results(APS), CTX)
    imp = table[table["row"] == "improvement"].iloc[0]
    diffs = 100 * (np.array(APS["new"]) - np.array(APS["base"]))
    low, high = stats.ttest_rel(100 * np.array(APS["new"]), 100 * np.array(APS["base"]))\
        .confidence_interval(0.95)  # fmt: skip
    assert imp["AP"] == pytest.approx(diffs.mean()) and imp["AP_test"] == "paired"
    assert imp["AP"] - imp["AP_ci95"] == pytest.approx(low)
    assert imp["AP_ns"] == bool(low <= 0 <= high)  # n = 3 this noisy: not significant
    md = render(paper_table(_results(APS), CTX), CTX, "md")
    assert "30.0 ± 1.0%" in md and "33.2 ± 1.3%" in md
    assert f"+{diffs.mean():.1f} ± {imp['AP_ci95']:.1f} (n.s.)" in md
    assert "mean ± sample std over 3 seeds" in md and "paired t over seeds" in md
    tex = render(paper_table(_results(APS), CTX), CTX, "tex")
    assert "30.0 $\\pm$ 1.0\\%" in tex


def test_a_clear_gain_is_not_marked_and_unmatched_seeds_use_welch():
    clear = {"base": [0.300, 0.302, 0.301], "new": [0.350, 0.351, 0.353]}
    md = render(paper_table(_results(clear), CTX), CTX, "md")
    assert "(n.s.)" not in md and "+5.0 ± " in md
    welch = _results(clear, seeds={"base": [0, 1, 2], "new": [3, 4, 5]})
    imp = numeric_table(welch, CTX).iloc[-1]
    result = stats.ttest_ind(100 * np.array(clear["new"]), 100 * np.array(clear["base"]),
                             equal_var=False)  # fmt: skip
    assert imp["AP_test"] == "welch"
    assert imp["AP"] + imp["AP_ci95"] == pytest.approx(result.confidence_interval(0.95).high)
    assert imp["AP_ns"] == bool(result.pvalue >= 0.05)


def test_one_seed_says_there_is_no_noise_estimate_and_keeps_the_old_csv():
    single = _results({"base": [0.30], "new": [0.33]})
    table = numeric_table(single, CTX)
    assert "seed" not in table.columns and "AP_ci95" not in table.columns
    assert list(table["row"]) == ["result", "result", "improvement"]
    md = render(paper_table(single, CTX), CTX, "md")
    assert "One seed: no noise estimate" in md and "|  +3.0 |" in md  # no CI to state


def _drawn_axes(results: pd.DataFrame, out_dir, monkeypatch) -> dict[str, Axes]:
    """Write the plots, keeping each figure's axes by file name (the files alone would only
    let us read the bars back out of SVG paths)."""
    axes: dict[str, Axes] = {}
    real_save = sweep_plots._save

    def keep(fig, where, name):
        axes[name] = fig.axes[0]
        return real_save(fig, where, name)

    monkeypatch.setattr(sweep_plots, "_save", keep)
    write_plots(results, CTX, out_dir)
    return axes


def _error_bars(ax: Axes) -> list[tuple[float, float, float]]:
    """(x, centre, half-width) of every vertical error bar drawn on ``ax``."""
    bars = []
    for container in ax.containers:
        if isinstance(container, ErrorbarContainer):
            _, _, (vertical,) = container.lines
            for (x_low, y_low), (x_high, y_high) in vertical.get_segments():
                assert x_low == x_high  # vertical
                bars.append((x_low, (y_low + y_high) / 2, (y_high - y_low) / 2))
    return sorted(bars)


def test_ap_plots_draw_error_bars_of_one_std_over_the_repeats(tmp_path, monkeypatch):
    """One bar per repeated row, centred on the mean AP (%), half as wide as the sample std
    over its seeds; one seed per row draws no bar (there is no spread to show)."""
    axes = _drawn_axes(_results(APS), tmp_path, monkeypatch)
    assert {"ap_vs_params", "ap_vs_flops"} <= set(axes)
    assert (tmp_path / "ap_vs_params.png").is_file() and (tmp_path / "ap_vs_params.svg").is_file()
    # computed here from APS: each row's params are 1e6 * (its order + 1), plotted in M
    want = sorted(
        (order + 1.0, 100 * np.mean(values), 100 * np.std(values, ddof=1))
        for order, values in enumerate(APS.values())
    )
    bars = _error_bars(axes["ap_vs_params"])
    assert len(bars) == len(APS)
    assert bars == [pytest.approx(bar) for bar in want]
    # the same bars against FLOPs (both rows count the same MACs: one x)
    flops = _error_bars(axes["ap_vs_flops"])
    assert len(flops) == len(APS) and len({x for x, _, _ in flops}) == 1
    assert [bar[1:] for bar in flops] == [pytest.approx(bar[1:]) for bar in want]
    single = _drawn_axes(_results({"base": [0.30], "new": [0.33]}), tmp_path / "one", monkeypatch)
    assert _error_bars(single["ap_vs_params"]) == []
    assert len(single["ap_vs_params"].collections) > 0  # the points themselves are drawn
