"""Typed schemas: dataclasses built from YAML mappings, every value checked from the type hints.

A config class is declared once, as a dataclass; ``build`` reads a mapping (as
``spec.yaml_lines.read_yaml_mapping`` returns it, with a ``__lines__`` record per mapping)
into an instance, so the file's own checks are only the semantic ones. It refuses unknown
keys (naming the known ones), missing required keys and values of the wrong type, following
the hints: ``int`` (not ``bool``), ``float`` (an int too), ``str``, ``bool``, ``Literal``,
``X | None`` and other unions, ``tuple[X, ...]`` (from a YAML list), ``dict[str, X]``,
nested dataclasses, ``Any``, and ``Annotated[dict[str, Any], Partial(Cls)]`` (some of
``Cls``'s fields, e.g. settings laid over defaults). Then it calls the instance's ``check()``,
if it has one, which raises ``FieldError`` to refuse a field's value.

Every error is a ``SchemaError`` (a ``UserError``) naming the file, the line and the dotted
key path: ``experiment.yaml:12: field 'train.epochs': must be int, got 'ten'``. Fields whose
metadata is ``INTERNAL`` are set by code, never read from the mapping.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from scaling_lab.errors import UserError, shown

LINES_KEY = "__lines__"  # a mapping's {key: line} record, as spec.yaml_lines loads it
INTERNAL = {"schema": "internal"}  # field metadata: set by code, not a key of the mapping

T = TypeVar("T")


class FieldError(ValueError):
    """Raised by a config's ``check()`` (or constructor) to refuse one field's value.

    ``field`` is relative to the config: a field name, a deeper path (``overrides.x``,
    ``variants[2]``) or ``""`` for the config as a whole.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


class SchemaError(UserError):
    """A value a schema refuses; ``field`` is its dotted key path."""


class UnknownKeyError(SchemaError):
    """A key the config does not have (``key``; ``known``: the ones it has)."""

    key: str = ""
    known: tuple[str, ...] = ()

    @classmethod
    def of(cls, key: Any, known: tuple[str, ...], **where: Any) -> UnknownKeyError:
        exc = cls(f"unknown key '{key}' (known: {', '.join(known)})", **where)
        exc.key, exc.known = str(key), known
        return exc


class MissingKeyError(SchemaError):
    """A required key (``key``) that the mapping lacks."""

    key: str = ""

    @classmethod
    def of(cls, key: str, **where: Any) -> MissingKeyError:
        exc = cls(f"required key '{key}' missing", **where)
        exc.key = key
        return exc


class WrongTypeError(SchemaError):
    """A value whose type is not the hint's."""


class InvalidValueError(SchemaError):
    """A value the config's ``check()`` refused."""


@dataclass(frozen=True)
class Partial:
    """``Annotated`` marker: a mapping of some fields of ``cls`` (all optional), typed as
    ``cls`` declares them; ``exclude`` names fields that may not be given."""

    cls: type
    exclude: tuple[str, ...] = ()

    def known(self) -> tuple[str, ...]:
        return tuple(f.name for f in _fields(self.cls) if f.name not in self.exclude)


@dataclass(frozen=True)
class _At:
    """Where a value was read: file, dotted key path, line."""

    source: str | None
    path: str = ""
    line: int | None = None

    def key(self, key: Any, lines: Mapping[Any, int]) -> _At:
        path = f"{self.path}.{key}" if self.path else str(key)
        return _At(self.source, path, lines.get(key, self.line))

    def item(self, index: int, value: Any) -> _At:
        return _At(self.source, f"{self.path}[{index}]", _first_line(value) or self.line)

    def where(self) -> dict[str, Any]:
        return {"source": self.source, "field": self.path or None, "line": self.line}


def build(
    cls: type[T],
    data: Any,
    *,
    source: str | None = None,
    path: str = "",
    line: int | None = None,
) -> T:
    """An instance of dataclass ``cls`` from ``data``, checked (see the module docstring).

    ``path`` and ``line`` say where ``data`` sits when it is part of a larger file.
    """
    return _build(cls, data, _At(source, path, line))


