"""Latency tables: op configuration keys, the table file, building and resuming a build.

Nothing here asserts a speed: real timings run with 1-3 calls on tiny ops; the builds that
test resuming use a fake timer."""

from __future__ import annotations

import dataclasses
import json

import pytest

from scaling_lab.analyze import latency_measure
from scaling_lab.analyze.complexity import count_graph
from scaling_lab.analyze.latency_build import Source, build_table
from scaling_lab.analyze.latency_table import TableError, check_protocol, load_table
from scaling_lab.analyze.op_config import (
    RunSettings,
    distinct_configs,
    graph_configs,
    layer_config,
)
from scaling_lab.layers.layer_graph import Layer, LayerGraph
from scaling_lab.models import get_layer_graph, model_ref
from scaling_lab.ops import Concat, Conv, MaxPool, Shape
from tests.helpers.latency_fakes import FakeTimer, hand_table, write_table

RUN = RunSettings()


def two_conv_graph() -> LayerGraph:
    """input -> a, b (the same conv on the same input) -> concat -> c (another conv)."""
    x = Shape(3, 16, 16, 1)
    conv = Conv(3, 8, 3, 1, 1, bn=False, bias=True)
    out = Shape(8, 16, 16, 1)
    layers = (
        Layer("a", conv, ("input",), out, "a"),
        Layer("b", conv, ("input",), out, "b"),
        Layer("cat", Concat(), ("a", "b"), Shape(16, 16, 16, 1), "cat"),
        Layer("c", Conv(16, 8, 1, bn=False, bias=True), ("cat",), out, "c"),
    )
    return LayerGraph("two-conv", layers, x, form="deploy")


def deploy(tiny_graph) -> LayerGraph:
    return get_layer_graph(model_ref(tiny_graph, form="deploy"))


# --- configurations ---------------------------------------------------------------------


def test_two_identical_convs_give_one_key():
    graph = two_conv_graph()
    configs = distinct_configs(graph, RUN)
    assert [c.kind for c in configs.values()] == ["conv", "concat", "conv"]
    keys = [c.key for _, c in graph_configs(graph, RUN)]
    assert keys[0] == keys[1] and len(set(keys)) == 3


def test_key_names_everything_that_changes_latency():
    graph = two_conv_graph()
    a = layer_config(graph, graph["a"], RUN)
    assert a.key == (
        "Conv(c_in=3, c_out=8, k=3, s=1, p=1, groups=1, act='silu', bn=False, bias=True) "
        "in=3x16x16 out=8x16x16 fp32 b1 nchw"
    )
    for run in (RunSettings("bf16"), RunSettings(batch=2), RunSettings(layout="nhwc")):
        assert layer_config(graph, graph["a"], run).key != a.key
    other_act = dataclasses.replace(graph["a"], op=dataclasses.replace(graph["a"].op, act="relu"))
    assert layer_config(graph, other_act, RUN).key != a.key


def test_yolov7_tiny_distinct_keys_match_an_independent_count():
    graph = get_layer_graph("yolov7-tiny", deploy=True, img_size=320)
    independent = {
        (
            type(layer.op),
            dataclasses.astuple(layer.op),
            tuple((s.c, s.h, s.w) for s in graph.input_shapes(layer)),
        )
        for layer in graph
    }
    configs = distinct_configs(graph, RUN)
    assert len(configs) == len(independent) == 50
    assert sum(c.kind == "conv" for c in configs.values()) == len(
        {(dataclasses.astuple(x.op), graph.input_shapes(x)[0]) for x in graph if x.kind == "conv"}
    )


def test_features_are_the_op_count_and_the_bytes_it_moves():
    graph = two_conv_graph()
    counts = {c.name: c for c in count_graph(graph).per_layer}
    a = layer_config(graph, graph["a"], RunSettings(batch=2)).features()
    assert a["macs"] == 2 * counts["a"].macs
    assert a["bytes"] == 4 * (2 * (3 * 16 * 16 + 8 * 16 * 16) + counts["a"].params)
    pool = Layer("p", MaxPool(2, 2, 0), ("c",), Shape(8, 8, 8, 2), "p")
    features = layer_config(graph, pool, RUN).features()
    assert features["macs"] == 8 * 8 * 8 * 2 * 2  # window reads: output elements x k x k


def test_fit_groups_refine_convs_by_kernel_stride_and_grouping():
    graph = two_conv_graph()
    assert layer_config(graph, graph["a"], RUN).group == "conv/k3/s1"
    assert layer_config(graph, graph["cat"], RUN).group == "concat"
    dw = dataclasses.replace(graph["c"], op=Conv(16, 16, 3, 2, 1, groups=16))
    assert layer_config(graph, dw, RUN).group == "conv/k3/s2/dw"


# --- the file -------------------------------------------------------------------------


