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
from typing import Any

from scaling_lab.spec.errors import SpecError

DIST_KEYS = {
    "int": {"type", "low", "high", "step", "log"},
    "float": {"type", "low", "high", "step", "log"},
    "categorical": {"type", "choices"},
}
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

    type: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def to_optuna(self) -> Any:
        """The equivalent ``optuna.distributions`` object (what the sampler draws from)."""
        from optuna import distributions as od

        if self.type == "int":
            return od.IntDistribution(
                int(self.low), int(self.high), log=self.log, step=int(self.step or 1)
            )
        if self.type == "float":
            return od.FloatDistribution(self.low, self.high, log=self.log, step=self.step)
        return od.CategoricalDistribution(self.choices)

    def corners(self) -> list[Any]:
        """The extreme values (both bounds, every choice): enough to check a path accepts them."""
        if self.type == "categorical":
            return list(self.choices)
        if self.type == "int":
            return [int(self.low), int(self.high)]
        return [self.low, self.high]


def _number(value: Any, *, integer: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return (isinstance(value, int) or float(value).is_integer()) if integer else True


def parse_distribution(raw: Any, *, path: str, source: str) -> Distribution:
    """Check one parameter's mapping; every mistake names the parameter path."""

    def fail(message: str) -> SpecError:
        return SpecError(message, source=source, field=f"space.{path}")

    if not isinstance(raw, dict):
        raise fail(f"expected a mapping like {{type: int, low: 1, high: 4}}, got {raw!r}")
    kind = raw.get("type")
    if kind not in DIST_KEYS:
        raise fail(f"unknown distribution type {kind!r} (known: {', '.join(DIST_KEYS)})")
    extra = set(raw) - DIST_KEYS[kind] - {"__lines__"}
    if extra:
        raise fail(f"unknown key(s) {sorted(extra)} for a {kind} distribution")
    if kind == "categorical":
        choices = raw.get("choices")
        if not isinstance(choices, list) or not choices:
            raise fail("categorical needs a non-empty list 'choices'")
        return Distribution("categorical", choices=tuple(choices))
    integer = kind == "int"
    low, high, step, log = raw.get("low"), raw.get("high"), raw.get("step"), raw.get("log", False)
    for name, value in (("low", low), ("high", high)):
        if not _number(value, integer=integer) or not math.isfinite(value):
            raise fail(f"'{name}' must be a finite {'integer' if integer else 'number'}")
    if low >= high:
        raise fail(f"'low' ({low}) must be below 'high' ({high})")
    if not isinstance(log, bool):
        raise fail(f"'log' must be true or false, got {log!r}")
    if step is not None:
        if not _number(step, integer=integer) or step <= 0:
            raise fail(f"'step' must be a positive {'integer' if integer else 'number'}")
        if log:
            raise fail("'step' and 'log: true' cannot be combined")
    if log and low <= 0:
        raise fail(f"'log: true' needs 'low' > 0, got {low}")
    if integer:
        return Distribution("int", int(low), int(high), int(step) if step else None, log)
    return Distribution("float", float(low), float(high), step, log)


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


def parse_constraint(text: Any, *, source: str, known: tuple[str, ...]) -> Constraint:
    """``"params <= 40e6"`` -> Constraint; the metric must be one a profile measures."""
    match = _CONSTRAINT.match(text) if isinstance(text, str) else None
    if match is None:
        raise SpecError(
            f"expected 'METRIC OP NUMBER' (OP: <=, <, >=, >), got {text!r}",
            source=source,
            field="constraints",
        )
    metric, op, number = match.groups()
    if metric not in known:
        raise SpecError(
            f"constraint on unknown metric '{metric}' (known before training: {', '.join(known)})",
            source=source,
            field="constraints",
        )
    try:
        bound = float(number.replace("_", ""))
    except ValueError:
        raise SpecError(
            f"bad number '{number}' in {text!r}", source=source, field="constraints"
        ) from None
    return Constraint(metric, op, bound)
