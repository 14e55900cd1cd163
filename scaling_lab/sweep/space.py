"""Search-space entries: Optuna distributions and constraints, parsed from YAML and checked.

A parameter is written as one mapping::

    elan2.depth: {type: int, low: 1, high: 4}              # step 1; ``log: true`` allowed
    scale.width: {type: float, low: 0.25, high: 1.0, step: 0.25}
    repconv:     {type: categorical, choices: [none, planned, all]}

A constraint is ``"METRIC OP NUMBER"`` with OP one of ``<= < >= >`` (``params <= 40e6``). It
is checked on the trial's profile before any training, so a design that breaks it costs
milliseconds, not an epoch.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from scaling_lab import schema
from scaling_lab.limits import MAX_CHOICES, MAX_SEARCH_ABS
from scaling_lab.schema import FieldError
from scaling_lab.spec.errors import SpecError

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    "<": operator.lt,
    ">=": operator.ge,
    ">": operator.gt,
}
_CONSTRAINT = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(<=|>=|<|>)\s*([-+0-9.eE_]+)\s*$")


@dataclass(frozen=True)
class Distribution:
    """One searched parameter: int/float range (optional step, log) or categorical choices."""

    type: Literal["int", "float", "categorical"]
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def check(self) -> None:
        """What the types cannot say: the keys of each kind, bounds in order, step vs log."""
        if self.type == "categorical":
            if self.low is not None or self.high is not None or self.step is not None or self.log:
                raise FieldError("", "a categorical distribution has only 'choices'")
            if not self.choices:
                raise FieldError("choices", "categorical needs a non-empty list 'choices'")
            if len(self.choices) > MAX_CHOICES:
                raise FieldError(
                    "choices", f"{len(self.choices)} choices, more than {MAX_CHOICES} (MAX_CHOICES)"
                )
            return
        integer = self.type == "int"
        kind = "integer" if integer else "number"
        if self.choices:
            raise FieldError("choices", f"a {self.type} distribution has no 'choices'")
        for name in ("low", "high", "step"):
            value = getattr(self, name)
            if name != "step" and not _number(value, integer=integer):
                raise FieldError(name, f"'{name}' must be a finite {kind}")
            if value is not None and _number(value, integer=False) and abs(value) > MAX_SEARCH_ABS:
                raise FieldError(
                    name,
                    f"'{name}' must be within +-{MAX_SEARCH_ABS:g} (MAX_SEARCH_ABS), got {value}",
                )
        if self.low >= self.high:
            raise FieldError("", f"'low' ({self.low}) must be below 'high' ({self.high})")
        if self.step is not None:
            if not _number(self.step, integer=integer) or self.step <= 0:
                raise FieldError("step", f"'step' must be a positive {kind}")
            if self.log:
                raise FieldError("", "'step' and 'log: true' cannot be combined")
        if self.log and self.low <= 0:
            raise FieldError("low", f"'log: true' needs 'low' > 0, got {self.low}")

    def to_optuna(self) -> Any:
        """The equivalent ``optuna.distributions`` object (what the sampler draws from)."""
        from optuna import distributions as od

        if self.type == "int":
            return od.IntDistribution(
                int(self.low), int(self.high), log=self.log, step=int(self.step or 1)
            )
        if self.type == "float":
            return od.FloatDistribution(
                float(self.low), float(self.high), log=self.log, step=self.step
            )
        return od.CategoricalDistribution(self.choices)

    def corners(self) -> list[Any]:
        """The extreme values (both bounds, every choice): enough to check a path accepts them."""
        if self.type == "categorical":
            return list(self.choices)
        if self.type == "int":
            return [int(self.low), int(self.high)]
        return [float(self.low), float(self.high)]


@dataclass(frozen=True)
class SpaceFile:
    """A ``search_spaces/*.yaml`` file: parameters and the constraints that go with them."""

    params: dict[str, Distribution]
    constraints: tuple[str, ...] = ()
    description: str = ""

    def check(self) -> None:
        from scaling_lab.sweep.materialize import check_paths

        check_paths(self.params, "params")


def _number(value: Any, *, integer: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    return (isinstance(value, int) or float(value).is_integer()) if integer else True


def parse_distribution(raw: Any, *, path: str, source: str) -> Distribution:
    """Check one parameter's mapping; every mistake names the parameter path."""
    return schema.build(Distribution, raw, source=source, path=f"space.{path}")


@dataclass(frozen=True)
class Constraint:
    """``metric op bound``: a design must satisfy it to be trained."""

    metric: str
    op: str
    bound: float

    def holds(self, value: float | None) -> bool:
        return value is not None and OPERATORS[self.op](value, self.bound)

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.bound:g}"


def parse_constraint(
    text: Any, *, source: str, known: tuple[str, ...], field: str = "constraints"
) -> Constraint:
    """``"params <= 40e6"`` -> Constraint; the metric must be one a profile measures
    (``field``: where the text was written, for the error)."""
    match = _CONSTRAINT.match(text) if isinstance(text, str) else None
    if match is None:
        raise SpecError(
            f"expected 'METRIC OP NUMBER' (OP: <=, <, >=, >), got {text!r}",
            source=source,
            field=field,
        )
    metric, op, number = match.groups()
    if metric not in known:
        raise SpecError(
            f"constraint on unknown metric '{metric}' (known before training: {', '.join(known)})",
            source=source,
            field=field,
        )
    try:
        bound = float(number.replace("_", ""))
    except ValueError:
        raise SpecError(f"bad number '{number}' in {text!r}", source=source, field=field) from None
    return Constraint(metric, op, bound)
