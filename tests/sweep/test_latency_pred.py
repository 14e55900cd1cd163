"""``latency_pred`` in experiments: a metric, objective and constraint read from a latency
table (hand-made here: nothing is timed), and its errors naming the experiment file and key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from scaling_lab.analyze.latency_predict import predict_latency
from scaling_lab.analyze.latency_table import load_table
from scaling_lab.errors import UserError
from scaling_lab.models import get_block_graph, get_layer_graph, model_ref
from scaling_lab.sweep import trial as trial_module
from scaling_lab.sweep.experiment import load_experiment
from scaling_lab.sweep.materialize import Overrides, materialize
from scaling_lab.sweep.trial import Trial, TrialContext
from scaling_lab.sweep.trial_keys import params_key
from tests.helpers.latency_fakes import hand_table, write_table

FITS = {"*": {"coef": [2e-8, 1e-8, 0.01], "n": 40, "cv_mape": 10.0}}

SEARCH = """\
base: yolov7-tiny
metrics: [params, latency_pred]
latency: {table: t.json}
search:
  space:
    img_size: {type: categorical, choices: [64]}
    elan2.depth: {type: int, low: 1, high: 4}
    scale.width: {type: float, low: 0.25, high: 0.5, step: 0.25}
  trials: 4
  objectives: {params: min, latency_pred: min}
  constraints: ["latency_pred <= BOUND"]
"""


def write(tmp_path: Path, text: str, bound: float = 30.0) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(textwrap.dedent(text).replace("BOUND", f"{bound:g}"))
    return path


@pytest.fixture
def table_file(tmp_path) -> Path:
    """A table holding yolov7-tiny at 64 px; other designs' new ops go to its fallback."""
    graph = get_layer_graph("yolov7-tiny", deploy=True, img_size=64)
    return Path(write_table(tmp_path / "t.json", hand_table(graph, fallback=FITS)))


def test_latency_pred_is_a_metric_objective_and_constraint(tmp_path, table_file):
    exp = load_experiment(write(tmp_path, SEARCH))
    assert exp.latency.table == str(table_file.resolve())
    assert exp.search.objectives == {"params": "min", "latency_pred_ms": "min"}
    assert [str(c) for c in exp.constraints] == ["latency_pred_ms <= 30"]
    assert "latency_pred_ms" in exp.columns(profile_only=True)
    exp.check_runnable(profile_only=True)
    assert exp.latency.given() == {}  # the table is not a `lab bench` option


def test_latency_pred_needs_a_table_key(tmp_path):
    path = write(tmp_path, SEARCH.replace("latency: {table: t.json}\n", ""))
    with pytest.raises(UserError, match=r"exp\.yaml: field 'latency\.table': metric latency_pred"):
        load_experiment(path)


def test_a_missing_or_mismatched_table_names_the_file_and_key(tmp_path, table_file):
    path = write(tmp_path, SEARCH.replace("t.json", "gone.json"))
    with pytest.raises(UserError) as info:
        load_experiment(path).check_runnable(profile_only=True)
    message = str(info.value)
    assert message.startswith(f"{path}: field 'latency.table': ")
    assert "gone.json: cannot read latency table: no such file" in message
    path = write(tmp_path, SEARCH.replace("{table: t.json}", "{table: t.json, batch: 4}"))
    with pytest.raises(UserError, match=r"another protocol: batch 1 \(asked: 4\)"):
        load_experiment(path).check_runnable(profile_only=True)


def test_a_constraint_on_latency_pred_needs_the_metric(tmp_path, table_file):
    path = write(tmp_path, SEARCH.replace("[params, latency_pred]", "[params]"))
    with pytest.raises(UserError, match="constraint on unknown metric 'latency_pred'"):
        load_experiment(path)


def _design(params: dict) -> float:
    """The prediction for one design, computed here from the table directly."""
    graph = materialize(get_block_graph("yolov7-tiny"), Overrides.from_paths(params))
    table = load_table(Path("t.json").resolve())
    return predict_latency(get_layer_graph(model_ref(graph, form="deploy")), table).total_ms


def test_a_trial_predicts_and_applies_the_constraint(tmp_path, table_file, monkeypatch):
    monkeypatch.chdir(tmp_path)
    small = {"elan2.depth": 1, "img_size": 64, "scale.width": 0.25}
    large = {"elan2.depth": 4, "img_size": 64, "scale.width": 0.5}
    lo, hi = _design(small), _design(large)
    assert lo < hi
    exp = load_experiment(write(tmp_path, SEARCH, bound=(lo + hi) / 2))
    reported = []
    monkeypatch.setattr(trial_module, "_report", lambda row, ctx: reported.append(dict(row)))
    ctx = TrialContext(
        exp, str(tmp_path / "runs"), str(tmp_path / "reports"), str(tmp_path), profile_only=True
    )
    for params in (small, large):
        Trial(dict(params), ctx).run()
    rows = {row["key"]: row for row in reported}
    first, second = rows[params_key(small)], rows[params_key(large)]
    assert first["latency_pred_ms"] == pytest.approx(lo, abs=1e-4) and first["status"] == "finished"
    assert second["latency_pred_ms"] == pytest.approx(hi, abs=1e-4)
    assert second["status"] == "infeasible" and "latency_pred_ms <=" in second["error"]
    assert first["latency_pred_estimated"] > 0  # new widths: estimated by the fallback


@pytest.mark.slow
def test_a_profile_only_search_under_a_latency_budget(tmp_path, table_file, monkeypatch):
    """The same through Ray Tune and Optuna (`lab sweep --profile-only`)."""
    pytest.importorskip("ray")
    from scaling_lab.sweep.runner import run_sweep

    monkeypatch.chdir(tmp_path)
    bound = (
        _design({"elan2.depth": 1, "img_size": 64, "scale.width": 0.25})
        + _design({"elan2.depth": 4, "img_size": 64, "scale.width": 0.5})
    ) / 2
    exp = load_experiment(write(tmp_path, SEARCH, bound=bound))
    frame = run_sweep(
        exp, profile_only=True, storage=tmp_path / "runs", reports=tmp_path / "r", verbose=0
    )
    assert len(frame) >= 2 and frame["latency_pred_ms"].notna().all()
    over = frame["latency_pred_ms"] > bound
    assert (frame.loc[over, "status"] == "infeasible").all()
    assert (frame.loc[~over, "status"] == "finished").all()
