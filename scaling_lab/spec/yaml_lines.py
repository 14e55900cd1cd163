"""YAML with line numbers: every mapping records where its keys were written.

Shared by everything that reads a user's YAML (model specs, experiments, search spaces), so
every error can name the file and line. Duplicate keys are refused: plain ``yaml.safe_load``
would keep the last one and silently drop the first.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from scaling_lab.errors import UserError
from scaling_lab.limits import MAX_INT_CHARS, MAX_TEXT_BYTES, MAX_YAML_DEPTH, MAX_YAML_NODES
from scaling_lab.schema import LINES_KEY, strip_lines
from scaling_lab.spec.errors import SpecError

__all__ = [
    "LINES_KEY",
    "check_yaml_size",
    "loads_json",
    "read_text_file",
    "read_yaml_file",
    "read_yaml_mapping",
    "strip_lines",
]


# libyaml's parser when PyYAML was built with it (10x faster than the pure-Python one); the
# type checker sees the pure-Python loader, whose interface the C one shares
if TYPE_CHECKING:
    _BaseLoader = yaml.SafeLoader
else:
    _BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _LineLoader(_BaseLoader):
    """SafeLoader that records mapping line numbers and refuses duplicate keys."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            raise SpecError(
                "merge keys ('<<') are not supported",
                line=key_node.start_mark.line + 1,
                source=loader.name,
            )
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, (str, int, float, bool, type(None))):
            raise SpecError(
                f"a mapping key must be a plain value, got {type(key).__name__}",
                line=line,
                source=loader.name,
            )
        if key == LINES_KEY:  # the line record's own key: a user's would be overwritten
            raise SpecError(f"'{LINES_KEY}' is a reserved key", line=line, source=loader.name)
        if key in seen:
            raise SpecError(
                f"duplicate key '{key}' (first at line {seen[key]})", line=line, source=loader.name
            )
        seen[key] = line
    mapping = _BaseLoader.construct_mapping(loader, node, deep=deep)
    mapping[LINES_KEY] = seen
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _malformed(exc: yaml.YAMLError, source: str) -> SpecError:
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark else None
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return SpecError(f"malformed YAML: {problem}", source=source, line=line)


def _check_tree(root: yaml.Node | None, source: str) -> None:
    """Refuse a document nested deeper than ``MAX_YAML_DEPTH`` or holding more than
    ``MAX_YAML_NODES`` nodes once its aliases are expanded (a "billion laughs" file is a few
    lines that every walk over the loaded data would copy out exponentially). Iterative, and
    each node is measured once, so the check itself costs the file's size."""
    if root is None:
        return
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    open_nodes: set[int] = set()
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in size:
            continue
        line = node.start_mark.line + 1 if node.start_mark else None
        kids: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            kids = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            kids = [n for pair in node.value for n in pair]
        if children_done:
            open_nodes.discard(key)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
            if size[key] > MAX_YAML_NODES:
                raise SpecError(
                    f"too large: more than {MAX_YAML_NODES} values once aliases are expanded "
                    "(limit MAX_YAML_NODES)",
                    source=source,
                    line=line,
                )
            if depth[key] > MAX_YAML_DEPTH:
                raise SpecError(
                    f"nested deeper than {MAX_YAML_DEPTH} levels (limit MAX_YAML_DEPTH)",
                    source=source,
                    line=line,
                )
            continue
        if key in open_nodes:
            raise SpecError("an alias refers to a value that contains it", source=source, line=line)
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((k, False) for k in kids if id(k) not in size)
        if any(id(k) in open_nodes for k in kids):
            raise SpecError("an alias refers to a value that contains it", source=source, line=line)


_INT_TAG = "tag:yaml.org,2002:int"


