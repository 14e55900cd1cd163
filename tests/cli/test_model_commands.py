"""`lab zoo`, `blocks`, `profile`, `show` and `fuse-check`: JSON output, tables, transforms."""

import json

import pytest

from scaling_lab import list_models
from scaling_lab.cli import main
from tests.helpers.cli import ROOT, run_lab


def test_profile_json_has_context_and_counts(capsys):
    assert main(["profile", "yolov7", "--deploy", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"] == "yolov7-deploy" and data["img_size"] == 640 and data["deploy"] is True
    assert data["counter"] == "analytic" and data["nc"] == 80
    assert abs(data["params"] / 1e6 - 36.9) < 0.05
    assert data["gflops"] == pytest.approx(2 * data["gmacs"])
    assert abs(data["gflops"] / 104.7 - 1) < 0.005


def test_profile_overrides_and_per_node(capsys):
    assert (
        main(["profile", "yolov7-tiny", "--img", "320", "--nc", "3", "--json", "--per-node"]) == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert data["img_size"] == 320 and data["nc"] == 3 and data["deploy"] is False
    assert sum(n["params"] for n in data["per_node"]) == data["params"]
    assert sum(n["macs"] for n in data["per_node"]) == pytest.approx(data["gmacs"] * 1e9)


def test_profile_thop_counter_per_node_lines_up(capsys):
    assert (
        main(
            [
                "profile",
                "yolov7-tiny",
                "--img",
                "160",
                "--deploy",
                "--counter",
                "thop",
                "--json",
                "--per-node",
            ]
        )
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    nodes = {n["node"]: n for n in data["per_node"]}
    assert data["counter"] == "thop"
    # a conv node: thop counts the weights without the bias add
    stem = nodes[data["per_node"][0]["node"]]
    assert stem["counter_macs"] == stem["macs"] - 80 * 80 * 32


def test_profile_spec_path(tmp_path, capsys):
    spec = tmp_path / "mine.yaml"
    spec.write_text(
        "name: mine\nimg_size: 32\nnc: 1\nanchors: [[10, 13]]\nnodes:\n"
        "  a: {type: conv, c: 8, k: 3}\n  b: {type: conv, c: 4}\n"
        "  head: {type: detect, from: [b], implicit: false}\n"
    )
    assert main(["profile", str(spec), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    head = 4 * 6 + 6  # one anchor x (5 + 1 class) outputs, with bias
    assert data["model"] == "mine" and data["params"] == (8 * 27 + 16) + (4 * 8 + 8) + head


def test_zoo_lists_every_model(capsys):
    assert main(["zoo"]) == 0
    out = capsys.readouterr().out
    for name in (
        "yolov7-tiny",
        "yolov7-tiny-silu",
        "yolov7",
        "yolov7x",
        "yolov7-w6",
        "yolov7-e6",
        "yolov7-d6",
        "yolov7-e6e",
    ):
        assert f"\n{name} " in out


def test_profile_zoo_writes_tables(tmp_path):
    assert main(["profile", "--zoo", "--out", str(tmp_path)]) == 0
    md, csv = (tmp_path / "table.md").read_text(), (tmp_path / "table.csv").read_text()
    assert "| yolov7-e6e" in md and "paper_gflops" in csv
    assert len(csv.strip().splitlines()) == 1 + len(list_models())


def test_blocks_lists_types_with_fields(capsys):
    assert main(["blocks"]) == 0
    out = capsys.readouterr().out
    assert "eelan       [computational]" in out and "cardinality=2" in out
    assert "mp_down     [transition]" in out


def test_readme_example_is_the_shipped_spec_and_builds():
    readme = (ROOT / "README.md").read_text()
    example = (ROOT / "docs/examples/mini-elan.yaml").read_text()
    block = readme.split("```yaml\n# docs/examples/mini-elan.yaml\n", 1)[1].split("```", 1)[0]
    assert block == example
    result = run_lab("profile", "docs/examples/mini-elan.yaml", "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["img_size"] == 320


def test_profile_with_scaling_and_repconv(capsys):
    assert (
        main(
            [
                "profile",
                "yolov7x-base",
                "--scale-mode",
                "compound",
                "--depth",
                "1.5",
                "--width",
                "1.25",
                "--deploy",
                "--json",
            ]
        )
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert abs(data["params"] / 1e6 - 71.3) <= 0.05 and abs(data["gflops"] / 189.9 - 1) < 0.005
    assert main(["profile", "yolov7", "--repconv", "none", "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main(["profile", "yolov7", "--repconv", "planned", "--json"]) == 0
    planned = json.loads(capsys.readouterr().out)
    assert planned["params"] > plain["params"]


def test_show_marks_repconvs_and_dump_round_trips(capsys, tmp_path):
    assert main(["show", "yolov7", "--repconv", "planned"]) == 0
    out = capsys.readouterr().out
    assert "elan [compu]" in out and "cv4:RepConvN" in out and "cv3:RepConv " in out
    assert (
        main(
            [
                "show",
                "yolov7x-base",
                "--scale-mode",
                "depth",
                "--depth",
                "2",
                "--repconv",
                "planned",
                "--dump",
            ]
        )
        == 0
    )
    dumped = tmp_path / "dumped.yaml"
    dumped.write_text(capsys.readouterr().out)
    assert "repconv: planned" in dumped.read_text() and "depth: 8" in dumped.read_text()
    assert main(["profile", str(dumped), "--deploy", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert abs(data["params"] / 1e6 - 69.3) <= 0.05


def test_fuse_check_json(capsys):
    assert main(["fuse-check", "yolov7-tiny", "--repconv", "planned", "--img", "64", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is True and data["max_abs_diff"] <= 1e-4 * data["max_abs_output"]
    assert data["params_fused"] == data["params_deploy_expected"] < data["params_training"]
