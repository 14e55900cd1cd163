"""The latency table file: per-op latencies measured on one device, read without torch.

A table is one JSON file (written atomically, see ``scaling_lab.atomic``)::

    {"format": "scaling_lab.latency_table", "version": 1,
     "protocol": {device, device_name, threads, dtype, batch, layout, torch_version,
                  allocator, timer, cache, ...},           # how every entry was measured
     "entries": {KEY: {"kind", "group", "ms", "p90_ms", "n", "macs", "bytes", "params"}},
     "overheads": {"per_op_ms", "model_ms", ...},          # measured, not guessed
     "fallback": {GROUP: {"features", "coef", "n", "fit_mape", "cv_mape"}},
     "sources": [{"model", "img_size", "layers", "configs"}], "complete": bool, "build_s"}

``KEY`` is ``OpConfig.key`` (the op with every field, its shapes, dtype, batch, layout).
``complete`` is false while a build runs (or after one was killed): the entries are kept and
a rerun measures only what is missing. Nothing here imports torch, so ``lab profile
--latency-table`` and sweeps load a table in milliseconds.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scaling_lab.atomic import atomic_write_text
from scaling_lab.errors import UserError
from scaling_lab.limits import MAX_TABLE_BYTES
from scaling_lab.spec.yaml_lines import loads_json, read_text_file

FORMAT = "scaling_lab.latency_table"
VERSION = 1
# protocol fields two measurements must share to live in one table (resume, prediction)
MATCHED = (
    "device",
    "device_name",
    "threads",
    "dtype",
    "batch",
    "layout",
    "runtime",
    "torch_version",
    "allocator",
    "timer",
    "cache",
    "warmup",
    "iters",
)
ENTRY_NUMBERS = ("ms", "macs", "bytes", "params")
FALLBACK_FEATURES = ("macs", "bytes", "const")


class TableError(UserError):
    """A latency table that is missing, malformed, incomplete or for another protocol."""


@dataclass
class LatencyTable:
    """A table in memory (the JSON's parts); ``path``: where it was read from, if anywhere."""

    protocol: dict[str, Any]
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    overheads: dict[str, Any] = field(default_factory=dict)
    fallback: dict[str, dict[str, Any]] = field(default_factory=dict)
    sources: list[dict[str, Any]] = field(default_factory=list)
    complete: bool = False
    build_s: float = 0.0
    path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "protocol": self.protocol,
            "complete": self.complete,
            "build_s": round(self.build_s, 2),
            "overheads": self.overheads,
            "fallback": self.fallback,
            "sources": self.sources,
            "entries": self.entries,
        }

    def describe(self) -> str:
        """One line: what was measured where (for messages and reports)."""
        p = self.protocol
        layout = "channels-last" if p.get("layout") == "nhwc" else "NCHW"
        return (
            f"{len(self.entries)} op configs on {p.get('device')} ({p.get('device_name')}), "
            f"{p.get('threads')} threads, {p.get('dtype')}, batch {p.get('batch')}, {layout}"
        )


def save_table(table: LatencyTable, path: str | Path) -> Path:
    """Write the table atomically (a reader or a killed build sees the old or the new file)."""
    text = json.dumps(table.to_dict(), indent=1, sort_keys=False)
    return atomic_write_text(path, text + "\n")


def load_table(path: str | Path, *, complete: bool = True) -> LatencyTable:
    """Read and check a table file; ``complete``: refuse one whose build did not finish (no
    overheads or fallback fit yet). Every problem is one ``TableError`` naming the file."""
    source = str(path)
    text = read_text_file(path, "latency table", max_bytes=MAX_TABLE_BYTES, error=TableError)
    try:
        data = loads_json(text, source, TableError)
    except json.JSONDecodeError as exc:
        raise TableError(f"not JSON ({exc.msg})", source=source, line=exc.lineno) from None
    except RecursionError:
        raise TableError("not a latency table: JSON nested too deeply", source=source) from None
    table = _parse(data, source)
    if complete and not table.complete:
        raise TableError(
            "the table's build did not finish (killed or still running): rerun `lab "
            "latency-table build` with the same --out to measure what is missing",
            source=source,
        )
    return table


