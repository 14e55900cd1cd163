"""Which checkout of the reference implementation a recording came from (tools share it)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def reference_commit(reference: Path) -> str | None:
    """The checkout's HEAD commit, or None for a copy without git history."""
    try:
        out = subprocess.run(
            ["git", "-C", str(reference), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()
