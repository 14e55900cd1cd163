"""The results store: one JSON row per trial, written atomically by the trial itself.

Layout of a sweep's folder (``--storage DIR``, default ``runs/sweeps``)::

    DIR/EXPERIMENT/trials/KEY/row.json    the trial's row (status running -> finished, ...)
    DIR/EXPERIMENT/trials/KEY/spec.yaml   the materialized spec the trial profiled / trained
    DIR/EXPERIMENT/trials/KEY/train/      the training run (checkpoints: a killed trial resumes)
    DIR/EXPERIMENT/trials/KEY/faults/     markers of injected test faults (``faults.py``)
    DIR/EXPERIMENT/optuna.db              the Optuna study of a search (SQLite)
    DIR/EXPERIMENT/proposals.json         a search's proposals in order, batch by batch
    DIR/EXPERIMENT/ray/                   Ray Tune's own experiment folder

The trial writes its row when it starts, after every epoch and when it ends, so a finished
trial is on disk even if the driver dies the next instant. The rows are the source of truth:
``--resume`` skips every key with a terminal row, and the tidy table under
``reports/EXPERIMENT/`` (``results.csv`` and ``results.parquet``) is rebuilt from them.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pandas as pd

from scaling_lab.atomic import atomic_write, atomic_write_text
from scaling_lab.errors import UserError
from scaling_lab.sweep.columns import fixed_columns

TERMINAL = ("finished", "failed", "infeasible", "stopped")


class TrialStore:
    """Per-trial rows of one sweep under ``root`` (= DIR/EXPERIMENT)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    def trial_dir(self, key: str) -> Path:
        return self.root / "trials" / key

    def read(self, key: str) -> dict[str, Any] | None:
        path = self.trial_dir(key) / "row.json"
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:  # cannot happen with atomic writes; treat as not run
            return None

    def write(self, key: str, row: dict[str, Any]) -> None:
        atomic_write_text(self.trial_dir(key) / "row.json", json.dumps(row, indent=1) + "\n")

    def rows(self) -> list[dict[str, Any]]:
        folder = self.root / "trials"
        if not folder.is_dir():
            return []
        rows = [self.read(path.name) for path in sorted(folder.iterdir()) if path.is_dir()]
        return [row for row in rows if row is not None]

    def proposals(self) -> list[dict[str, Any]]:
        """A search's proposals in the order the sampler made them (``search.py``)."""
        path = self.root / "proposals.json"
        if not path.is_file():
            return []
        try:
            return list(json.loads(path.read_text()))
        except json.JSONDecodeError:  # cannot happen with atomic writes
            raise UserError(
                "damaged proposal log: remove the sweep folder", source=str(path)
            ) from None

    def write_proposals(self, proposals: list[dict[str, Any]]) -> None:
        atomic_write_text(self.root / "proposals.json", json.dumps(proposals, indent=1) + "\n")

    def terminal_keys(
        self, *, retry_failed: bool = False, rows: list[dict[str, Any]] | None = None
    ) -> set[str]:
        """Keys whose trials need no rerun (failed ones too, unless ``retry_failed``);
        ``rows``: the rows when already read."""
        done = set()
        for row in self.rows() if rows is None else rows:
            status = row.get("status")
            if status in TERMINAL and not (retry_failed and status == "failed"):
                done.add(row["key"])
        return done


def results_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows -> the tidy table, ordered by declared order / trial number: the fixed columns
    (``columns.py``) first, then the others a row has (``param:PATH``...), sorted."""
    columns = fixed_columns()
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=list(columns))
    extra = _extra_runs(frame)
    search = (frame["kind"] == "search") & ~extra
    if search.any():  # search trials numbered in proposal order (start time before): t000, ...
        trials = frame[search].assign(_proposal=frame["order"].where(frame["order"] >= 0))
        ranked = trials.sort_values(["_proposal", "started_at", "key"], kind="stable").index
        frame.loc[ranked, "order"] = range(len(ranked))
        frame.loc[ranked, "label"] = [f"t{i:03d}" for i in range(len(ranked))]
    if extra.any():  # baselines and confirm runs after the trials; a design's run its label
        labels = dict(zip(frame.loc[search, "key"], frame.loc[search, "label"]))
        designs = extra & frame["design_key"].notna()
        frame.loc[designs, "label"] = [labels.get(k, k) for k in frame.loc[designs, "design_key"]]
        frame.loc[extra, "order"] = int(search.sum()) + frame.loc[extra, "order"].astype(int)
    for column in columns:
        if column not in frame:
            frame[column] = None
    extra = sorted(c for c in frame.columns if c not in columns)
    frame = frame[[*columns, *extra]]
    return frame.sort_values(["order", "seed", "key"], kind="stable").reset_index(drop=True)


def _extra_runs(frame: pd.DataFrame) -> pd.Series:
    """A search's baseline and confirm-phase rows (``sweep/confirm.py``)."""
    if "phase" not in frame:
        return pd.Series(False, index=frame.index)
    baseline = frame["baseline"].eq(True) if "baseline" in frame else False
    return frame["phase"].eq("confirm") | baseline


def write_results(frame: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """``results.csv`` and ``results.parquet`` (atomic writes) in ``out_dir``."""
    out_dir = Path(out_dir)
    csv_path = atomic_write_text(out_dir / "results.csv", frame.to_csv(index=False))
    buffer = io.BytesIO()
    # object columns mixing numbers and None are written as text so parquet keeps one type
    frame.convert_dtypes().to_parquet(buffer, index=False)
    parquet_path = atomic_write(out_dir / "results.parquet", lambda f: f.write(buffer.getvalue()))
    return [csv_path, parquet_path]


def read_results(out_dir: str | Path) -> pd.DataFrame:
    path = Path(out_dir) / "results.csv"
    if not path.is_file():
        raise UserError("no results here: run `lab sweep` first", source=str(path))
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise UserError(
            f"not a results table ({reason}): rerun `lab sweep`", source=str(path)
        ) from None
