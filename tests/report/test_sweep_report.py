"""Sweep reports: Pareto masks, paper-style tables (md/tex/csv) and the plots written."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from scaling_lab.report.sweep_plots import write_plots
from scaling_lab.report.sweep_table import ReportContext, numeric_table
from scaling_lab.report.sweep_table_render import paper_table, render, tex_escape, write_report
from scaling_lab.sweep.pareto import pareto_front, pareto_mask

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
IMPROVEMENT = "improvement (small vs base)"


def brute_force(values: np.ndarray, modes: list[str]) -> np.ndarray:
    """The definition, row by row: valid and no valid row at least as good everywhere and
    strictly better somewhere."""
    n, k = values.shape

    def better_or_equal(a: float, b: float, mode: str) -> bool:
        return a >= b if mode == "max" else a <= b

    valid = [not any(math.isnan(v) for v in row) for row in values]
    out = []
    for i in range(n):
        if not valid[i]:
            out.append(False)
            continue
        dominated = False
        for j in range(n):
            if j == i or not valid[j]:
                continue
            all_ge = all(better_or_equal(values[j, c], values[i, c], modes[c]) for c in range(k))
            some_gt = any(values[j, c] != values[i, c] for c in range(k))
            dominated |= all_ge and some_gt
        out.append(not dominated)
    return np.array(out)


@pytest.mark.parametrize("seed", range(8))
def test_pareto_mask_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(1, 40)), int(rng.integers(1, 4))
    # small integer range: plenty of ties and exact duplicates
    values = rng.integers(0, 5, size=(n, k)).astype(float)
    values[rng.random((n, k)) < 0.1] = np.nan
    if n > 2:
        values[1] = values[0]
    modes = [str(m) for m in rng.choice(["max", "min"], size=k)]
    np.testing.assert_array_equal(pareto_mask(values, modes), brute_force(values, modes))


@pytest.mark.parametrize("modes", list(itertools.product(["max", "min"], repeat=2)))
def test_pareto_mask_all_mode_mixes_continuous(modes: tuple[str, str]) -> None:
    values = np.random.default_rng(42).normal(size=(60, 2))
    mask = pareto_mask(values, modes)
    np.testing.assert_array_equal(mask, brute_force(values, list(modes)))
    assert 1 <= mask.sum() < 60


def test_pareto_mask_hand_made_cases() -> None:
    square = np.array([[1.0, 1.0], [2.0, 2.0], [1.0, 2.0]])
    assert pareto_mask(square, ["max", "max"]).tolist() == [False, True, False]
    assert pareto_mask(square, ["min", "min"]).tolist() == [True, False, False]
    assert pareto_mask(square, ["min", "max"]).tolist() == [False, False, True]
    # AP up, latency down: a trade-off keeps both ends, drops the dominated middle
    trade = np.array([[50.0, 10.0], [40.0, 5.0], [39.0, 6.0], [50.0, 10.0]])
    assert pareto_mask(trade, ["max", "min"]).tolist() == [True, True, False, True]
    with_nan = np.array([[np.nan, 100.0], [1.0, 1.0]])
    assert pareto_mask(with_nan, ["max", "max"]).tolist() == [False, True]
    assert pareto_mask(np.array([3.0, 1.0, 3.0]), ["max"]).tolist() == [True, False, True]
    assert pareto_mask(np.empty((0, 2)), ["max", "min"]).tolist() == []


def test_pareto_mask_rejects_bad_modes() -> None:
    with pytest.raises(ValueError, match="biggest"):
        pareto_mask(np.ones((2, 1)), ["biggest"])
    with pytest.raises(ValueError, match="mode"):
        pareto_mask(np.ones((2, 2)), ["max"])


def test_pareto_front_uses_finished_rows_only() -> None:
    df = pd.DataFrame(
        {
            "label": ["a", "b", "c", "d"],
            "status": ["finished", "finished", "failed", "finished"],
            "AP": [0.5, 0.4, 0.9, 0.3],
            "latency_ms": [10.0, 5.0, 1.0, 6.0],
        }
    )
    front = pareto_front(df, {"AP": "max", "latency_ms": "min"})
    # c would dominate everything but failed; d is dominated by b
    assert front["label"].tolist() == ["a", "b"]


# --- tables --------------------------------------------------------------------------------


def variant_results() -> pd.DataFrame:
    """Four variants and one failure, in scrambled order; base 10M -> small 6M params."""
    return pd.DataFrame(
        {
            "experiment": "exp_1",
            "key": ["k-big", "k-small", "k-broken", "k-base"],
            "label": ["big", "small", "broken", "base"],
            "order": [2, 1, 3, 0],
            "kind": "variant",
            "status": ["finished", "finished", "failed", "finished"],
            "error": [np.nan, np.nan, "CUDA out of memory\nTraceback line 2", np.nan],
            "params": [20e6, 6e6, np.nan, 10e6],
            "gmacs": [20.0, 5.0, np.nan, 10.0],
            "img_size": [640, 640, 640, 640],
            "latency_ms": [8.0, 3.0, np.nan, 4.0],
            "fps": [125.0, 333.0, np.nan, 250.0],
            "latency_device": "cpu",
            "AP": [0.55, 0.52, np.nan, 0.50],
            "AP50": [0.72, 0.70, np.nan, 0.68],
        }
    )


def variant_ctx(**changes) -> ReportContext:
    base = {
        "experiment": "exp_1",
        "title": "Table 8: 100% of test_set",
        "kind": "variant",
        "labels": ("base", "small", "big", "broken"),
        "baseline": "base",
        "against": "small",
        "paper_rows": {
            "base": {"params_m": 10.0, "AP": 51.2},
            "small": {"params_m": 7.0, "AP": 51.6},
        },
        "note": "A note under the title.",
    }
    base.update(changes)
    return ReportContext(**base)


def test_paper_table_follows_declared_order_whatever_the_input_order() -> None:
    results = variant_results()
    for seed in range(3):
        shuffled = results.sample(frac=1, random_state=seed)
        table = paper_table(shuffled, variant_ctx())
        assert table["Model"].tolist() == ["base", "small", "big", "broken", IMPROVEMENT]
    reordered = paper_table(results, variant_ctx(labels=("big", "broken", "small", "base")))
    assert reordered["Model"].tolist()[:4] == ["big", "broken", "small", "base"]


def test_paper_table_cells_and_improvement_row() -> None:
    table = paper_table(variant_results(), variant_ctx()).set_index("Model")
    assert table.loc["base", "#Param."] == "10.0M"
    assert table.loc["small", "FLOPs"] == "10.0G"  # 2 x 5 GMACs
    assert table.loc["base", "AP"] == "50.0%"
    assert table.loc["small", "Size"] == "640"
    imp = table.loc[IMPROVEMENT]
    # independent arithmetic: relative change for costs, AP points for accuracy
    assert imp["#Param."] == f"{(6 / 10 - 1) * 100:+.0f}%" == "-40%"
    assert imp["FLOPs"] == "-50%"
    assert imp["Latency (ms)"] == "-25%"
    assert imp["FPS"] == f"{(333 / 250 - 1) * 100:+.0f}%"
    assert imp["AP"] == "+2.0"
    assert imp["AP50"] == "+2.0"
    # the paper's own improvement, computed the same way from its numbers
    assert imp["#Param. (paper)"] == "-30%"
    assert imp["AP (paper)"] == "+0.4"
    assert imp["Size"] == ""


def test_paper_columns_only_where_the_paper_has_numbers() -> None:
    table = paper_table(variant_results(), variant_ctx())
    columns = list(table.columns)
    paper_cols = [c for c in columns if c.endswith("(paper)")]
    assert paper_cols == ["#Param. (paper)", "AP (paper)"]
    assert columns.index("#Param. (paper)") == columns.index("#Param.") + 1
    assert columns.index("AP (paper)") == columns.index("AP") + 1
    assert table.set_index("Model").loc["big", "AP (paper)"] == "-"
    # measured columns without data are dropped
    assert "APS" not in columns and "AP75" not in columns
    bare = paper_table(variant_results(), variant_ctx(paper_rows={}))
    assert not [c for c in bare.columns if "(paper)" in c]


def test_failed_rows_show_their_error_and_block_the_improvement_row() -> None:
    table = paper_table(variant_results(), variant_ctx()).set_index("Model")
    assert table.loc["broken", "Status"] == "failed: CUDA out of memory"
    assert table.loc["base", "Status"] == "finished"
    failed_against = paper_table(variant_results(), variant_ctx(against="broken"))
    assert not failed_against["Model"].str.startswith("improvement").any()
    all_done = variant_results().query("status == 'finished'")
    table = paper_table(all_done, variant_ctx(labels=("base", "small", "big")))
    assert "Status" not in table.columns


def test_declared_label_without_result_is_listed_as_not_run() -> None:
    ctx = variant_ctx(labels=("base", "small", "big", "broken", "ghost"))
    table = paper_table(variant_results(), ctx).set_index("Model")
    assert table.loc["ghost", "Status"] == "not run"
    assert table.loc["ghost", "#Param."] == "-"


def test_numeric_table_is_raw_numbers_with_ap_in_percent() -> None:
    num = numeric_table(variant_results(), variant_ctx()).set_index("label")
    assert num.loc["small", "params_m"] == pytest.approx(6.0)
    assert num.loc["small", "params_m_paper"] == pytest.approx(7.0)
    assert num.loc["small", "AP"] == pytest.approx(52.0)
    assert num.loc["base", "AP_paper"] == pytest.approx(51.2)
    assert num.loc[IMPROVEMENT, "params_m"] == pytest.approx(-40.0)
    assert num.loc[IMPROVEMENT, "AP"] == pytest.approx(2.0)
    assert num.loc[IMPROVEMENT, "row"] == "improvement"
    assert "gflops_paper" not in num.columns


def test_two_decimal_paper_numbers_keep_two_decimals() -> None:
    ctx = variant_ctx(paper_rows={"base": {"AP": 52.26}, "small": {"AP": 52.18}})
    table = paper_table(variant_results(), ctx).set_index("Model")
    assert table.loc["base", "AP (paper)"] == "52.26%"
    assert table.loc[IMPROVEMENT, "AP (paper)"] == "-0.08"
    assert table.loc["base", "AP"] == "50.00%"


def test_render_tex_is_a_booktabs_table_with_escaped_cells() -> None:
    ctx = variant_ctx()
    tex = render(paper_table(variant_results(), ctx), ctx, "tex")
    for command in ("\\toprule", "\\midrule", "\\bottomrule", "\\begin{table}", "\\end{tabular}"):
        assert command in tex
    assert "\\caption{Table 8: 100\\% of test\\_set" in tex
    assert "\\label{tab:exp_1}" in tex
    assert "\\#Param." in tex and "50.0\\%" in tex
    assert "test_set" not in tex.replace("test\\_set", "")
    lines = tex.splitlines()
    imp = next(i for i, line in enumerate(lines) if line.startswith("improvement"))
    assert lines[imp - 1] == "\\midrule"
    assert lines[imp + 1] == "\\bottomrule"
    assert tex_escape("a_b & 5% #1 {x} $y ~^\\") == (
        "a\\_b \\& 5\\% \\#1 \\{x\\} \\$y \\textasciitilde{}\\textasciicircum{}\\textbackslash{}"
    )


def test_render_md_and_unknown_format() -> None:
    ctx = variant_ctx()
    table = paper_table(variant_results(), ctx)
    md = render(table, ctx, "md")
    assert md.startswith("# Table 8: 100% of test_set\n")
    assert "A note under the title." in md
    assert "| small" in md and "-40%" in md and "+2.0" in md
    assert "measured on cpu" in md
    with pytest.raises(ValueError, match="'html'"):
        render(table, ctx, "html")


def test_write_report_writes_tables_and_plots(tmp_path) -> None:
    ctx = variant_ctx(
        paper_peers=[
            {"model": "v5-S", "family": "YOLOv5", "params_m": 7.2, "gflops": 16.5, "AP": 37.4},
            {"model": "R-CSP", "family": "YOLOR", "params_m": 52.9, "gflops": 120.4, "AP": 50.8},
        ]
    )
    paths = write_report(variant_results(), ctx, tmp_path / "out")
    names = {p.name for p in paths}
    assert {"table.md", "table.tex", "table.csv"} <= names
    for plot in ("ap_vs_latency", "ap_vs_params", "ap_vs_flops"):
        assert {f"{plot}.png", f"{plot}.svg"} <= names
    assert "params_vs_flops.png" not in names
    for path in paths:
        assert path.exists() and path.stat().st_size > 0
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == PNG_MAGIC
        if path.suffix == ".svg":
            assert "<svg" in path.read_text()
    csv = pd.read_csv(tmp_path / "out" / "table.csv").set_index("label")
    assert csv.loc["small", "AP"] == pytest.approx(52.0)
    assert not list((tmp_path / "out").glob("*.tmp"))
    # a rerun writes the same bytes (matplotlib's SVG ids are random unless salted)
    again = {p.name: p.read_bytes() for p in write_report(variant_results(), ctx, tmp_path / "2")}
    assert again == {p.name: p.read_bytes() for p in paths}


def test_write_report_rejects_unknown_formats_before_writing(tmp_path) -> None:
    with pytest.raises(ValueError, match="'pdf'") as err:
        write_report(variant_results(), variant_ctx(), tmp_path / "out", formats=("md", "pdf"))
    assert "md, tex, csv" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_profile_only_sweep_draws_params_vs_flops(tmp_path) -> None:
    results = variant_results().drop(columns=["AP", "AP50"])
    paths = write_report(results, variant_ctx(), tmp_path, formats=("md",))
    names = sorted(p.name for p in paths)
    assert names == ["params_vs_flops.png", "params_vs_flops.svg", "table.md"]
    assert not list(tmp_path.glob("ap_*"))
    assert (tmp_path / "params_vs_flops.png").read_bytes()[:8] == PNG_MAGIC
    assert "AP" not in paper_table(results, variant_ctx()).columns


# --- searches ------------------------------------------------------------------------------


def search_results(n: int = 12) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    status = ["finished"] * n
    status[3], status[5] = "infeasible", "failed"
    df = pd.DataFrame(
        {
            "experiment": "search_1",
            "key": [f"trial-{i:03d}" for i in range(n)],
            "label": [f"t{i}" for i in range(n)],
            "order": rng.permutation(n),
            "kind": "search",
            "status": status,
            "error": [np.nan] * n,
            "params_m": rng.uniform(5, 50, n),
            "gflops": rng.uniform(10, 100, n),
            "latency_ms": rng.uniform(2, 20, n),
            "AP": rng.uniform(0.3, 0.5, n),
            "param:elan2.depth": rng.integers(1, 5, n),
            "param:repconv": rng.choice(["none", "planned", "all"], n),
            "param:scale.width": rng.uniform(0.25, 1.0, n),
        }
    )
    # the infeasible trial would dominate everything if it counted
    df.loc[3, ["AP", "latency_ms"]] = [0.9, 0.1]
    return df


def search_ctx() -> ReportContext:
    return ReportContext(
        experiment="search_1",
        title="ELAN search",
        kind="search",
        objectives={"AP": "max", "latency_ms": "min"},
    )


def test_search_table_sorted_by_order_with_pareto_marks() -> None:
    results = search_results()
    table = paper_table(results, search_ctx())
    assert table["Model"].tolist() == results.sort_values("order")["label"].tolist()
    assert {"elan2.depth", "repconv", "scale.width", "Pareto", "Status"} <= set(table.columns)
    done = results[results["status"] == "finished"]
    expected = brute_force(done[["AP", "latency_ms"]].to_numpy(), ["max", "min"])
    front = set(done["label"][expected])
    assert set(table.loc[table["Pareto"] == "*", "Model"]) == front
    assert "t3" not in front
    num = numeric_table(results, search_ctx()).set_index("label")
    assert set(num.index[num["pareto"].astype(bool)]) == front


def test_search_plots_include_design_space_and_error_edf(tmp_path) -> None:
    paths = write_plots(search_results(), search_ctx(), tmp_path)
    names = {p.name for p in paths}
    for plot in ("design_space", "error_edf", "objectives", "ap_vs_latency"):
        assert {f"{plot}.png", f"{plot}.svg"} <= names
    for path in paths:
        assert path.stat().st_size > 0
    assert (tmp_path / "design_space.png").read_bytes()[:8] == PNG_MAGIC