def convert(
    hint: Any, value: Any, *, source: str | None = None, path: str = "", line: int | None = None
) -> Any:
    """``value`` checked against the type ``hint`` and converted (lists to tuples, mappings to
    dataclasses, line records dropped)."""
    return _convert(hint, value, _At(source, path, line))


def type_ok(value: Any, hint: Any) -> bool:
    """Whether ``value`` passes ``hint`` (no error, nothing built)."""
    try:
        _convert(hint, value, _At(None))
    except SchemaError:
        return False
    return True


def describe(hint: Any) -> str:
    """The hint in words, as errors print it: ``int or null``, ``one of 'a', 'b'``."""
    hint = _strip_annotated(hint)[0]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin in (tuple, list):
        return f"a list of {describe(args[0])}" if args else "a list"
    if origin in (dict, Mapping) or hint is dict:
        return "a mapping"
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return f"a mapping ({hint.__name__})"
    if hint is Any:
        return "anything"
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


def line_of(data: Any, path: str) -> int | None:
    """The line of the deepest key on ``path`` (``a.b[2].c``) in ``data`` as read with line
    records; keys may hold dots themselves (``elan2.depth``). None when nothing matches."""
    line, node, rest = None, data, path
    while rest:
        if isinstance(node, list) and rest.startswith("["):
            index, _, rest = rest[1:].partition("]")
            if not index.isdigit() or int(index) >= len(node):
                break
            node = node[int(index)]
            line = _first_line(node) or line
        elif isinstance(node, dict):
            keys = [str(k) for k in node if k != LINES_KEY and _heads(rest, str(k))]
            if not keys:
                break
            key = max(keys, key=len)
            original = next(k for k in node if str(k) == key)
            line = node.get(LINES_KEY, {}).get(original, line)
            node, rest = node[original], rest[len(key) :]
        else:
            break
        rest = rest.removeprefix(".")
    return line


def _heads(path: str, key: str) -> bool:
    return path == key or path.startswith((key + ".", key + "["))


def _first_line(value: Any) -> int | None:
    lines = value.get(LINES_KEY) if isinstance(value, dict) else None
    return min(lines.values()) if lines else None


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def _fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.init and f.metadata != INTERNAL]


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _build(cls: type[T], data: Any, at: _At) -> T:
    if not isinstance(data, Mapping):
        raise WrongTypeError(f"must be {describe(cls)}, got {_show(data)}", **at.where())
    fields = _fields(cls)
    known = tuple(f.name for f in fields)
    lines = data.get(LINES_KEY, {})
    for key in data:
        if key != LINES_KEY and key not in known:
            where = {**at.where(), "line": lines.get(key, at.line)}
            raise UnknownKeyError.of(key, known, **where)
    values = {}
    for f in fields:
        if f.name in data:
            # a class is hashable, but mypy does not count a type[T] as Hashable
            hint = _hints(cls)[f.name]  # type: ignore[arg-type]
            values[f.name] = _convert(hint, data[f.name], at.key(f.name, lines))
        elif _required(f):
            raise MissingKeyError.of(f.name, **at.where())
    try:
        obj = cls(**values)
        check = getattr(obj, "check", None)
        if callable(check):
            check()
    except FieldError as exc:
        path = ".".join(p for p in (at.path, exc.field) if p).replace(".[", "[")
        line = line_of(data, exc.field) if exc.field else None
        raise InvalidValueError(
            str(exc), source=at.source, field=path or None, line=line or at.line
        ) from None
    return obj


def _strip_annotated(hint: Any) -> tuple[Any, tuple[Any, ...]]:
    if typing.get_origin(hint) is typing.Annotated:
        return hint.__origin__, hint.__metadata__
    return hint, ()


