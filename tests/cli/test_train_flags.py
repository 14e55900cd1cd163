"""``lab train``'s flags are TrainConfig's fields: same defaults, same choices, same ranges."""

from __future__ import annotations

import argparse
import typing
from dataclasses import fields

import pytest

from scaling_lab.cli.args import OneLineParser
from scaling_lab.cli.train_commands import _add_train_parser, _train_config
from scaling_lab.cli.train_flags import flag_of
from scaling_lab.spec.errors import SpecError
from scaling_lab.train.config import TrainConfig, train_default


@pytest.fixture(scope="module")
def parser() -> argparse.ArgumentParser:
    root = OneLineParser(prog="lab")
    _add_train_parser(root.add_subparsers(dest="command", parser_class=OneLineParser))
    return root


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: a for a in sub.choices["train"]._actions}


def test_no_flags_train_with_the_config_defaults(parser):
    cfg = _train_config(parser.parse_args(["train", "--model", "yolov7-tiny", "--data", "synth"]))
    expected = TrainConfig(model="yolov7-tiny", data="synth", out=cfg.out)
    assert cfg == expected
    assert cfg.epochs == train_default("epochs") == 300
    assert cfg.out.startswith("runs/train/yolov7-tiny")


def test_every_cli_setting_has_its_flag_with_the_fields_choices(parser):
    actions = _actions(parser)
    hints = typing.get_type_hints(TrainConfig)
    cli_fields = [f for f in fields(TrainConfig) if f.metadata.get("cli", True)]
    assert len(cli_fields) >= 25
    for f in cli_fields:
        action = actions[f.name]
        assert flag_of(f.name) in action.option_strings
        literal = [a for a in (hints[f.name], *typing.get_args(hints[f.name]))]
        literal = [a for a in literal if typing.get_origin(a) is typing.Literal]
        if literal:
            assert tuple(action.choices) == typing.get_args(literal[0]), f.name


@pytest.mark.parametrize(
    ("argv", "field", "value"),
    [
        (["--epochs", "7"], "epochs", 7),
        (["--img", "320"], "img_size", 320),
        (["--batch", "4"], "batch_size", 4),
        (["--aux-constraint", "off"], "aux_constraint", False),
        (["--no-aux-head"], "aux_head", False),
        (["--no-autoanchor"], "autoanchor", False),
        (["--deterministic"], "deterministic", True),
        (["--optimizer", "adamw"], "optimizer", "adamw"),
        (["--aux-weight", "0.5"], "aux_weight", 0.5),
        (["--hyp", "lr0=0.02"], "hyp", {"lr0": 0.02}),
        (["--out", "off"], "out", "off"),  # on/off is read as a switch only for a switch
    ],
)
def test_a_flag_sets_its_field(parser, argv, field, value):
    base = ["train", "--model", "yolov7-tiny", "--data", "synth"]
    assert getattr(_train_config(parser.parse_args([*base, *argv])), field) == value


def test_a_value_out_of_the_fields_range_names_the_flag(parser, capsys):
    base = ["train", "--model", "yolov7-tiny", "--data", "synth"]
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--epochs", "0"])
    assert "argument --epochs: expected a positive integer" in capsys.readouterr().err
    with pytest.raises(SpecError, match="unknown hyper-parameter 'lr9'") as info:
        _train_config(parser.parse_args([*base, "--hyp", "lr9=1"]))
    assert info.value.field == "--hyp"
