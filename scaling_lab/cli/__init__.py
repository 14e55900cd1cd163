"""``lab``: the command line, one module per command group (entry point ``main``)."""

from scaling_lab.cli.app import main, make_parser

__all__ = ["main", "make_parser"]
