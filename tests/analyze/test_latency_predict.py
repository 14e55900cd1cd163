"""Latency prediction from a table, and the fallback fit behind it (no timing here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from scaling_lab.analyze.complexity import count_graph
from scaling_lab.analyze.latency_fit import fit_fallbacks, fit_rows
from scaling_lab.analyze.latency_predict import predict_latency
from scaling_lab.analyze.latency_table import TableError
from scaling_lab.analyze.op_config import RunSettings, layer_config
from scaling_lab.models import get_layer_graph, model_ref
from tests.helpers.latency_fakes import (
    MODEL_MS,
    PER_OP_MS,
    config_ms,
    hand_table,
    write_table,
)

RUN = RunSettings()


@pytest.fixture
def graph(tiny_graph):
    return get_layer_graph(model_ref(tiny_graph, form="deploy"))


def test_prediction_is_the_sum_of_entries_plus_the_measured_overheads(graph):
    table = hand_table(graph)
    predicted = predict_latency(graph, table)
    per_layer = [config_ms(layer_config(graph, layer, RUN)) + PER_OP_MS for layer in graph]
    assert predicted.total_ms == pytest.approx(MODEL_MS + sum(per_layer), rel=1e-12)
    assert predicted.looked_up == len(graph) and predicted.estimated == 0
    assert [x.ms for x in predicted.layers] == pytest.approx(per_layer)
    nodes = predicted.per_node
    assert list(nodes) == list(dict.fromkeys(layer.node for layer in graph))
    assert sum(nodes.values()) == pytest.approx(predicted.total_ms - MODEL_MS)
    assert predicted.fallback_note() == ""


def test_missing_configs_are_estimated_by_their_groups_fit(graph):
    fits = {
        "conv/k3/s1": {"coef": [1e-6, 0.0, 0.5], "n": 9, "cv_mape": 4.0},
        "conv": {"coef": [2e-6, 1e-7, 0.25], "n": 20, "cv_mape": 7.5},
    }
    table = hand_table(graph, drop_kinds=("conv",), fallback=fits)
    predicted = predict_latency(graph, table)
    macs = {c.name: c.macs for c in count_graph(graph).per_layer}
    params = {c.name: c.params for c in count_graph(graph).per_layer}
    expected = MODEL_MS
    for layer in graph:
        if layer.kind != "conv":
            expected += config_ms(layer_config(graph, layer, RUN)) + PER_OP_MS
            continue
        op = layer.op
        if (op.k, op.s, op.groups) == (3, 1, 1):
            expected += 1e-6 * macs[layer.name] + 0.5 + PER_OP_MS
        else:  # no fit for its group (conv/k1/s1, grouped convs...): the kind's
            elements = sum(s.elements for s in graph.input_shapes(layer)) + layer.shape.elements
            moved = 4 * (elements + params[layer.name])
            expected += 2e-6 * macs[layer.name] + 1e-7 * moved + 0.25 + PER_OP_MS
    assert predicted.total_ms == pytest.approx(expected, rel=1e-9)
    convs = sum(layer.kind == "conv" for layer in graph)
    assert predicted.estimated == convs and predicted.looked_up == len(graph) - convs
    assert set(predicted.fallback_cv_mape) == {"conv/k3/s1", "conv"}
    assert "conv/k3/s1 (CV MAPE 4.0%)" in predicted.fallback_note()


def test_a_table_without_any_fit_refuses_what_it_lacks(graph):
    table = hand_table(graph, drop_kinds=("concat",))
    with pytest.raises(TableError, match=r"no entry for Concat\(\) in=.* and no fallback fit"):
        predict_latency(graph, table)


def test_an_incomplete_table_is_refused(graph):
    table = hand_table(graph)
    table.complete = False
    with pytest.raises(TableError, match="did not finish"):
        predict_latency(graph, table)


def _synthetic(coef, n=24, group="conv/k3/s1"):
    rows = []
    for i in range(n):
        macs, moved = 1e6 * (1 + i * 7 % 13), 1e5 * (1 + i * 5 % 11)
        ms = coef[0] * macs + coef[1] * moved + coef[2]
        rows.append({"kind": "conv", "group": group, "ms": ms, "macs": macs, "bytes": moved})
    return rows


def test_the_fit_recovers_known_coefficients():
    coef = (2.5e-8, 4e-7, 0.03)
    fit = fit_rows(_synthetic(coef))
    assert fit["coef"] == pytest.approx(coef, rel=1e-6)
    assert fit["fit_mape"] < 1e-6 and fit["cv_mape"] < 1e-6
    assert fit["features"] == ["macs", "bytes", "const"] and fit["n"] == 24


def test_fits_are_kept_non_negative_and_grouped():
    rows = _synthetic((1e-8, 0.0, 0.0), n=8)
    rows[0]["ms"] *= 3  # noise the least-squares answer would meet with a negative term
    fit = fit_rows(rows)
    assert min(fit["coef"]) >= 0 and fit["cv_mape"] > 0
    entries = {str(i): r for i, r in enumerate(_synthetic((1e-8, 1e-7, 0.01), n=7))}
    entries.update({f"p{i}": {**r, "kind": "maxpool", "group": "maxpool/k2/s2"}
                    for i, r in enumerate(_synthetic((0.0, 1e-7, 0.02), n=2))})  # fmt: skip
    fits = fit_fallbacks(entries)
    assert set(fits) == {"conv/k3/s1", "conv", "*"}  # two maxpools: too few for a fit
    assert fits["*"]["n"] == 9 and fits["conv/k3/s1"]["n"] == 7


def test_prediction_needs_no_torch(tmp_path, graph):
    path = write_table(tmp_path / "t.json", hand_table(graph))
    code = (
        "import sys\n"
        "from scaling_lab.analyze.latency_predict import predict_latency\n"
        "from scaling_lab.analyze.latency_table import load_table\n"
        "from scaling_lab.models import get_layer_graph\n"
        "from scaling_lab.graph.block_graph import build_block_graph\n"
        "from scaling_lab.spec import parse_spec\n"
        "from tests.helpers.specs import TINY_SPEC\n"
        "g = get_layer_graph(build_block_graph(parse_spec(TINY_SPEC)), deploy=True)\n"
        f"p = predict_latency(g, load_table({path!r}))\n"
        "print(p.looked_up == len(g), 'torch' in sys.modules)\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert out.stdout.split() == ["True", "False"]
