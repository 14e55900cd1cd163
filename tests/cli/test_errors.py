"""Bad input to `lab`, as a user types it: one line on stderr, exit status 2, no traceback."""

import contextlib
from pathlib import Path

import pytest

from scaling_lab.cli import main
from tests.helpers.cli import ROOT, run_lab

TABLE3 = ROOT / "experiments" / "table3_scaling.yaml"


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


def test_report_without_results_is_one_line_exit_2(tmp_path):
    """The sweep store's UserError reaches the user as one line (it was a traceback)."""
    result = run_lab("report", str(TABLE3), "--reports", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr == (
        f"lab report: error: {tmp_path / 'table3_scaling' / 'results.csv'}: "
        "no results here: run `lab sweep` first\n"
    )


def test_train_into_a_used_run_folder_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "weights").mkdir(parents=True)
    (run / "weights" / "last.pt").write_bytes(b"")
    argv = ["train", "--model", "yolov7-tiny", "--data", "synth", "--out", str(run)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lab train: error: {run}: already holds a run")
    assert err.count("\n") == 1


@pytest.mark.parametrize("command", ["eval", "train"])
def test_missing_checkpoint_is_refused(command, tmp_path, capsys):
    missing: Path = tmp_path / "none.pt"
    if command == "eval":
        argv = ["eval", "--weights", str(missing), "--data", "synth"]
    else:
        argv = ["train", "--resume", str(missing)]
    assert main(argv) == 2
    assert capsys.readouterr().err == f"lab {command}: error: {missing}: no checkpoint here\n"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--recipe", "mine"], "argument --recipe: invalid choice: 'mine'"),
        (["--hyp-file", "HYP"], "HYP: field 'anchors': unknown hyper-parameter 'anchors'"),
        (["--hyp-file", "MISSING"], "MISSING: cannot read hyp file"),
    ],
)
def test_bad_recipe_flags_are_one_line(tmp_path, capsys, flags, message):
    hyp = tmp_path / "hyp.yaml"
    hyp.write_text("lr0: 0.01\nanchors: 3\n")
    flags = [
        str(hyp) if f == "HYP" else str(tmp_path / "none.yaml") if f == "MISSING" else f
        for f in flags
    ]
    message = message.replace("HYP", str(hyp)).replace("MISSING", str(tmp_path / "none.yaml"))
    argv = ["train", "--model", "yolov7-tiny", "--data", "synth", "--out", str(tmp_path / "r")]
    with pytest.raises(SystemExit) if flags[0] == "--recipe" else _no_exit():
        assert main([*argv, *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") <= 2 and "Traceback" not in err


def _no_exit():
    return contextlib.nullcontext()
