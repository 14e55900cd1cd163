"""The result columns are declared once (``scaling_lab/sweep/columns.py``): every field a trial
writes is declared, and the store, the experiment checks, the table and the plots read the
declaration (a changed declaration flows to results.csv, a header and an axis label)."""

from __future__ import annotations

import ast
import dataclasses
import typing
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.axes import Axes

from scaling_lab.eval_protocol import AP_KEYS
from scaling_lab.report.sweep_plots import plot_ap_vs_flops
from scaling_lab.report.sweep_table import ReportContext
from scaling_lab.report.sweep_table_render import paper_table
from scaling_lab.sweep import columns
from scaling_lab.sweep import trial as trial_module
from scaling_lab.sweep.columns import COLUMNS, PARAM_PREFIX, Column, declared
from scaling_lab.sweep.experiment import load_experiment
from scaling_lab.sweep.experiment_format import METRICS, Metric
from scaling_lab.sweep.store import TrialStore, results_frame
from scaling_lab.sweep.trial import Trial, TrialContext

SWEEP = Path(columns.__file__).parent


def _written_keys(path: Path) -> set[str]:
    """The constant row fields a module writes: ``row = {...}`` keys, ``row["x"] = ...``
    and ``row.update(x=...)`` (also through ``self.row``)."""

    def is_row(node: ast.expr) -> bool:
        return (isinstance(node, ast.Name) and node.id == "row") or (
            isinstance(node, ast.Attribute) and node.attr == "row"
        )

    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            value = node.value
            if any(is_row(t) for t in targets) and isinstance(value, ast.Dict):
                found |= {k.value for k in value.keys if isinstance(k, ast.Constant)}
        for target in targets:
            for part in ast.walk(target):
                subscript = isinstance(part, ast.Subscript) and is_row(part.value)
                if subscript and isinstance(part.slice, ast.Constant):
                    found.add(part.slice.value)
        call = isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        if call and node.func.attr == "update" and is_row(node.func.value):
            found |= {kw.arg for kw in node.keywords if kw.arg}
    return found


def test_every_field_the_trial_and_the_driver_write_is_declared():
    written = _written_keys(SWEEP / "trial.py") | _written_keys(SWEEP / "runner.py")
    assert len(written) > 30  # the scan sees the row (a vacuous scan would pass anything)
    assert written - {c.name for c in COLUMNS} == set()
    assert all(declared(key) is not None for key in AP_KEYS)  # written in a loop


def test_a_profile_only_trials_row_holds_only_declared_fields(tmp_path, monkeypatch):
    path = tmp_path / "exp.yaml"
    path.write_text("base: yolov7-tiny\nmetrics: [params, gflops]\nvariants: [base]\n")
    experiment = load_experiment(path)
    monkeypatch.setattr(trial_module, "_report", lambda row, ctx: None)
    store = str(tmp_path / "runs")
    ctx = TrialContext(experiment, store, str(tmp_path / "reports"), str(tmp_path), True)
    Trial({"variant": experiment.variants[0].key}, ctx).run()
    (row,) = TrialStore(store).rows()
    assert row["status"] == "finished" and row["params"] > 0
    assert [key for key in row if declared(key) is None] == []


def test_declarations_are_consistent():
    names = [c.name for c in COLUMNS]
    assert len(names) == len(set(names))
    for name in columns.TABLE_ORDER:
        assert columns.header(name)  # every table column is declared
    assert set(typing.get_args(Metric)) == set(METRICS) == set(columns.METRIC_NAMES)
    assert METRICS["latency"] == ("latency_ms", "fps", "peak_memory_mb")
    assert columns.ALIASES == {"latency": "latency_ms", "latency_pred": "latency_pred_ms"}
    assert columns.measured_at("profile") == ("params", "params_m", "gmacs", "gflops")
    assert declared(f"{PARAM_PREFIX}elan1.depth") is None  # sampled values: by prefix


def _changed(monkeypatch) -> None:
    """gflops with another header and axis label, and a new measured column."""
    gflops = declared("gflops")
    assert gflops is not None
    renamed = dataclasses.replace(gflops, header="GigaFLOPs", axis="giga-FLOPs axis")
    new = Column("energy_j", "profile", numeric=True, metrics=("energy",))
    changed = (*(renamed if c.name == "gflops" else c for c in COLUMNS), new)
    monkeypatch.setattr(columns, "COLUMNS", changed)


def _results() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "label": ["a", "b"],
            "key": ["00-a", "01-b"],
            "order": [0, 1],
            "status": "finished",
            "params": [2e6, 3e6],
            "gmacs": [1.0, 2.0],
            "AP": [0.30, 0.35],
        }
    )


def test_the_store_the_table_and_the_plots_read_the_declaration(tmp_path, monkeypatch):
    frame = results_frame([{"key": "k", "order": 0, "seed": None, "kind": "variant"}])
    assert tuple(frame.columns) == columns.fixed_columns()
    _changed(monkeypatch)
    frame = results_frame([{"key": "k", "order": 0, "seed": None, "kind": "variant"}])
    assert frame.columns[-1] == "energy_j"  # a declared column is a results.csv column
    ctx = ReportContext(experiment="exp", labels=("a", "b"), baseline="a", against="b")
    table = paper_table(_results(), ctx)
    assert "GigaFLOPs" in table.columns and "FLOPs" not in table.columns
    labels: list[str] = []
    monkeypatch.setattr(Axes, "set_xlabel", lambda ax, text, *a, **k: labels.append(text))
    assert plot_ap_vs_flops(_results(), ctx, tmp_path)
    assert labels == ["giga-FLOPs axis"]


@pytest.mark.parametrize("name", [c.name for c in COLUMNS if c.aggregate != "last"])
def test_aggregated_columns_are_numbers(name):
    assert declared(name).numeric  # type: ignore[union-attr]