def _parse(data: Any, source: str) -> LatencyTable:
    def fail(key: str, reason: str) -> TableError:
        return TableError(reason, source=source, field=key)

    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise TableError(f'not a latency table (no "format": "{FORMAT}")', source=source)
    if data.get("version") != VERSION:
        raise fail("version", f"version {data.get('version')!r}, this code reads {VERSION}")
    protocol = data.get("protocol")
    if not isinstance(protocol, dict) or any(k not in protocol for k in MATCHED):
        missing = [k for k in MATCHED if not isinstance(protocol, dict) or k not in protocol]
        raise fail("protocol", f"missing the protocol card's {', '.join(missing)}")
    entries = data.get("entries")
    if not isinstance(entries, dict):
        raise fail("entries", "must be a mapping of op configuration -> measurement")
    for key, entry in entries.items():
        _check_entry(key, entry, fail)
    overheads = data.get("overheads", {})
    fallback = data.get("fallback", {})
    if not isinstance(overheads, dict) or not isinstance(fallback, dict):
        raise fail("overheads", "overheads and fallback must be mappings")
    complete = data.get("complete") is True
    if complete:
        for key in ("per_op_ms", "model_ms"):
            if not _number(overheads.get(key)):
                raise fail(f"overheads.{key}", "must be a finite number")
        for group, fit in fallback.items():
            _check_fit(group, fit, fail)
    sources = data.get("sources", [])
    return LatencyTable(
        protocol=protocol,
        entries=entries,
        overheads=overheads,
        fallback=fallback,
        sources=sources if isinstance(sources, list) else [],
        complete=complete,
        build_s=float(data.get("build_s", 0.0)) if _number(data.get("build_s")) else 0.0,
        path=source,
    )


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_entry(key: str, entry: Any, fail) -> None:
    where = f"entries[{key[:60]}...]" if len(key) > 60 else f"entries[{key}]"
    if not isinstance(entry, dict):
        raise fail(where, "must be a mapping")
    for name in ENTRY_NUMBERS:
        if not _number(entry.get(name)) or entry[name] < 0:
            raise fail(f"{where}.{name}", "must be a finite number >= 0")
    for name in ("kind", "group"):
        if not isinstance(entry.get(name), str):
            raise fail(f"{where}.{name}", "must be a string")


def _check_fit(group: str, fit: Any, fail) -> None:
    where = f"fallback.{group}"
    if not isinstance(fit, dict):
        raise fail(where, "must be a mapping")
    coef = fit.get("coef")
    if (
        not isinstance(coef, list)
        or len(coef) != len(FALLBACK_FEATURES)
        or not all(_number(c) for c in coef)
    ):
        raise fail(f"{where}.coef", f"must be {len(FALLBACK_FEATURES)} finite numbers")


def check_protocol(table: LatencyTable, wanted: dict[str, Any], *, what: str) -> None:
    """Refuse a table measured under another protocol than ``wanted`` (the fields of
    ``MATCHED`` that ``wanted`` gives); ``what`` says what asked (``--out``, ``--device``)."""
    diffs = [
        f"{key} {table.protocol.get(key)!r} (asked: {wanted[key]!r})"
        for key in MATCHED
        if key in wanted and table.protocol.get(key) != wanted[key]
    ]
    if diffs:
        raise TableError(
            f"this table was measured under another protocol: {'; '.join(diffs)} ({what})",
            source=table.path,
        )


_CACHE: dict[str, tuple[tuple[int, int], LatencyTable]] = {}


def cached_table(path: str | Path) -> LatencyTable:
    """``load_table``, read once per process while the file is unchanged (a sweep's trials
    share one table; a prediction must stay within milliseconds)."""
    try:
        info = Path(path).stat()
    except OSError:
        return load_table(path)  # raises the TableError that says why
    stamp = (info.st_mtime_ns, info.st_size)
    hit = _CACHE.get(str(path))
    if hit is None or hit[0] != stamp:
        hit = (stamp, load_table(path))
        _CACHE[str(path)] = hit
    return hit[1]
