"""The `lab` command: JSON output, the zoo report, and one-line errors with exit code 2."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scaling_lab import list_models
from scaling_lab.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run_lab(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, str(ROOT / "lab.py"), *args], capture_output=True, text=True, cwd=cwd
    )


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
        "name: mine\nimg_size: 32\nnodes:\n  a: {type: conv, c: 8, k: 3}\n  b: {type: conv, c: 4}\n"
    )
    assert main(["profile", str(spec), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"] == "mine" and data["params"] == (8 * 27 + 16) + (4 * 8 + 8)


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


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["profile", "yolov8"], "unknown model 'yolov8' (did you mean"),
        (
            ["profile", "yolov7", "--img", "650"],
            "input size 650 is not divisible by the model's max stride 32",
        ),
        (["profile", "yolov7", "--img", "-3"], "argument --img: expected a positive integer"),
        (["profile", "yolov7", "--counter", "ptflops"], "argument --counter: invalid choice"),
        (["profile", "yolov7", "--bogus"], "unrecognized arguments: --bogus"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["profile", "missing/spec.yaml"], "missing/spec.yaml: cannot read spec file"),
    ],
)
def test_bad_input_is_one_line_exit_2(args, message):
    result = run_lab(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_bad_spec_file_is_one_line_exit_2(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("nodes:\n  a: {type: conv, c: 8}\n  b: {type: concat, from: [a, zz]}\n")
    result = run_lab("profile", str(spec))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"lab profile: error: {spec}:3: node 'b': field 'from': "
        "unknown input 'zz' (known: input, a, b)"
    )


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


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["profile", "yolov7", "--scale-mode", "compound", "--depth", "0"],
            "argument 'depth' must be > 0",
        ),
        (
            ["profile", "yolov7", "--scale-mode", "width", "--width", "-1"],
            "argument 'width' must be > 0",
        ),
        (["profile", "yolov7", "--depth", "2"], "--depth/--width need --scale-mode"),
        (["show", "yolov7", "--repconv", "elan9.cv3=repconv"], "position 'elan9.cv3' names no"),
        (["show", "yolov7", "--repconv", "sometimes"], "unknown RepConv policy 'sometimes'"),
    ],
)
def test_bad_transforms_are_one_line_errors(args, message):
    result = run_lab(*args)
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_fuse_check_json(capsys):
    assert main(["fuse-check", "yolov7-tiny", "--repconv", "planned", "--img", "64", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is True and data["max_abs_diff"] <= 1e-4 * data["max_abs_output"]
    assert data["params_fused"] == data["params_deploy_expected"] < data["params_training"]
