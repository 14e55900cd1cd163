"""An experiment's report context: the paper's rows found by label or paper_row."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from scaling_lab.report.sweep_report import _size_note, report_context
from scaling_lab.sweep.experiment import load_experiment
from scaling_lab.sweep.paper_figures import paper_peers, paper_rows

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


def test_table3_context_carries_the_papers_rows_in_percent():
    ctx = report_context(load_experiment(EXPERIMENTS / "table3_scaling.yaml", check_graphs=False))
    assert ctx.title.startswith("Table 3: ")
    assert ctx.labels[0] == ctx.baseline == "base (v7-X light)"
    assert ctx.against == "compound (v7-X)"
    assert ctx.paper_rows["compound (v7-X)"] == {
        "params_m": 71.3, "gflops": 189.9, "img_size": 640.0, "AP": 52.9, "AP50": 71.1, "AP75": 57.5
    }  # fmt: skip


def test_paper_rows_prefer_val_ap_and_table2_gives_fps():
    table2 = paper_rows(2)
    assert table2["YOLOv7"]["AP"] == 51.2  # val (test-dev: 51.4)
    assert table2["YOLOX-S"]["fps"] == 102
    assert table2["YOLOv5-N (r6.1)"]["AP"] == 28.0  # val only
    assert {p["model"] for p in paper_peers()} >= {"YOLOv7", "YOLOR-CSP", "PPYOLOE-L"}


def test_table5_context_maps_a_row_through_paper_row():
    exp = load_experiment(EXPERIMENTS / "table5_represidual.yaml", check_graphs=False)
    ctx = report_context(exp)
    assert ctx.paper_rows["RepRCSP (YOLOR-CSP)"]["AP"] == 50.91
    assert ctx.paper_rows["RepRCSP"]["AP"] == 54.85


def test_size_note_says_when_ap_was_measured_at_another_size():
    frame = pd.DataFrame({"img_size": [640, 640], "train_img_size": [128, None]})
    assert _size_note(frame) == (
        "Size, #Param. and FLOPs: the model at 640 px; AP: trained and evaluated at 128 px."
    )
    assert _size_note(pd.DataFrame({"img_size": [640], "train_img_size": [640]})) == ""
    assert _size_note(pd.DataFrame({"img_size": [640]})) == ""


def test_latency_plot_places_the_papers_peers_at_their_v100_latency(tmp_path):
    import math

    from matplotlib.figure import Figure

    from scaling_lab.report.sweep_plots import _draw_peers, _v100_latency_ms

    assert math.isclose(_v100_latency_ms({"fps": 161}), 1000 / 161)
    assert math.isnan(_v100_latency_ms({"fps": None}))
    ax = Figure().add_subplot()
    drawn = _draw_peers(ax, paper_peers(), _v100_latency_ms)
    assert drawn == sum(1 for p in paper_peers() if p.get("fps"))
    xs = sorted(x for c in ax.collections for x, _ in c.get_offsets())
    assert math.isclose(xs[0], 1000 / max(p["fps"] for p in paper_peers()))
