"""The one error type users see for bad specs: a one-line message naming file, node and field."""

from __future__ import annotations


class SpecError(ValueError):
    """A problem in user input (spec text, model name, transform argument).

    The message always names where: ``file: node 'name': field 'f': what was expected``.
    The CLI prints it as one line and exits with status 2.
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
        self.source = source
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

    def located(self, source: str | None = None, line: int | None = None) -> SpecError:
        """Return a copy that also names the file (and line), for errors raised deep down."""
        return SpecError(
            self.reason,
            source=self.source or source,
            node=self.node,
            field=self.field,
            line=self.line or line,
        )
