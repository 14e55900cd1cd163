"""The paper's numbers for an experiment's rows (shipped CSVs), in the report's units.

Table 1 and 2 rows are keyed by model name (``paper_table1.csv``, ``paper_table2.csv``),
Tables 3-8 by the row label printed in the paper (``paper_ablations.csv``). AP values stay in
percent as printed; validation AP is preferred, test-dev AP is used where only it exists.
"""

from __future__ import annotations

import math
from functools import cache
from importlib import resources
from typing import Any

import pandas as pd

_FILES = {1: "paper_table1.csv", 2: "paper_table2.csv"}
_AP_COLUMNS = {
    "AP": ("ap_val", "ap_test"),
    "AP50": ("ap50_val", "ap50_test"),
    "AP75": ("ap75_val", "ap75_test"),
    "APs": ("aps_val", "aps_test"),
    "APm": ("apm_val", "apm_test"),
    "APl": ("apl_val", "apl_test"),
}


@cache
def _read(name: str) -> pd.DataFrame:
    path = resources.files("scaling_lab.zoo") / "published" / name
    return pd.read_csv(str(path))


def _number(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out


def _row_numbers(row: pd.Series) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, column in (("params_m", "params_m"), ("gflops", "gflops"), ("img_size", "img_size")):
        value = _number(row.get(column))
        if value is not None:
            out[key] = value
    fps = _number(row.get("fps_v100"))
    if fps is not None:
        out["fps"] = fps
    for key, columns in _AP_COLUMNS.items():
        for column in columns:
            value = _number(row.get(column))
            if value is not None:
                out[key] = value
                break
    return out


def paper_rows(table: int) -> dict[str, dict[str, float]]:
    """Row label (model name for Tables 1-2) -> the paper's numbers for that row."""
    if table in _FILES:
        frame = _read(_FILES[table])
        return {str(r["model"]): _row_numbers(r) for _, r in frame.iterrows()}
    frame = _read("paper_ablations.csv")
    frame = frame[frame["table"] == table]
    return {str(r["row"]): _row_numbers(r) for _, r in frame.iterrows()}


def paper_peers() -> list[dict[str, Any]]:
    """Table 2's real-time detectors as reference points for the AP plots (COCO, V100 FPS)."""
    frame = _read("paper_table2.csv")
    peers = []
    for _, row in frame.iterrows():
        numbers = _row_numbers(row)
        if "AP" in numbers:
            peers.append({"model": str(row["model"]), "family": str(row["family"]), **numbers})
    return peers
