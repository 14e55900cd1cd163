"""The model zoo: spec files shipped with the package, looked up by name."""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path

from scaling_lab.spec.errors import SpecError
from scaling_lab.spec.load import ModelSpec, parse_spec

_SPECS = "specs"


def _spec_dir() -> Path:
    return Path(str(resources.files(__package__) / _SPECS))


def list_models() -> list[str]:
    """Names of every zoo model, in a stable order."""
    return sorted(p.stem for p in _spec_dir().glob("*.yaml"))


def is_zoo_model(name: str) -> bool:
    """Is ``name`` a zoo model's name (a name, never a path into or out of the zoo)?"""
    return name in list_models()


def zoo_spec_path(name: str) -> Path:
    """Path of a zoo model's spec; unknown names get close matches in the error."""
    path = _spec_dir() / f"{name}.yaml"
    if not is_zoo_model(name):
        known = list_models()
        close = difflib.get_close_matches(name, known, n=3) if len(name) <= 100 else []
        hint = f"did you mean {', '.join(close)}? " if close else ""
        shown = name if len(name) <= 60 else f"{name[:30]}...{name[-20:]}"  # ../../.. x 1000
        raise SpecError(
            f"unknown model '{shown}' ({hint}known: {', '.join(known)}; "
            "or give the path of a .yaml spec)"
        )
    return path


def load_zoo_spec(name: str) -> ModelSpec:
    path = zoo_spec_path(name)
    return parse_spec(path.read_text(), source=f"zoo/{path.name}")
