"""``lab train``'s flags, generated from ``TrainConfig``'s fields: each flag's name, type,
choices, range, default and help come from the field, so a new setting is one field and the
CLI cannot restate a default or a choice that has drifted."""

from __future__ import annotations

import argparse
import types
import typing
from dataclasses import MISSING, Field, fields
from typing import Any

from scaling_lab.cli.args import bounded, number_in
from scaling_lab.spec.errors import SpecError
from scaling_lab.train.config import TrainConfig, field_types

ON_OFF = ("on", "off")


def _flag(f: Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _base(hint: Any) -> Any:
    """``int | None`` -> ``int``; a Literal stays itself."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return hint


def _default_text(f: Field) -> str:
    if f.metadata.get("shown_default"):
        return f" (default: {f.metadata['shown_default']})"
    if f.default_factory is not MISSING or f.default is MISSING or f.default is None:
        return ""
    value = f.default
    if isinstance(value, bool):
        value = "on" if value else "off"
    return f" (default: {value})"


def _value_type(f: Field, hint: Any) -> Any:
    low, high = f.metadata.get("low"), f.metadata.get("high")
    if hint is int:
        low_int = int(low) if low is not None else -(2**63)
        return bounded(low_int, int(high) if high is not None else 2**63 - 1)
    if hint is float:
        inf = float("inf")
        return number_in(low if low is not None else -inf, high if high is not None else inf)
    return str


def add_train_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field the CLI sets (``cli`` metadata); every default is
    None so that ``config_settings`` passes on only what the user gave."""
    hints = field_types()
    for f in fields(TrainConfig):
        if not f.metadata.get("cli", True) or f.name == "hyp":
            continue
        hint, flag, help_text = _base(hints[f.name]), _flag(f), f.metadata.get("help", "")
        if hint is bool and flag.startswith("--no-"):
            parser.add_argument(
                flag, action="store_const", const=False, dest=f.name, help=help_text
            )
        elif hint is bool and f.default is True:
            parser.add_argument(
                flag, choices=ON_OFF, dest=f.name, help=help_text + _default_text(f)
            )
        elif hint is bool:
            parser.add_argument(flag, action="store_const", const=True, dest=f.name, help=help_text)
        elif typing.get_origin(hint) is typing.Literal:
            parser.add_argument(
                flag,
                choices=typing.get_args(hint),
                dest=f.name,
                help=help_text + _default_text(f),
            )
        else:
            parser.add_argument(
                flag,
                type=_value_type(f, hint),
                dest=f.name,
                metavar=f.metadata.get("metavar"),
                help=help_text + _default_text(f),
            )
    parser.add_argument(
        "--hyp",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=next(f for f in fields(TrainConfig) if f.name == "hyp").metadata["help"],
    )


def config_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig fields the user gave as flags (``--hyp`` is parsed by the caller)."""
    out = {}
    hints = field_types()
    for f in fields(TrainConfig):
        if not f.metadata.get("cli", True) or f.name == "hyp":
            continue
        value = getattr(args, f.name, None)
        if _base(hints[f.name]) is bool and value in ON_OFF:  # --aux-constraint off
            value = value == "on"
        if value is not None:
            out[f.name] = value
    return out


def flag_of(field_name: str) -> str:
    """The flag that sets a TrainConfig field (for errors that name it)."""
    f = next((f for f in fields(TrainConfig) if f.name == field_name), None)
    if f is None:
        raise SpecError(f"unknown training setting '{field_name}'", field=field_name)
    return _flag(f)
