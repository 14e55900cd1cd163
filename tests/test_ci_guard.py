"""The CI guard `.ci/check_collection.py` fails on test files that pytest never collects."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

GUARD = Path(__file__).resolve().parent.parent / ".ci" / "check_collection.py"


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def _guard(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(GUARD), str(root)], capture_output=True, text=True, timeout=120
    )


def test_guard_fails_on_a_test_folder_named_build(tmp_path):
    root = _tree(
        tmp_path,
        {
            "tests/unit/test_ok.py": "def test_ok():\n    assert 1 + 1 == 2\n",
            "tests/build/test_hidden.py": "def test_hidden():\n    assert True\n",
        },
    )
    result = _guard(root)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "tests/build/test_hidden.py: no test collected" in result.stderr
    assert "tests/unit/test_ok.py" not in result.stderr


def test_guard_counts_slow_marked_files_and_fails_on_files_without_tests(tmp_path):
    root = _tree(
        tmp_path,
        {
            "pytest.ini": "[pytest]\nmarkers =\n    slow: long\naddopts = -m 'not slow'\n",
            "tests/test_slow.py": "import pytest\n\n@pytest.mark.slow\ndef test_s():\n    pass\n",
            "tests/test_empty.py": "HELPER = 1\n",
        },
    )
    result = _guard(root)
    assert result.returncode == 1
    assert "tests/test_empty.py" in result.stderr
    assert "tests/test_slow.py" not in result.stderr


def test_guard_passes_when_every_file_is_collected(tmp_path):
    root = _tree(tmp_path, {"tests/nn/test_fx.py": "def test_fx():\n    pass\n"})
    result = _guard(root)
    assert result.returncode == 0, result.stderr
    assert "all 1 test files" in result.stdout
