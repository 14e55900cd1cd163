"""The ``lab`` command line run in a fresh process, as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_lab(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """``python lab.py ARGS`` in a new process: exit code, stdout and stderr as a user sees them."""
    return subprocess.run(
        [sys.executable, str(ROOT / "lab.py"), *args], capture_output=True, text=True, cwd=cwd
    )