def _check_ints(root: yaml.Node | None, source: str) -> None:
    """Refuse an integer longer than ``MAX_INT_CHARS``, naming its line and the field it sits
    in (``nodes.stem.c``, ``anchors[0][2]``): Python converts at most 4300 digits, so a longer
    one would be a traceback from inside the loader (or from the error message echoing it)."""
    if root is None:
        return
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    while stack:  # in file order: children are pushed last first
        node, path = stack.pop()
        if id(node) in seen:  # an alias: its value is checked once
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend((kid, f"{path}[{i}]") for i, kid in reversed(list(enumerate(node.value))))
        elif isinstance(node, yaml.MappingNode):
            for key, value in reversed(node.value):
                name = str(key.value) if isinstance(key, yaml.ScalarNode) else "?"
                name = name if len(name) <= 40 else name[:37] + "..."
                stack += [(value, f"{path}.{name}" if path else name), (key, path)]
        elif node.tag == _INT_TAG and len(node.value) > MAX_INT_CHARS:
            raise SpecError(
                f"integer too long: {len(node.value)} characters (limit {MAX_INT_CHARS}, "
                "MAX_INT_CHARS)",
                source=source,
                line=node.start_mark.line + 1,
                field=path or None,
            )


def check_yaml_size(text: str, source: str) -> None:
    """The size limits of ``read_yaml_mapping`` for text another YAML reader will load."""
    loader = _LineLoader(text)
    loader.name = source
    try:
        root = loader.get_single_node()
        _check_tree(root, source)
        _check_ints(root, source)
    except yaml.YAMLError as exc:
        raise _malformed(exc, source) from None
    finally:
        loader.dispose()


def read_text_file(
    path: str | Path,
    what: str,
    *,
    max_bytes: int = MAX_TEXT_BYTES,
    error: type[UserError] = SpecError,
) -> str:
    """The UTF-8 text of a user's file: a regular file (not a device, FIFO or folder) of at
    most ``max_bytes``, read with that bound even if it grows meanwhile; ``error`` is the
    ``UserError`` subclass raised, naming the file (and the line of an undecodable byte)."""
    source = str(path)
    try:
        info = os.stat(path)
    except OSError as exc:
        reason = "no such file" if isinstance(exc, FileNotFoundError) else exc.strerror
        raise error(f"cannot read {what}: {reason}", source=source) from None
    if not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise error(f"cannot read {what}: {kind}", source=source)
    if info.st_size > max_bytes:
        raise error(f"{what} too large: {info.st_size} bytes (limit {max_bytes})", source=source)
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as exc:
        raise error(f"cannot read {what}: {exc.strerror}", source=source) from None
    if len(data) > max_bytes:
        raise error(f"{what} too large: over {max_bytes} bytes", source=source)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise error(
            f"not UTF-8 text (byte 0x{data[exc.start]:02x})", source=source, line=line
        ) from None


class _LongIntError(Exception):
    """An integer of a JSON text too long to convert (carries its digits)."""


def _json_int(digits: str) -> int:
    if len(digits) > MAX_INT_CHARS:
        raise _LongIntError(digits)
    return int(digits)


def loads_json(text: str, source: str, error: type[UserError] = SpecError) -> Any:
    """``json.loads`` of a user's file, with its integers bounded like YAML's: a longer one is
    ``error`` naming its line, not a ValueError from deep inside ``json``. Decoding errors
    (``json.JSONDecodeError``, ``RecursionError``) are the caller's to word."""
    try:
        return json.loads(text, parse_int=_json_int)
    except _LongIntError as exc:
        digits = str(exc)
        line = text.count("\n", 0, max(text.find(digits), 0)) + 1
        raise error(
            f"integer too long: {len(digits)} characters (limit {MAX_INT_CHARS}, MAX_INT_CHARS)",
            source=source,
            line=line,
        ) from None


def read_yaml_file(path: str | Path, what: str) -> dict:
    """``read_yaml_mapping`` of a file read with ``read_text_file``'s checks."""
    return read_yaml_mapping(read_text_file(path, what), str(path), what)


def read_yaml_mapping(text: str, source: str, what: str) -> dict:
    """Parse YAML text whose top level must be a mapping (``what`` names it in the error).
    Size, nesting and alias expansion are bounded (``scaling_lab.limits``)."""
    if len(text) > MAX_TEXT_BYTES:
        raise SpecError(
            f"too large: {len(text)} characters (limit {MAX_TEXT_BYTES})", source=source
        )
    loader = _LineLoader(text)
    loader.name = source
    try:
        root = loader.get_single_node()
        _check_tree(root, source)
        _check_ints(root, source)
        data = loader.construct_document(root) if root is not None else None
    except SpecError:
        raise
    except yaml.YAMLError as exc:
        raise _malformed(exc, source) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise SpecError(f"{what} must be a YAML mapping", source=source)
    return data
