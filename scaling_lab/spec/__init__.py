"""Spec text: YAML model specs -> plain dataclasses (no torch)."""

from scaling_lab.spec.errors import SpecError
from scaling_lab.spec.load import ModelSpec, NodeSpec, load_spec, parse_spec

__all__ = ["ModelSpec", "NodeSpec", "SpecError", "load_spec", "parse_spec"]
