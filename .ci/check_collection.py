"""CI guard: every tests/**/test_*.py file must contribute collected tests.

pytest silently skips folders it treats as build output (``build``, ``dist``, dot-folders,
``*.egg``, ...) and files whose tests fail to collect quietly, so a whole folder of tests can
stop running without anyone noticing. This compares the files on disk with the node ids that
``pytest --collect-only`` reports (every marker included: a file of slow tests still counts)
and fails naming each file that contributes nothing.

Usage: python .ci/check_collection.py [REPO_ROOT]   (default: this checkout)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def collected_files(root: Path) -> set[str]:
    """Test files that pytest collects at least one test from, relative to ``root``."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "", "-n", "0"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    if result.returncode not in (0, 5):  # 5: nothing collected (reported below)
        sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
        raise SystemExit(f"check_collection: pytest --collect-only failed ({result.returncode})")
    return {line.split("::", 1)[0] for line in result.stdout.splitlines() if "::" in line}


def test_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in (root / "tests").rglob("test_*.py")}


def main(argv: list[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else Path(__file__).resolve().parent.parent).resolve()
    on_disk, collected = test_files(root), collected_files(root)
    silent = sorted(on_disk - collected)
    if silent:
        for path in silent:
            print(f"check_collection: {path}: no test collected from this file", file=sys.stderr)
        print(
            f"check_collection: {len(silent)} of {len(on_disk)} test files contribute no test "
            "(a folder named like build output? a file without tests?)",
            file=sys.stderr,
        )
        return 1
    print(f"check_collection: all {len(on_disk)} test files contribute collected tests")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
