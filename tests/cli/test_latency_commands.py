"""`lab latency-table build | show` and `lab profile --latency-table`: output and errors
(builds use a fake timer: these tests check the command, not the clock)."""

from __future__ import annotations

import json

import pytest

from scaling_lab.analyze.latency_predict import predict_latency
from scaling_lab.analyze.latency_table import load_table
from scaling_lab.cli import main
from scaling_lab.models import get_layer_graph
from tests.helpers.cli import ROOT, run_lab, run_lab_here
from tests.helpers.latency_fakes import FakeTimer, hand_table, protocol, write_table

MINI = str(ROOT / "docs" / "examples" / "mini-elan.yaml")


@pytest.fixture(scope="module")
def mini_table(tmp_path_factory) -> str:
    """A complete hand-made table holding every op of mini-elan's deploy graph at 64 px."""
    graph = get_layer_graph(MINI, deploy=True, img_size=64)
    return write_table(tmp_path_factory.mktemp("t") / "mini.json", hand_table(graph))


def test_profile_adds_the_predicted_latency(mini_table, capsys):
    assert main(["profile", MINI, "--img", "64", "--latency-table", mini_table, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    graph = get_layer_graph(MINI, deploy=True, img_size=64)
    expected = predict_latency(graph, load_table(mini_table)).total_ms
    assert data["latency_pred_ms"] == pytest.approx(expected, abs=1e-4)
    assert data["latency_pred"]["looked_up"] == len(graph)
    assert data["latency_pred"]["estimated"] == 0 and data["latency_pred"]["table"] == mini_table
    assert data["params"] > 0  # the profile itself is unchanged


def test_profile_per_node_prediction(mini_table, capsys):
    args = ["profile", MINI, "--img", "64", "--latency-table", mini_table, "--per-node"]
    assert main([*args, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    nodes = {n["node"]: n["latency_pred_ms"] for n in data["per_node"]}
    assert sum(nodes.values()) == pytest.approx(
        data["latency_pred_ms"] - data["latency_pred"]["model_ms"], abs=1e-3
    )
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "pred ms" in text and "latency (predicted)" in text and "0 estimated" in text


def test_an_unknown_size_is_estimated_and_says_so(tmp_path, capsys):
    graph = get_layer_graph(MINI, deploy=True, img_size=64)
    fits = {"*": {"coef": [1e-8, 1e-8, 0.01], "n": 30, "cv_mape": 12.5}}
    path = write_table(tmp_path / "t.json", hand_table(graph, fallback=fits))
    assert main(["profile", MINI, "--img", "96", "--latency-table", path]) == 0
    out = capsys.readouterr().out
    assert "0 ops looked up" in out and "estimated by the fallback fit: * (CV MAPE 12.5%)" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--latency-table", "nope.json"], "nope.json: cannot read latency table: no such file"),
        (["--latency-table", "BAD"], "not JSON"),
        (
            ["--latency-table", "TABLE", "--dtype", "bf16"],
            "measured under another protocol: dtype 'fp32' (asked: 'bf16')",
        ),
        (
            ["--latency-table", "TABLE", "--device", "cuda"],
            "device 'cpu' (asked: 'cuda:0')",
        ),
    ],
)
def test_profile_table_errors_are_one_line(tmp_path, mini_table, args, message):
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": ')
    args = [str(bad) if a == "BAD" else mini_table if a == "TABLE" else a for a in args]
    result = run_lab("profile", MINI, "--img", "64", *args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_build_and_show(tmp_path, monkeypatch, capsys):
    timer = FakeTimer().install(monkeypatch)
    out = tmp_path / "t.json"
    args = ["latency-table", "build", "--models", MINI, "--img", "64,96", "--threads", "1"]
    assert main([*args, "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    table = load_table(out)
    assert (
        summary["entries"] == summary["measured_now"] == len(table.entries) == len(timer.measured)
    )
    assert [s["model"] for s in table.sources] == [f"{MINI}@64", f"{MINI}@96"]
    assert main([*args, "--out", str(out)]) == 0  # again: everything is there already
    assert "(0 measured now)" in capsys.readouterr().out
    assert main(["latency-table", "show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "entries    concat" in shown and "overheads  model call" in shown


def test_build_samples_a_search_space(tmp_path, monkeypatch, capsys):
    FakeTimer().install(monkeypatch)
    out = tmp_path / "t.json"
    space = str(ROOT / "search_spaces" / "elan_tiny.yaml")
    args = ["latency-table", "build", "--space", space, "--space-base", "yolov7-tiny"]
    assert main([*args, "--space-samples", "3", "--img", "64", "--out", str(out), "--json"]) == 0
    sources = load_table(out).sources
    assert len(sources) == 3 and all(s["model"].startswith("s-") for s in sources)
    assert all(s["model"].endswith("@64") for s in sources)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give --models and/or --space"),
        (["--space", "search_spaces/elan_tiny.yaml"], "--space needs a base model"),
        (["--models", "yolov7-tiny", "--dtype", "fp16"], "fp16 is not benchmarked on the CPU"),
        (["--models", "yolov7-tiny", "--device", "tpu"], "unknown device 'tpu'"),
        (["--models", "yolov9"], "unknown model 'yolov9'"),
        (["--models", "yolov7-tiny", "--img", "0"], "argument --img: expected a positive"),
        (["--models", "yolov7-tiny", "--space-samples", "-2"], "argument --space-samples"),
    ],
)
def test_build_errors_are_one_line(tmp_path, args, message):
    # in this process: a fresh one per case cost 4 s of torch import (run_lab's own one-line
    # guarantee is tested in tests/cli/test_errors.py)
    result = run_lab_here("latency-table", "build", *args, "--out", str(tmp_path / "t.json"))
    assert result.returncode == 2
    assert message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_resuming_a_table_of_another_protocol_is_refused(tmp_path):
    path = tmp_path / "t.json"
    table = hand_table(get_layer_graph(MINI, deploy=True, img_size=64))
    table.protocol = protocol(threads=3)
    write_table(path, table)
    result = run_lab(
        "latency-table", "build", "--models", MINI, "--img", "64", "--threads", "1",
        "--out", str(path),
    )  # fmt: skip
    assert result.returncode == 2 and "another protocol" in result.stderr
    assert "threads 3 (asked: 1)" in result.stderr and "--fresh" in result.stderr
