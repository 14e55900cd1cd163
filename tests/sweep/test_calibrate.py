"""``lab calibrate``: which designs it trains, how, and the files it writes."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from scaling_lab.errors import UserError
from scaling_lab.sweep.calibrate import (
    calibration_designs,
    calibration_experiment,
    ranking_metric,
    run_calibration,
    run_table,
    rung_of,
    sample_designs,
    training_settings,
)
from scaling_lab.sweep.experiment import load_experiment

ROOT = Path(__file__).resolve().parents[2]
TINY = """\
base: yolov7-tiny
metrics: [params, AP]
variants:
  - label: base
  - label: narrow
    scale: {width: 0.5, mode: width}
  - label: silu
    overrides: {act: silu}
scheduler: {type: asha, metric: AP50, grace_period: 1}
time_budget_s: 100
train:
  data: synth:images=12,size=64
  img_size: 64
  epochs: 1
  batch_size: 4
  nominal_batch: 4
  warmup_min_steps: 0
  hyp: {warmup_epochs: 0}
resources: {cpu: 1}
max_concurrent: 2
"""


def _load(tmp_path: Path, text: str = TINY, name: str = "tiny_cal.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return load_experiment(path)


def test_a_table_calibrates_its_first_rows_repeated_without_early_stopping(tmp_path):
    experiment = _load(tmp_path)
    designs = calibration_designs(experiment, 2)
    assert [d.label for d in designs] == ["base", "narrow"]
    derived = calibration_experiment(experiment, designs, seeds=3)
    assert derived.name == "tiny_cal-calibration" and derived.seeds == 3
    assert derived.scheduler is None and derived.time_budget_s is None  # every run to the end
    assert list(derived.trial_keys()) == [
        f"{key}-seed{s}" for key in ("00-base", "01-narrow") for s in range(3)
    ]
    assert ranking_metric(experiment) == ("AP50", "max")
    assert rung_of(experiment, "AP50") == ("AP50", 1)  # the scheduler's grace period
    assert len(calibration_designs(experiment, None)) == 3  # default: every row


def test_a_calibration_evaluates_its_rung_under_every_budget(tmp_path):
    """Its scheduler is off, so the calibration itself asks for the rung's evaluation; and
    since evaluation changes no weight, a calibration holds for any evaluation cadence."""
    sparse = TINY.replace("grace_period: 1", "grace_period: 2").replace(
        "epochs: 1", "epochs: 4\n  eval_every: 0\n  eval_epochs: [3]"
    )
    sparse += "budgets:\n  longer: {epochs: 8, eval_epochs: [5]}\n"
    experiment = _load(tmp_path, sparse)
    derived = calibration_experiment(experiment, list(experiment.variants), seeds=2)
    assert derived.train_config()["eval_epochs"] == [2, 3]
    assert derived.train_config("longer")["eval_epochs"] == [2, 5]
    assert experiment.train_config()["eval_epochs"] == [3]  # the source is left alone
    dense = _load(tmp_path, sparse.replace("eval_every: 0", "eval_every: 1"), "dense.yaml")
    assert training_settings(dense, None) == training_settings(experiment, None)
    longer = _load(tmp_path, sparse.replace("epochs: 4", "epochs: 5"), "longer.yaml")
    assert training_settings(longer, None) != training_settings(experiment, None)


def test_a_search_calibrates_designs_drawn_with_its_seed_within_its_constraints():
    experiment = load_experiment(ROOT / "experiments" / "elan_search.yaml")
    designs = sample_designs(experiment, 4)
    assert [d.overrides for d in designs] == [d.overrides for d in sample_designs(experiment, 4)]
    assert len({json.dumps(d.overrides, sort_keys=True) for d in designs}) == 4
    assert set(designs[0].overrides) == set(experiment.search.space)
    from scaling_lab.analyze.profile import profile
    from scaling_lab.models import model_ref
    from scaling_lab.sweep.experiment_graphs import variant_graph

    for design in designs:  # elan_search keeps designs under 4M params
        graph = variant_graph(experiment, design)
        assert profile(model_ref(graph, form=experiment.form)).params <= 4e6
    derived = calibration_experiment(experiment, designs, seeds=2)
    assert derived.search is None and derived.constraints == ()
    assert [v.key for v in derived.variants] == ["00-d0", "01-d1", "02-d2", "03-d3"]
    assert ranking_metric(experiment) == ("AP50", "max")


def test_refusals(tmp_path):
    experiment = _load(tmp_path)
    with pytest.raises(UserError, match="--designs must be at least 2"):
        calibration_designs(experiment, 1)
    with pytest.raises(UserError, match="--seeds must be at least 2"):
        calibration_experiment(experiment, list(experiment.variants), seeds=1)
    untrained = _load(tmp_path, TINY.replace("[params, AP]", "[params]"), "counts.yaml")
    with pytest.raises(UserError, match="collects no AP metric"):
        run_calibration(untrained, storage=tmp_path / "runs", reports=tmp_path / "reports")


def test_run_table_takes_the_rung_from_each_runs_history():
    history = json.dumps({"AP50": [0.1, 0.2, 0.3], "AP": [0.0, 0.1, 0.2]})
    rows = [
        {"label": "a", "seed": 0.0, "status": "finished", "AP50": 0.3, "history": history},
        {"label": "a", "seed": 1.0, "status": "failed", "AP50": None, "history": math.nan},
    ]
    runs = run_table(rows, "AP50", ("AP50", 2))
    assert runs.loc[0, ["seed", "final", "rung"]].tolist() == [0, 0.3, 0.2]
    assert math.isnan(runs.loc[1, "final"]) and math.isnan(runs.loc[1, "rung"])
    late = run_table(rows[:1], "AP50", ("AP50", 5))  # no such epoch: no rung value
    assert math.isnan(late.loc[0, "rung"])


@pytest.mark.slow
def test_lab_calibrate_end_to_end(tmp_path):
    """K = 2 designs x N = 2 seeds, one epoch at 64 px, through the CLI."""
    (tmp_path / "tiny_cal.yaml").write_text(TINY)
    run = subprocess.run(
        [sys.executable, "-m", "scaling_lab.cli", "calibrate", "tiny_cal.yaml", "--designs", "2",
         "--seeds", "2", "--num-cpus", "2", "--storage", "runs", "--reports", "reports"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    out = tmp_path / "reports" / "tiny_cal"
    report = json.loads((out / "calibration.json").read_text())
    for key in ("icc", "kendall_tau_seeds", "kendall_tau_rung_final", "per_design", "wall_s"):
        assert key in report
    assert (report["designs"], report["seeds"], report["metric"]) == (2, 2, "AP50")
    assert (report["rung_metric"], report["rung_epoch"], report["runs"]) == ("AP50", 1, 4)
    assert [d["label"] for d in report["per_design"]] == ["base", "narrow"]
    assert "# Calibration: tiny_cal" in (out / "calibration.md").read_text()
    assert (out / "calibration.png").read_bytes()[:4] == b"\x89PNG"
    runs = pd.read_csv(tmp_path / "reports" / "tiny_cal-calibration" / "results.csv")
    assert list(runs["status"]) == ["finished"] * 4 and list(runs["seed"]) == [0, 1, 0, 1]
    assert runs["history"].map(lambda text: len(json.loads(text)["AP50"])).tolist() == [1] * 4
    assert run.stdout.count(" finished ") == 4  # a line per run (stdout is not a terminal)
    assert "tiny_cal: icc " in run.stdout and run.stderr == ""


def test_a_search_priced_in_auto_latency_resolves_its_table_before_drawing_designs(
    tmp_path, monkeypatch
):
    """elan_search.yaml's `latency: {table: auto}`: the draw within its constraints needs the
    machine's table, which `lab calibrate` once failed to read ("auto: no such file")."""
    from scaling_lab.sweep import latency_auto

    experiment = load_experiment(ROOT / "experiments" / "elan_search.yaml")
    assert experiment.latency.table == latency_auto.AUTO
    seen = []

    def resolved(exp, progress=None):
        seen.append(exp.latency.table)
        raise KeyboardInterrupt  # stop before any training

    monkeypatch.setattr(latency_auto, "resolve_auto_table", resolved)
    with pytest.raises(KeyboardInterrupt):
        run_calibration(experiment, storage=tmp_path / "runs", reports=tmp_path / "reports")
    assert seen == [latency_auto.AUTO]