def test_table_round_trips(tmp_path):
    table = hand_table(two_conv_graph())
    path = write_table(tmp_path / "t.json", table)
    again = load_table(path)
    assert again.entries == table.entries and again.protocol == table.protocol
    assert again.complete and again.path == path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not JSON"),
        ('{"format": "other"}', "not a latency table"),
        ('{"format": "scaling_lab.latency_table", "version": 9}', "version 9, this code reads 1"),
        (
            '{"format": "scaling_lab.latency_table", "version": 1, "protocol": {}}',
            "missing the protocol card's device",
        ),
    ],
)
def test_malformed_tables_are_refused_naming_the_file(tmp_path, text, message):
    path = tmp_path / "t.json"
    path.write_text(text)
    with pytest.raises(TableError, match=message) as info:
        load_table(path)
    assert str(path) in str(info.value)


def test_a_bad_entry_is_named(tmp_path):
    data = hand_table(two_conv_graph()).to_dict()
    key = next(iter(data["entries"]))
    data["entries"][key]["ms"] = -1
    path = tmp_path / "t.json"
    path.write_text(json.dumps(data))
    with pytest.raises(TableError, match=r"field 'entries\[Conv\(c_in=3.*\.ms': must be a finite"):
        load_table(path)


def test_missing_and_incomplete_tables(tmp_path):
    with pytest.raises(TableError, match="cannot read latency table: no such file"):
        load_table(tmp_path / "none.json")
    table = hand_table(two_conv_graph())
    table.complete = False
    path = write_table(tmp_path / "t.json", table)
    with pytest.raises(TableError, match="build did not finish"):
        load_table(path)
    assert load_table(path, complete=False).entries == table.entries


def test_protocol_mismatch_names_the_fields():
    table = hand_table(two_conv_graph())
    check_protocol(table, {"device": "cpu", "dtype": "fp32"}, what="flags")
    with pytest.raises(TableError, match=r"device 'cpu' \(asked: 'cuda:0'\); dtype 'fp32'"):
        check_protocol(table, {"device": "cuda:0", "dtype": "fp16"}, what="flags")


# --- building --------------------------------------------------------------------------


@pytest.fixture
def quick_timing(monkeypatch):
    """Real timing with the fewest calls (the tests check plumbing, not speed)."""
    for name, value in (
        ("WARMUP_ROUNDS", 1),
        ("MIN_ROUNDS", 2),
        ("MAX_ROUNDS", 2),
        ("CHAIN", 3),
        ("OVERHEAD_ITERS", 2),
        ("OVERHEAD_ROUNDS", 1),
    ):
        monkeypatch.setattr(latency_measure, name, value)


def test_build_times_every_distinct_config_once(tmp_path, quick_timing, tiny_graph):
    graph = deploy(tiny_graph)
    out = tmp_path / "t.json"
    table = build_table([Source("tiny", graph)], out, threads=1, progress=False)
    assert set(table.entries) == set(distinct_configs(graph, RUN))
    loaded = load_table(out)
    assert loaded.complete and loaded.protocol["threads"] == 1
    assert loaded.protocol["dtype"] == "fp32" and "rounds" in loaded.protocol["cache"]
    assert {"per_op_ms", "model_ms"} <= set(loaded.overheads)
    detect = [e for e in loaded.entries.values() if e["kind"] == "detect"]
    assert len(detect) == 1 and "decode_ms" in detect[0]
    assert all(e["n"] == 2 for e in loaded.entries.values())  # one sample per round
    assert loaded.sources == [
        {"model": "tiny", "img_size": 64, "layers": len(graph), "configs": len(table.entries)}
    ]
    assert "*" in loaded.fallback and loaded.fallback["*"]["n"] == len(table.entries)


def test_a_killed_build_resumes_with_only_what_is_missing(tmp_path, monkeypatch, tiny_graph):
    small, large = (
        deploy(tiny_graph),
        get_layer_graph(model_ref(tiny_graph, form="deploy"), img_size=128),
    )
    sources = [Source("small", small), Source("large", large)]
    out = tmp_path / "t.json"
    first = FakeTimer(stop_at=1).install(monkeypatch)  # killed while timing the second model
    with pytest.raises(KeyboardInterrupt):
        build_table(sources, out, threads=1, progress=False)
    partial = load_table(out, complete=False)
    assert not partial.complete and set(partial.entries) == set(distinct_configs(small, RUN))
    second = FakeTimer().install(monkeypatch)
    table = build_table(sources, out, threads=1, progress=False)
    everything = set(distinct_configs(small, RUN)) | set(distinct_configs(large, RUN))
    assert set(second.measured) == everything - set(first.measured) and second.sources == 1
    assert table.complete and set(table.entries) == everything
    third = FakeTimer().install(monkeypatch)  # complete and covering: nothing to measure
    build_table(sources, out, threads=1, progress=False)
    assert third.measured == [] and third.sources == 0


def test_a_table_of_another_protocol_is_refused(tmp_path, monkeypatch):
    out = tmp_path / "t.json"
    FakeTimer().install(monkeypatch)
    build_table([Source("g", two_conv_graph())], out, threads=1, progress=False)
    with pytest.raises(TableError, match=r"another protocol: threads 1 \(asked: 2\) .*--fresh"):
        build_table([Source("g", two_conv_graph())], out, threads=2, progress=False)
    fresh = build_table([Source("g", two_conv_graph())], out, threads=2, fresh=True)
    assert load_table(out).protocol["threads"] == fresh.protocol["threads"] == 2
