"""Errors of weight conversion: a refused checkpoint file, or two graphs that do not align."""

from __future__ import annotations

from scaling_lab.errors import UserError


class ReferenceCheckpointError(UserError):
    """A reference checkpoint that cannot be read safely (or is not one): names the file and,
    for a refused pickle global, the global."""


class AlignmentError(UserError):
    """The checkpoint's model and the target model do not compute the same function layer by
    layer (usually: the wrong ``--model``)."""
