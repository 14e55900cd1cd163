"""A search with baselines and a confirm phase (issue #26), end to end on an embedded Ray: the
base trains beside the designs with the search's seed, the best design and the base train
again with seeds the search never used, and the report leads with the confirmed table."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from scaling_lab.errors import UserError
from scaling_lab.report.sweep_report import write_sweep_report
from scaling_lab.sweep.confirm import best_designs, confirm_seeds, extra_runs_planned
from scaling_lab.sweep.experiment import load_experiment
from scaling_lab.sweep.runner import run_sweep

pytest.importorskip("ray")

SEARCH = """\
description: tiny search with a confirm phase (tests)
base: yolov7-tiny
metrics: [params, gflops, AP]
search:
  space:
    elan1.depth: {type: int, low: 1, high: 4}
    scale.width: {type: float, low: 0.25, high: 0.5, step: 0.25}
  trials: 2
  objectives: {AP50: max, params: min}
  sampler: nsga2
  seed: 3
  constraints: ["params <= 4e6"]   # the designs'; yolov7-tiny (6.2M) trains as the baseline
confirm: {top: 1, seeds: 2}
train:
  data: synth:images=16,size=64
  img_size: 64
  epochs: 1
  batch_size: 4
  nominal_batch: 4
  warmup_min_steps: 0
  seed: 5
  hyp: {warmup_epochs: 0}
resources: {cpu: 1}
max_concurrent: 2
"""


@pytest.fixture(scope="module")
def swept(tmp_path_factory, ray_session):
    root = tmp_path_factory.mktemp("confirm")
    path = root / "search.yaml"
    path.write_text(SEARCH)
    experiment = load_experiment(path)
    frame = run_sweep(experiment, storage=root / "runs", reports=root / "reports", verbose=0)
    write_sweep_report(experiment, reports=root / "reports", formats=("md",))
    return experiment, frame, root / "reports" / experiment.name


def test_the_base_trains_beside_the_designs_with_the_search_seed(swept):
    experiment, frame, _ = swept
    search = frame[frame["phase"] == "search"]
    assert set(search["seed"]) == {5}  # the settings' seed, designs and base alike
    base = search[search["baseline"] == True]  # noqa: E712 (an object column)
    assert list(base["label"]) == ["yolov7-tiny"] and list(base["status"]) == ["finished"]
    designs = search[search["baseline"] == False]  # noqa: E712
    assert list(designs["label"]) == ["t000", "t001"]
    assert len(frame) == 2 + extra_runs_planned(experiment) == 2 + 1 + 2 + 2


def test_the_confirm_phase_retrains_the_best_design_and_the_base_with_fresh_seeds(swept):
    experiment, frame, out = swept
    confirm = frame[frame["phase"] == "confirm"]
    assert set(confirm["status"]) == {"finished"}
    assert sorted(confirm["seed"]) == [6, 6, 7, 7] == sorted(confirm_seeds({"seed": 5}, 2) * 2)
    assert not set(confirm["seed"]) & set(frame.loc[frame["phase"] == "search", "seed"])
    (top,) = best_designs(frame.to_dict("records"), experiment.search.objectives, 1)
    mine = confirm[confirm["baseline"] == False]  # noqa: E712
    assert set(mine["design_key"]) == {top[0]}
    label = frame.loc[frame["key"] == top[0], "label"].item()
    assert set(mine["label"]) == {label}  # a confirm run carries its design's label
    saved = pd.read_csv(out / "results.csv")
    assert {"phase", "baseline", "design_key"} <= set(saved.columns)

    summary = json.loads((out / "confirm.json").read_text())
    assert {"baselines", "confirmed", "winner", "conclusion", "selection_bias"} <= set(summary)
    (entry,) = summary["confirmed"]
    assert {"key", "label", "seeds", "mean", "std", "vs_base"} <= set(entry)
    assert entry["key"] == top[0] and entry["seeds"] == [6, 7]
    (versus,) = entry["vs_base"]
    assert versus["model"] == "yolov7-tiny" and set(versus) >= {"diff", "ci95", "significant"}
    values = mine.sort_values("seed")["AP50"].to_numpy() * 100
    assert entry["mean"] == pytest.approx(values.mean(), abs=1e-4)
    searched = frame.loc[frame["key"] == top[0], "AP50"].item() * 100
    assert summary["selection_bias"] == pytest.approx(searched - values.mean(), abs=1e-4)


def test_the_report_leads_with_the_conclusion_line(swept):
    _, _, out = swept
    text = (out / "table.md").read_text()
    summary = json.loads((out / "confirm.json").read_text())
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines[1] == f"**Conclusion:** {summary['conclusion']}"
    assert text.index("## Confirmed with fresh seeds") < text.index("## Search")
    search_table = text[text.index("## Search") :]
    assert "yolov7-tiny (baseline)" in search_table and "AP50 vs yolov7-tiny" in search_table


def test_a_resumed_sweep_trains_no_confirm_run_twice(swept, tmp_path):
    experiment, frame, out = swept
    root = out.parent.parent
    again = run_sweep(
        experiment, storage=root / "runs", reports=root / "reports", verbose=0, resume=True
    )
    varies = ["started_at", "finished_at", "wall_s"]
    assert again.drop(columns=varies).equals(frame.drop(columns=varies))


def test_baselines_and_confirm_belong_to_a_search(tmp_path):
    path = tmp_path / "table.yaml"
    path.write_text("base: yolov7-tiny\nvariants: [a, b]\nconfirm: {top: 1, seeds: 2}\n")
    with pytest.raises(UserError, match=r"confirm.*applies to a search"):
        load_experiment(path)
    path.write_text(SEARCH.replace("seeds: 2}", "seeds: 1}"))
    with pytest.raises(UserError, match=r"confirm\.seeds.*from 2"):
        load_experiment(path)
    path.write_text(SEARCH.replace("confirm:", "baselines: [no-such-model]\nconfirm:"))
    with pytest.raises(UserError, match=r"baselines\[0\].*no-such-model"):
        load_experiment(path)


def _row(key: str, ap: float, params: float, status: str = "finished") -> dict:
    return {"key": key, "AP50": ap, "params": params, "status": status, "config": "{}"}


def test_the_designs_confirmed_are_the_front_ranked_by_the_first_objective():
    rows = [
        _row("a", 0.30, 1.0),  # front
        _row("b", 0.50, 3.0),  # front, best AP
        _row("c", 0.40, 4.0),  # dominated by b
        _row("d", 0.60, 9.0, status="stopped"),  # not finished: never confirmed
        {**_row("e", 0.90, 0.5), "baseline": True},  # a baseline is no design
    ]
    chosen = [key for key, _ in best_designs(rows, {"AP50": "max", "params": "min"}, 3)]
    assert chosen == ["b", "a", "c"]  # the front by AP50, then the rest by AP50