def _convert(hint: Any, value: Any, at: _At) -> Any:
    hint, extras = _strip_annotated(hint)
    partial = next((m for m in extras if isinstance(m, Partial)), None)
    if partial is not None:
        return _convert_partial(partial, value, at)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return strip_lines(value)
    if origin in (typing.Union, types.UnionType):
        return _convert_union(hint, args, value, at)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return _build(hint, value, at)
    if (origin or hint) in (tuple, list) and isinstance(value, (list, tuple)):
        return _convert_sequence(origin or hint, args, value, at)
    if origin in (dict, Mapping) and isinstance(value, Mapping):
        key_hint, value_hint = args or (Any, Any)
        out = {}
        lines = value.get(LINES_KEY, {})
        for key, item in value.items():
            if key == LINES_KEY:
                continue
            if not _scalar_ok(key, key_hint):
                where = {**at.where(), "line": lines.get(key, at.line)}
                raise WrongTypeError(f"key {key!r} must be {describe(key_hint)}", **where)
            out[key] = _convert(value_hint, item, at.key(key, lines))
        return out
    if origin is None and _scalar_ok(value, hint):
        return strip_lines(value) if hint in (dict, list) else value
    if origin is typing.Literal and _scalar_ok(value, hint):
        return value
    raise WrongTypeError(f"must be {describe(hint)}, got {_show(value)}", **at.where())


def _convert_sequence(origin: Any, args: tuple[Any, ...], value: Any, at: _At) -> Any:
    if origin is tuple and args and args[-1] is not Ellipsis:  # fixed length: tuple[A, B]
        if len(value) != len(args):
            raise WrongTypeError(
                f"must be a list of {len(args)} values, got {_show(value)}", **at.where()
            )
        items = [_convert(h, v, at.item(i, v)) for i, (h, v) in enumerate(zip(args, value))]
    else:
        item_hint = args[0] if args else Any
        items = [_convert(item_hint, v, at.item(i, v)) for i, v in enumerate(value)]
    return tuple(items) if origin is tuple else items


def _convert_union(hint: Any, args: tuple[Any, ...], value: Any, at: _At) -> Any:
    """The first arm the value passes; a mapping or list goes to the arm of that shape, whose
    own (deeper) error is the one reported."""
    for arm in args:
        if _shape(arm) is None and _scalar_ok(value, arm):
            return _convert(arm, value, at)
    for arm in args:
        shape = _shape(arm)
        if shape is not None and isinstance(value, shape):
            return _convert(arm, value, at)
    raise WrongTypeError(f"must be {describe(hint)}, got {_show(value)}", **at.where())


def _shape(hint: Any) -> type | tuple[type, ...] | None:
    """The container type a hint reads (None: a scalar hint)."""
    hint = _strip_annotated(hint)[0]
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint) or origin in (dict, Mapping) or hint is dict:
        return Mapping
    if origin in (tuple, list) or hint in (tuple, list):
        return (list, tuple)
    return None


def _scalar_ok(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return any(_scalar_ok(value, a) for a in typing.get_args(hint))
    if hint is type(None) or hint is None:
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is tuple:
        return isinstance(value, (list, tuple))
    return isinstance(hint, type) and isinstance(value, hint)


def _convert_partial(partial: Partial, value: Any, at: _At) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise WrongTypeError(
            f"must be a mapping of {partial.cls.__name__} fields, got {_show(value)}", **at.where()
        )
    known, hints = partial.known(), _hints(partial.cls)
    lines = value.get(LINES_KEY, {})
    out = {}
    for key, item in value.items():
        if key == LINES_KEY:
            continue
        if key not in known:
            where = {**at.where(), "line": lines.get(key, at.line)}
            raise UnknownKeyError.of(key, known, **where)
        out[key] = _convert(hints[key], item, at.key(key, lines))
    return out


def strip_lines(value: Any) -> Any:
    """The same data without the line records (what ``Any`` values hold)."""
    if isinstance(value, dict):
        return {k: strip_lines(v) for k, v in value.items() if k != LINES_KEY}
    if isinstance(value, list):
        return [strip_lines(v) for v in value]
    return value


def _show(value: Any) -> str:
    """A value as an error prints it (mappings without their line records)."""
    return shown(strip_lines(value))  # a huge integer by its size, not a ValueError
