"""Pareto fronts of sweep results: which trials no other trial beats on every objective.

A search with several objectives (AP up, latency down, ...) has no single best trial; the
report marks the non-dominated ones so the trade-off curve can be read off the table and plots.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

MODES = ("max", "min")


def _signs(modes: Sequence[str]) -> np.ndarray:
    """+1 for "max", -1 for "min", so that larger is always better after multiplying."""
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise ValueError(f"unknown objective mode(s) {bad}; expected one of {list(MODES)}")
    return np.array([1.0 if m == "max" else -1.0 for m in modes])


def pareto_mask(values: np.ndarray, modes: Sequence[str]) -> np.ndarray:
    """Boolean mask of the rows of ``values`` (n x k) that no other row dominates.

    Row ``a`` dominates row ``b`` when it is at least as good on every objective and strictly
    better on one ("max": larger is better, "min": smaller). Rows with a NaN are never on the
    front and never dominate; equal rows do not dominate each other, so duplicates are all kept.
    """
    v = np.asarray(values, dtype=float)
    if v.ndim == 1:
        v = v[:, None]
    if v.ndim != 2:
        raise ValueError(f"values must be 1-D or 2-D, got shape {v.shape}")
    if len(modes) != v.shape[1]:
        raise ValueError(f"{v.shape[1]} objective column(s) but {len(modes)} mode(s)")
    scored = v * _signs(modes)
    valid = ~np.isnan(scored).any(axis=1)
    mask = valid.copy()
    candidates = scored[valid]
    for i in np.flatnonzero(valid):
        row = scored[i]
        dominated = np.all(candidates >= row, axis=1) & np.any(candidates > row, axis=1)
        mask[i] = not dominated.any()
    return mask


def finished_mask(df: pd.DataFrame) -> pd.Series:
    """Rows whose trial finished; a frame without a ``status`` column counts as all finished."""
    if "status" not in df.columns:
        return pd.Series(True, index=df.index)
    return df["status"].eq("finished").fillna(False).astype(bool)


def pareto_flags(df: pd.DataFrame, objectives: Mapping[str, str]) -> pd.Series:
    """Per-row flag (aligned with ``df.index``): finished and on the front of ``objectives``.

    A missing objective column counts as all-NaN, so then no row is on the front.
    """
    if not objectives:
        raise ValueError("no objectives given: a Pareto front needs at least one")
    cols = list(objectives)
    values = np.column_stack(
        [
            pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=float)
            if c in df.columns
            else np.full(len(df), np.nan)
            for c in cols
        ]
    ).reshape(len(df), len(cols))
    values[~finished_mask(df).to_numpy()] = np.nan
    mask = pareto_mask(values, [objectives[c] for c in cols])
    return pd.Series(mask, index=df.index)


def pareto_front(df: pd.DataFrame, objectives: Mapping[str, str]) -> pd.DataFrame:
    """The finished rows of ``df`` on the Pareto front of ``objectives`` (column -> max|min)."""
    return df[pareto_flags(df, objectives)]
