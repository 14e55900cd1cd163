"""Repeat statistics of a sweep: mean, spread and 95% confidence intervals over seeds.

A table of single runs cannot tell a real gain from seed noise; with ``seeds: N`` every design
is trained N times and the report states each AP as mean ± sample std, and a difference
between two designs with its 95% confidence interval: a paired t interval when both were
trained with the same seeds (the seed fixes data order and initialisation, so pairing removes
that shared noise), Welch's interval otherwise. A difference whose interval contains 0 is
marked not significant. The t quantiles come from scipy; nothing here imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

LEVEL = 0.95  # confidence level of every interval in the reports
POWER = 0.8  # the power a minimum detectable difference is stated at


def _t(df: float) -> float:
    """The two-sided ``LEVEL`` quantile of Student's t with ``df`` degrees of freedom."""
    return float(scipy_stats.t.ppf(0.5 + LEVEL / 2, df))


def _clean(values: Sequence[float]) -> np.ndarray:
    array = np.asarray([float(v) for v in values], dtype=float)
    return array[np.isfinite(array)]


@dataclass(frozen=True)
class Summary:
    """Mean, sample std (ddof=1) and 95% CI half-width of n repeats; NaN spread for n < 2."""

    n: int
    mean: float
    std: float
    ci95: float


def summarize(values: Sequence[float]) -> Summary:
    """The repeats' summary (non-finite values, e.g. a failed seed's, are left out)."""
    x = _clean(values)
    n = len(x)
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan)
    if n == 1:
        return Summary(1, float(x[0]), math.nan, math.nan)
    std = float(np.std(x, ddof=1))
    return Summary(n, float(x.mean()), std, _t(n - 1) * std / math.sqrt(n))


@dataclass(frozen=True)
class Difference:
    """``new - old`` with its 95% CI half-width; ``test``: "paired", "welch" or "" (none)."""

    delta: float
    ci95: float
    test: str
    n_old: int
    n_new: int
    se: float = math.nan  # standard error of ``delta``
    df: float = math.nan  # its degrees of freedom (paired: pairs - 1; Welch's)

    def minimum_detectable(self, power: float = POWER) -> float:
        """The smallest true difference this comparison finds significant with probability
        ``power`` (two-sided t test at ``LEVEL``): (t_{1-a/2} + t_{power}) x se. NaN without
        a noise estimate; what a table's seeds could have shown at all."""
        if not (math.isfinite(self.se) and math.isfinite(self.df)) or self.df <= 0:
            return math.nan
        return (_t(self.df) + float(scipy_stats.t.ppf(power, self.df))) * self.se

    @property
    def estimated(self) -> bool:
        """Whether there is a noise estimate (both sides repeated)."""
        return math.isfinite(self.ci95)

    @property
    def significant(self) -> bool:
        """The interval excludes 0 (False without a noise estimate)."""
        return self.estimated and abs(self.delta) > self.ci95


def _finite_pairs(values: Mapping[int, float]) -> dict[int, float]:
    return {s: float(v) for s, v in values.items() if v is not None and math.isfinite(float(v))}


def difference(old: Mapping[int, float], new: Mapping[int, float]) -> Difference:
    """``new - old`` over seed -> value maps: paired when both hold the same seeds (>= 2),
    Welch when they do not, no interval when a side has fewer than two values."""
    old, new = _finite_pairs(old), _finite_pairs(new)
    a, b = np.array(list(old.values())), np.array(list(new.values()))
    if not len(a) or not len(b):
        return Difference(math.nan, math.nan, "", len(a), len(b))
    delta = float(b.mean() - a.mean())
    if len(a) < 2 or len(b) < 2:
        return Difference(delta, math.nan, "", len(a), len(b))
    if set(old) == set(new):
        d = np.array([new[s] - old[s] for s in sorted(old)])
        se = float(np.std(d, ddof=1)) / math.sqrt(len(d))
        df = len(d) - 1
        return Difference(float(d.mean()), _t(df) * se, "paired", len(a), len(b), se, df)
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return Difference(delta, 0.0, "welch", len(a), len(b), 0.0, len(a) + len(b) - 2)
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return Difference(delta, _t(dof) * se, "welch", len(a), len(b), se, dof)


@dataclass(frozen=True)
class SeedNoise:
    """The seed noise of one run at a budget: the pooled within-design sample std that
    ``lab calibrate`` measured (``df`` = runs - designs). A search trains each design once, so
    this is the only noise estimate its table can state: a single run lies within
    ``ci95`` of its design's mean with 95% probability, and two designs' single runs differ
    by more than ``difference_ci95`` only if the designs differ."""

    metric: str
    std: float
    df: int
    designs: int
    seeds: int
    # the design x seed interaction std (``interaction_std``): the noise of a difference
    # between two designs trained with the same seed, as a search trains them; None: unknown
    shared_seed_std: float | None = None
    shared_seed_df: int = 0

    @property
    def ci95(self) -> float:
        return _t(self.df) * self.std

    @property
    def paired(self) -> bool:
        """Whether differences use the interaction (same-seed) noise."""
        return self.shared_seed_std is not None and self.shared_seed_df >= 1

    @property
    def difference_ci95(self) -> float:
        """Half-width of the 95% interval of the difference of two single runs: with the same
        seed (a search's), 2 x the interaction variance; else 2 x the pooled variance."""
        if self.paired:
            return _t(self.shared_seed_df) * self.shared_seed_std * math.sqrt(2)
        return _t(self.df) * self.std * math.sqrt(2)


def pooled_std(groups: Sequence[Sequence[float]]) -> tuple[float, int]:
    """sqrt(sum_i (n_i - 1) s_i^2 / sum_i (n_i - 1)) over groups of repeats, and its degrees of
    freedom (NaN, 0 when no group has two values)."""
    squares, df = 0.0, 0
    for group in groups:
        x = _clean(group)
        if len(x) >= 2:
            squares += float(((x - x.mean()) ** 2).sum())
            df += len(x) - 1
    return (math.sqrt(squares / df), df) if df else (math.nan, 0)


def interaction_std(table: Sequence[Sequence[float]]) -> tuple[float, int]:
    """The residual std of the additive model ``value = design + seed`` (two-way ANOVA
    without replication) over the designs (rows) with a finite value for every seed
    (columns), and its degrees of freedom (designs - 1)(seeds - 1); (NaN, 0) without two
    such designs and two seeds. A seed's data order and initialisation push every design the
    same way (the shared part cancels in a same-seed difference); this is what is left."""
    x = np.asarray([[float(v) for v in row] for row in table], dtype=float)
    if x.ndim != 2:
        return math.nan, 0
    x = x[np.isfinite(x).all(1)]
    n_designs, n_seeds = x.shape if x.size else (0, 0)
    df = (n_designs - 1) * (n_seeds - 1)
    if n_designs < 2 or n_seeds < 2:
        return math.nan, 0
    residual = x - x.mean(1, keepdims=True) - x.mean(0, keepdims=True) + x.mean()
    return math.sqrt(float((residual**2).sum()) / df), df
