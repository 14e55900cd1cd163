"""YAML with line numbers: every mapping records where its keys were written.

Shared by everything that reads a user's YAML (model specs, experiments, search spaces), so
every error can name the file and line. Duplicate keys are refused: plain ``yaml.safe_load``
would keep the last one and silently drop the first.
"""

from __future__ import annotations

from typing import Any

import yaml

from scaling_lab.schema import LINES_KEY, strip_lines
from scaling_lab.spec.errors import SpecError

__all__ = ["LINES_KEY", "read_yaml_mapping", "strip_lines"]


# libyaml's parser when PyYAML was built with it (10x faster than the pure-Python one)
_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _LineLoader(_BaseLoader):
    """SafeLoader that records mapping line numbers and refuses duplicate keys."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise SpecError(
                f"duplicate key '{key}' (first at line {seen[key]})", line=line, source=loader.name
            )
        seen[key] = line
    mapping = _BaseLoader.construct_mapping(loader, node, deep=deep)
    mapping[LINES_KEY] = seen
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml_mapping(text: str, source: str, what: str) -> dict:
    """Parse YAML text whose top level must be a mapping (``what`` names it in the error)."""
    loader = _LineLoader(text)
    loader.name = source
    try:
        data = loader.get_single_data()
    except SpecError:
        raise
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"malformed YAML: {problem}", source=source, line=line) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise SpecError(f"{what} must be a YAML mapping", source=source)
    return data
