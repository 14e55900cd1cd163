"""Test modules share code only through ``tests.helpers``.

A test file that imports another test file runs that file's module-level code, and pytest
may import the same file twice under two names (as a test, and as the importer's helper), so
editing one test silently changes another. Every ``*.py`` under tests/ (test files, conftest,
helper modules) is parsed with ``ast``; each import that names a module under tests/ (an
absolute ``tests.X``, a relative import, or a bare name that pytest's rootdir insertion makes
a sibling file) must resolve into ``tests/helpers/``. Shared fixtures stay in conftest.py and
reach tests as fixture arguments, never as imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


def _module_file(root: Path, dotted: str) -> Path | None:
    """The file of ``tests.a.b`` under ``root`` (the tests/ folder): a module or a package's
    ``__init__``, if there is one."""
    parts = dotted.split(".")
    if parts[0] != root.name:
        return None
    base = root.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _package_of(root: Path, path: Path) -> str | None:
    """The dotted package holding ``path``, or None when a folder up to ``root`` is no package
    (pytest then imports the file by its bare name, its folder put on ``sys.path``)."""
    folder, parts = path.parent, []
    while folder != root:
        if not (folder / "__init__.py").is_file():
            return None
        parts.insert(0, folder.name)
        folder = folder.parent
    return ".".join([root.name, *parts])


def _resolve(
    root: Path, path: Path, module: str | None, level: int, name: str | None
) -> Path | None:
    """The file under ``root`` that an import in ``path`` loads; None when it loads none.

    ``from pkg import name`` loads the module ``pkg.name`` when there is one, else ``pkg``."""
    package = _package_of(root, path)
    if level:
        if package is None:  # Python refuses it: collecting the file fails by itself
            return None
        parts = package.split(".")
        if level > len(parts):
            return None
        dotted = ".".join(parts[: len(parts) - level + 1] + ([module] if module else []))
    else:
        dotted = module or ""
        if dotted.split(".")[0] != root.name:
            # outside a package, pytest puts the file's folder on sys.path: a bare
            # ``import test_x`` then loads the sibling file
            sibling = path.parent / f"{dotted.split('.')[0]}.py"
            return sibling if package is None and sibling.is_file() else None
    if name is not None:
        found = _module_file(root, f"{dotted}.{name}")
        if found is not None:
            return found
    return _module_file(root, dotted)


def imports_into_tests(path: Path, root: Path = TESTS) -> list[tuple[int, Path]]:
    """(line, file) of every module under ``root`` that ``path`` imports, inside functions
    too."""
    found: list[tuple[int, Path]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [_resolve(root, path, alias.name, 0, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            targets = [_resolve(root, path, node.module, node.level, a.name) for a in node.names]
        else:
            continue
        found += [(node.lineno, target) for target in targets if target is not None]
    return found


def wrong_imports(path: Path, root: Path = TESTS) -> list[tuple[int, str]]:
    """(line, file) of each import of test code that is not in ``root``/helpers/."""
    found = [
        (line, target.relative_to(root.parent).as_posix())
        for line, target in imports_into_tests(path, root)
        if root / "helpers" not in target.parents
    ]
    return list(dict.fromkeys(found))  # ``from x import a, b``: once


def _modules() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if p != TESTS / "__init__.py")


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(TESTS)))
def test_tests_import_only_helpers(path):
    wrong = wrong_imports(path)
    assert not wrong, (
        f"{path.relative_to(TESTS.parent)} imports test code outside tests.helpers "
        f"(move what it shares into tests/helpers/): {wrong}"
    )


# lines 1-5 and 8 import test code; 6, 9 and 10 are fine (a helper, the library, numpy)
PLANTED_IN_A_PACKAGE = """\
from tests.data.test_b import HYP
import tests.conftest
from . import test_other
from tests.cli import ROOT
from ..data import test_b
from tests.helpers import specs
def f():
    from tests.loose.test_c import x
from scaling_lab.spec import parse_spec
import numpy
"""


def test_the_checker_finds_each_form_of_import_between_tests(tmp_path):
    """Planted files in a small tests/ tree: one in a package (tests/train/), one in a folder
    without ``__init__.py`` (tests/loose/), where a bare name loads a sibling test file."""
    root = tmp_path / "tests"
    for name in [
        "__init__.py",
        "conftest.py",
        "helpers/__init__.py",
        "helpers/specs.py",
        "cli/__init__.py",
        "data/__init__.py",
        "data/test_b.py",
        "train/__init__.py",
        "train/test_other.py",
        "loose/test_c.py",
    ]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("")
    in_package = root / "train" / "test_planted.py"
    in_package.write_text(PLANTED_IN_A_PACKAGE)
    assert wrong_imports(in_package, root) == [
        (1, "tests/data/test_b.py"),
        (2, "tests/conftest.py"),
        (3, "tests/train/test_other.py"),
        (4, "tests/cli/__init__.py"),
        (5, "tests/data/test_b.py"),
        (8, "tests/loose/test_c.py"),
    ]
    loose = root / "loose" / "test_planted.py"
    loose.write_text("import test_c\nimport yaml\n")
    assert wrong_imports(loose, root) == [(1, "tests/loose/test_c.py")]
    in_package.write_text("import test_other\n")  # a package's folder is not on sys.path
    assert wrong_imports(in_package, root) == []
