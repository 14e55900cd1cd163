"""The ``lab`` command line run as a user runs it: in a fresh process (``run_lab``: the
interpreter's own exit, nothing the test process set up), or in this process
(``run_lab_here``: the same exit status and streams, without a second torch import)."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_lab(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """``python lab.py ARGS`` in a new process: exit code, stdout and stderr as a user sees them."""
    return subprocess.run(
        [sys.executable, str(ROOT / "lab.py"), *args], capture_output=True, text=True, cwd=cwd
    )


def run_lab_here(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """``lab ARGS`` through ``scaling_lab.cli.main`` in this process, its exit status (argparse's
    ``SystemExit`` included) and captured streams returned as ``run_lab`` returns them. An
    exception ``main`` lets through is a bug and propagates: the test fails with its traceback."""
    from scaling_lab.cli import main

    out, err = io.StringIO(), io.StringIO()
    before = Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        os.chdir(before)
    return subprocess.CompletedProcess(["lab", *args], code, out.getvalue(), err.getvalue())
