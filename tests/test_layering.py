"""Imports go one way, down the flow that docs/architecture.md draws.

Every ``import scaling_lab.X`` anywhere in a module (top level, inside functions, under
TYPE_CHECKING) is checked: a module may import from its own package and from packages of a
lower rank, never from a higher one, and never from a peer of the same rank (analyze, data:
neither knows the other). ``scaling_lab/__init__.py`` (the public API) is exempt.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "scaling_lab"

# rank of each top-level module or package of scaling_lab; equal ranks are peers
RANKS = {
    "errors": 0,
    "atomic": 0,
    "eval_protocol": 0,
    "limits": 0,
    "device": 3,  # the default-device rule and precision names (torch imported lazily)
    "machine": 3,  # the machine card of a run (torch imported lazily)
    "schema": 1,
    "spec": 2,
    "zoo": 3,
    "ops": 4,
    "layers": 5,
    "graph": 6,
    "transforms": 7,
    "nn": 8,
    "models": 9,
    "analyze": 10,
    "data": 10,
    "train": 11,
    "sweep": 12,
    "weights": 12,  # reads the reference's checkpoints; writes train checkpoints
    "report": 13,
    "cli": 14,
}


def _unit(module: str) -> str:
    """``scaling_lab.graph.blocks.elan`` -> ``graph``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "scaling_lab":  # from scaling_lab import ops
                found += [(node.lineno, f"scaling_lab.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, node.module))
    return [(line, name) for line, name in found if name.startswith("scaling_lab.")]


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "__init__.py")


def _importer_unit(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def test_every_unit_has_a_rank():
    units = {_importer_unit(p) for p in _modules()}
    assert units <= set(RANKS), f"give these a rank: {sorted(units - set(RANKS))}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_down_the_flow(path):
    me = _importer_unit(path)
    wrong = []
    for line, name in _imports(path):
        other = _unit(name)
        if other == me:
            continue
        if other not in RANKS:
            wrong.append(f"line {line}: {name} (unit '{other}' has no rank)")
        elif RANKS[other] >= RANKS[me]:
            wrong.append(f"line {line}: {name} ({other} is not below {me})")
    assert not wrong, f"{path.relative_to(PACKAGE)} imports up or across the flow: {wrong}"


def test_the_checker_sees_imports_inside_functions(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "def f():\n    from scaling_lab.cli import main\n    import scaling_lab.sweep\n"
    )
    assert _imports(sample) == [(2, "scaling_lab.cli"), (3, "scaling_lab.sweep")]


def test_nothing_below_nn_imports_torch_when_loaded():
    """Parsing, lowering and counting run without torch (milliseconds, no GPU stack)."""
    import subprocess
    import sys

    code = (
        "import sys, scaling_lab.graph.lower, scaling_lab.layers.fuse, scaling_lab.zoo;"
        "import scaling_lab.transforms.scale, scaling_lab.analyze.complexity;"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
