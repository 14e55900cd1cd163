"""The fallback of a latency table: per op group, ms ~ a * MACs + b * bytes + c, fitted on the
table's own entries, with its cross-validated error stored next to the coefficients.

Why this form: an op is bound by arithmetic (MACs), by memory traffic (bytes of its inputs,
output and weights) or by fixed dispatch cost (c); the sum is a roofline without its max,
which is what per-op timings on CPUs and GPUs look like at the sizes detectors use. The fit
minimizes *relative* error (each row divided by its measured ms), because a table spans
microsecond concats and 100 ms convs and a prediction is judged in percent; coefficients are
kept non-negative (scipy's NNLS), so a configuration outside the measured range is not
extrapolated into a negative time.

Groups: the refined group of an op (``conv/k3/s2``) when it has ``MIN_GROUP`` entries, else
its kind (``conv``) with ``MIN_KIND``, else ``*`` (every entry). Built at table-build time;
prediction only reads the numbers (no numpy there).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from scaling_lab.analyze.latency_table import FALLBACK_FEATURES

MIN_GROUP = 6  # entries a refined group needs for a fit of its own
MIN_KIND = 3  # entries an op kind needs
MAX_FOLDS = 5
ANY = "*"


def fit_fallbacks(entries: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """A fit per refined group, per kind and over all entries, where each has enough rows."""
    members: dict[str, list[Mapping[str, Any]]] = {}
    for entry in entries.values():
        group, kind = entry["group"], entry["kind"]
        for name in dict.fromkeys((group, kind, ANY)):
            members.setdefault(name, []).append(entry)
    fits = {}
    for name, rows in sorted(members.items()):
        refined = "/" in name
        if len(rows) < (MIN_GROUP if refined else MIN_KIND):
            continue
        fits[name] = fit_rows(rows)
    return fits


def features(entry: Mapping[str, Any]) -> list[float]:
    """The regressors of one entry, in ``FALLBACK_FEATURES`` order."""
    return [float(entry["macs"]), float(entry["bytes"]), 1.0]


def fit_rows(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Fit ``rows`` (table entries); the result is what the table stores for a group."""
    import numpy as np

    x = np.array([features(r) for r in rows], dtype=float)
    y = np.array([float(r["ms"]) for r in rows], dtype=float)
    coef = _fit(x, y)
    return {
        "features": list(FALLBACK_FEATURES),
        "coef": [float(c) for c in coef],
        "n": len(rows),
        "fit_mape": round(_mape(x @ coef, y), 3),
        "cv_mape": _cv_mape(x, y),
    }


def _fit(x, y):
    """Non-negative coefficients minimizing the squared relative error."""
    import numpy as np
    from scipy.optimize import nnls

    y_safe = np.maximum(y, 1e-6)
    scaled = x / y_safe[:, None]
    norm = np.abs(scaled).max(axis=0)
    norm[norm == 0] = 1.0
    solution, _ = nnls(scaled / norm, np.ones(len(y)))
    return solution / norm


def _mape(pred, y) -> float:
    import numpy as np

    return float(100.0 * np.mean(np.abs(pred - y) / np.maximum(y, 1e-6)))


def _cv_mape(x, y) -> float | None:
    """k-fold (k <= 5, rows dealt round-robin) MAPE of held-out predictions; None below 4
    rows, where a held-out error means nothing."""
    import numpy as np

    n = len(y)
    if n < 4:
        return None
    folds = min(MAX_FOLDS, n)
    pred = np.empty(n)
    index = np.arange(n)
    for k in range(folds):
        held = index % folds == k
        pred[held] = x[held] @ _fit(x[~held], y[~held])
    return round(_mape(pred, y), 3)
