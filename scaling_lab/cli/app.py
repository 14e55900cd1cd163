"""The ``lab`` parser, assembled from the command groups, and ``main``: the one place where a
user error becomes one line on stderr and exit status 2."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence

from scaling_lab.cli import (
    bench_commands,
    latency_commands,
    model_commands,
    sweep_commands,
    train_commands,
    weights_commands,
)
from scaling_lab.cli.args import EXIT_USAGE, OneLineParser
from scaling_lab.data.errors import DataWarning
from scaling_lab.errors import UserError


def make_parser() -> OneLineParser:
    """Every command, in the order ``lab --help`` lists them."""
    parser = OneLineParser(
        prog="lab",
        description="scaling_lab: design, scale and profile "
        "concatenation-based real-time detectors (YOLOv7 family).",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    model_commands.add_inspect_commands(sub)  # zoo, blocks, profile, show, fuse-check
    bench_commands.add_commands(sub)  # bench, export
    latency_commands.add_commands(sub)  # latency-table build / show
    model_commands.add_import_command(sub)  # import
    train_commands.add_commands(sub)  # data synth, train, eval
    sweep_commands.add_commands(sub)  # sweep, calibrate, report
    weights_commands.add_commands(sub)  # convert-weights
    return parser


def one_line(text: str) -> str:
    """A message folded onto one line, so that scripts can read errors line by line; control
    characters a user's file may carry (escape sequences) are shown escaped."""
    folded = " ".join(line.strip() for line in text.splitlines() if line.strip())
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in folded)


def _one_line_warning(command: str, default):
    """Dataset repairs (a clipped box) as one ``lab CMD: warning: ...`` line, not Python's
    two-line form with a source line; other warnings as Python shows them."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, DataWarning):
            (file or sys.stderr).write(f"lab {command}: warning: {one_line(str(message))}\n")
        else:
            default(message, category, filename, lineno, file, line)

    return show


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``lab`` command; returns the exit status (2: the user's input was refused)."""
    args = make_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning(args.command, warnings.showwarning)
            return args.func(args)
    except UserError as exc:  # any other exception is a bug: it keeps its traceback
        sys.stderr.write(f"lab {args.command}: error: {one_line(str(exc))}\n")
        return EXIT_USAGE
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0
