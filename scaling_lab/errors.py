"""The one base class of every error a user can cause, and how it reads on one line.

Anything the user controls (spec text, model names, flags, datasets, checkpoints, experiment
files, a cluster address, a device request) is checked where it is read and refused with a
``UserError`` subclass. The CLI catches ``UserError`` once, prints its one line and exits 2;
any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """A problem in user input, named where it is: ``file:line: node 'n': field 'f': reason``.

    A ``ValueError`` so that library callers who catch the standard type keep working.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        node: str | None = None,
        field: str | None = None,
        line: int | None = None,
    ) -> None:
        self.source = None if source is None else str(source)
        self.node = node
        self.field = field
        self.line = line
        self.reason = message
        super().__init__(self._format())

    def _format(self) -> str:
        parts = []
        if self.source:
            parts.append(f"{self.source}:{self.line}" if self.line else self.source)
        if self.node:
            parts.append(f"node '{self.node}'")
        if self.field:
            parts.append(f"field '{self.field}'")
        parts.append(self.reason)
        return ": ".join(parts)

    def located(self, source: str | None = None, line: int | None = None) -> UserError:
        """A copy of the same class that also names the file (and line), for errors raised
        deep down where the file is not known."""
        return type(self)(
            self.reason,
            source=self.source or source,
            node=self.node,
            field=self.field,
            line=self.line or line,
        )


def shown(value: object, limit: int = 80) -> str:
    """``repr(value)`` for an error message, at most ``limit`` characters. An integer too long
    to print (Python refuses past 4300 digits, a traceback in the middle of an error) is shown
    by its size instead."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 1000:
        digits = int(value.bit_length() * 0.30103) + 1  # log10(2): exact to one digit
        return f"{'a negative' if value < 0 else 'an'} integer of about {digits} digits"
    try:
        text = repr(value)
    except ValueError:  # a huge integer inside a container
        return f"a {type(value).__name__} holding an integer too long to print"
    return text if len(text) <= limit else text[: limit - 3] + "..."
