"""Errors and warnings about datasets: each one names the file (and the sample) at fault."""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

from scaling_lab.errors import UserError


class DataError(UserError):
    """A dataset that cannot be used as it is: missing or unreadable files, a malformed
    annotation file, an unknown category id. The message starts with the file at fault.

    A ``UserError``: the CLI prints it as one line and exits 2.
    """

    def __init__(self, message: str, *, source: str | Path | None = None, **kwargs) -> None:
        super().__init__(message, source=str(source) if source is not None else None, **kwargs)


class DataWarning(UserWarning):
    """Something in a dataset was repaired or skipped (a box clipped to its image, a degenerate
    box dropped); one warning per file and kind, with the count and the first example."""


class IssueLog:
    """Counts repairs per kind while a file is parsed, then warns once per kind."""

    def __init__(self, source: str | Path) -> None:
        self.source = str(source)
        self.counts: Counter[str] = Counter()
        self.first: dict[str, str] = {}

    def add(self, kind: str, example: str) -> None:
        self.counts[kind] += 1
        self.first.setdefault(kind, example)

    def emit(self, stacklevel: int = 3) -> None:
        for kind, count in self.counts.items():
            warnings.warn(
                f"{self.source}: {count} {kind} (first: {self.first[kind]})",
                DataWarning,
                stacklevel=stacklevel,
            )
