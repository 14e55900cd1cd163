"""The public API: what the README documents is importable from ``scaling_lab``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import scaling_lab as sl

README = Path(__file__).resolve().parent.parent / "README.md"


def test_every_exported_name_resolves():
    missing = [name for name in sl.__all__ if not hasattr(sl, name)]
    assert not missing


def test_every_name_the_readme_calls_is_exported():
    used = set(re.findall(r"\bsl\.([A-Za-z_]\w*)", README.read_text()))
    assert used, "the README shows no `sl.` calls"
    assert sorted(used - set(sl.__all__)) == []


def test_the_entry_points_a_user_calls_are_there():
    for name in (
        "reparameterize",
        "benchmark",
        "run_training",
        "resume_training",
        "evaluate_checkpoint",
        "fuse_check",
        "build_module",
        "model_ref",
        "ModelRef",
        "UserError",
        "screen_designs",
        "all_proxies",
        "rescore_calibration",
    ):
        assert callable(getattr(sl, name)), name


def test_importing_the_package_does_not_import_torch():
    code = "import sys, scaling_lab; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
