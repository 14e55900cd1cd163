"""``main``: the one UserError boundary, the command set and the ways to start `lab`."""

import argparse
import io
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from scaling_lab.cli import (
    bench_commands,
    latency_commands,
    main,
    make_parser,
    model_commands,
    sweep_commands,
    train_commands,
    weights_commands,
)
from scaling_lab.data.errors import DataError
from scaling_lab.errors import UserError
from scaling_lab.spec.errors import SpecError
from scaling_lab.train.checkpoint import CheckpointError
from tests.helpers.cli import ROOT, run_lab

# command -> (its module, the function it runs, a command line that parses)
COMMANDS = {
    "zoo": (model_commands, "_cmd_zoo", ["zoo"]),
    "blocks": (model_commands, "_cmd_blocks", ["blocks"]),
    "profile": (model_commands, "_cmd_profile", ["profile", "yolov7"]),
    "show": (model_commands, "_cmd_show", ["show", "yolov7"]),
    "fuse-check": (model_commands, "_cmd_fuse_check", ["fuse-check", "yolov7"]),
    "bench": (bench_commands, "_cmd_bench", ["bench", "yolov7"]),
    "export": (bench_commands, "_cmd_export", ["export", "yolov7", "--onnx", "m.onnx"]),
    "latency-table": (
        latency_commands,
        "_cmd_build",
        ["latency-table", "build", "--models", "yolov7", "--out", "t.json"],
    ),
    "import": (model_commands, "_cmd_import", ["import", "c.yaml"]),
    "data": (train_commands, "_cmd_data_synth", ["data", "synth", "--out", "d"]),
    "train": (train_commands, "_cmd_train", ["train"]),
    "eval": (train_commands, "_cmd_eval", ["eval", "--weights", "w.pt", "--data", "d"]),
    "sweep": (sweep_commands, "_cmd_sweep", ["sweep", "e.yaml"]),
    "calibrate": (sweep_commands, "_cmd_calibrate", ["calibrate", "e.yaml"]),
    "report": (sweep_commands, "_cmd_report", ["report", "e.yaml"]),
    "convert-weights": (
        weights_commands,
        "_cmd_convert_weights",
        ["convert-weights", "c.pt", "--model", "yolov7", "--out", "o.pt"],
    ),
}


def _raising(exc: BaseException):
    def command(args: argparse.Namespace) -> int:
        raise exc

    return command


def _subcommands(parser: argparse.ArgumentParser) -> list[str]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return list(action.choices)


def test_commands_keep_their_order():
    """``lab --help`` lists the commands as it always has; the table above covers them all."""
    assert _subcommands(make_parser()) == list(COMMANDS)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_user_error_from_any_command_is_one_line_exit_2(command, monkeypatch, capsys):
    module, name, argv = COMMANDS[command]
    error = UserError("refused\n  over two lines", source="in.yaml", field="f")
    monkeypatch.setattr(module, name, _raising(error))
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"lab {command}: error: in.yaml: field 'f': refused over two lines\n"


@pytest.mark.parametrize("cls", [SpecError, DataError, CheckpointError])
def test_every_user_error_kind_is_caught(cls, monkeypatch, capsys):
    monkeypatch.setattr(model_commands, "_cmd_blocks", _raising(cls("bad", source="x")))
    assert main(["blocks"]) == 2
    assert capsys.readouterr().err == "lab blocks: error: x: bad\n"


@pytest.mark.parametrize(
    "exc", [RuntimeError("bug"), ValueError("bug"), KeyError("bug"), FileNotFoundError("bug")]
)
def test_other_exceptions_are_bugs_and_propagate(exc, monkeypatch, capsys):
    """UserError is a ValueError: a plain ValueError must still keep its traceback."""
    monkeypatch.setattr(train_commands, "_cmd_train", _raising(exc))
    with pytest.raises(type(exc)):
        main(["train"])
    assert capsys.readouterr().err == ""


def test_broken_pipe_exits_quietly(monkeypatch):
    monkeypatch.setattr(model_commands, "_cmd_zoo", _raising(BrokenPipeError()))
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    assert main(["zoo"]) == 0
    assert stderr.closed


def test_ways_to_start_lab_agree():
    """``lab.py``, ``python -m scaling_lab.cli`` (torchrun's way) and the ``lab`` script."""
    (ep,) = entry_points(group="console_scripts", name="lab")
    assert ep.value == "scaling_lab.cli:main" and ep.load() is main
    module = subprocess.run(
        [sys.executable, "-m", "scaling_lab.cli", "blocks"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    script = run_lab("blocks")
    assert module.returncode == script.returncode == 0
    assert module.stdout == script.stdout and "eelan" in script.stdout
