"""Errors in model specs: a ``UserError`` that names file, line, node and field."""

from __future__ import annotations

from scaling_lab.errors import UserError


class SpecError(UserError):
    """A problem in a model spec, a model name or a transform argument.

    The message always names where: ``file: node 'name': field 'f': what was expected``.
    """
