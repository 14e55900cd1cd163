"""A run's logs: per-step CSV (losses, lr), per-epoch CSV (means, AP), TensorBoard, loss plot.

Rows are flushed as they are written, so a killed run leaves a readable log. On resume the
logs are cut back to the checkpoint (steps after it are recomputed and written again), so the
log of a resumed run equals the log of an uninterrupted one. TensorBoard is optional: without
the ``tensorboard`` package only the CSV files are written.
"""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path
from typing import Any

STEPS_CSV = "steps.csv"
RESULTS_CSV = "results.csv"


def truncate_csv(path: Path, key: str, keep_below: int) -> None:
    """Keep the header and the rows whose integer column ``key`` is < ``keep_below``."""
    if not path.is_file():
        return
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
        fields = list(rows[0].keys()) if rows else None
    if fields is None:
        return
    kept = [r for r in rows if r.get(key) not in (None, "") and int(r[key]) < keep_below]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept)


def read_csv(path: str | Path) -> list[dict[str, str]]:
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f))


class _CsvFile:
    """Append rows to a CSV file; the header comes from the first row (or the existing file)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fields: list[str] | None = None
        if path.is_file() and path.stat().st_size:
            with path.open(newline="") as f:
                self.fields = next(csv.reader(f), None)
        self._file = path.open("a", newline="")

    def write(self, row: dict[str, Any]) -> None:
        if self.fields is None:
            self.fields = list(row)
            csv.writer(self._file).writerow(self.fields)
        writer = csv.DictWriter(self._file, fieldnames=self.fields, extrasaction="ignore")
        writer.writerow({k: _fmt(v) for k, v in row.items()})
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return repr(value)  # round-trips exactly
    return "" if value is None else value


def _summary_writer(log_dir: Path, purge_step: int | None):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard not installed: CSV only
        return None
    return SummaryWriter(str(log_dir), purge_step=purge_step)


class RunLog:
    """Writes ``steps.csv``, ``results.csv`` and TensorBoard events under ``run_dir``.

    ``resume_step`` / ``resume_epoch``: cut logs written after the checkpoint being resumed
    (steps with global step >= ``resume_step``, epochs >= ``resume_epoch``); both 0 or None
    (a fresh run) remove earlier logs.
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        tensorboard: bool = True,
        resume_step: int | None = None,
        resume_epoch: int | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if not resume_step and not resume_epoch:  # a fresh run: no rows from an earlier one
            for name in (STEPS_CSV, RESULTS_CSV):
                (self.run_dir / name).unlink(missing_ok=True)
        else:
            truncate_csv(self.run_dir / STEPS_CSV, "step", resume_step or 0)
            truncate_csv(self.run_dir / RESULTS_CSV, "epoch", resume_epoch or 0)
        self.steps = _CsvFile(self.run_dir / STEPS_CSV)
        self.results = _CsvFile(self.run_dir / RESULTS_CSV)
        self.tb = _summary_writer(self.run_dir / "tb", resume_step or 0) if tensorboard else None

    def step(self, row: dict[str, Any]) -> None:
        """One training step: ``step`` (global), ``epoch``, losses, lrs, ..."""
        self.steps.write(row)
        if self.tb is not None:
            for key in ("box", "obj", "cls", "total"):
                if key in row:
                    self.tb.add_scalar(f"train/{key}_loss", row[key], row["step"])
            for key, value in row.items():
                if key.startswith("lr_"):
                    self.tb.add_scalar(f"lr/{key[3:]}", value, row["step"])

    def epoch(self, row: dict[str, Any]) -> None:
        """One epoch: ``epoch``, ``step`` (global steps done), mean losses, AP metrics (empty
        where not evaluated). TensorBoard plots them against ``step`` too, so one purge step
        cuts both kinds of events on resume."""
        self.results.write(row)
        if self.tb is not None:
            for key, value in row.items():
                if key in ("epoch", "step") or not isinstance(value, float):
                    continue
                if math.isfinite(value):
                    self.tb.add_scalar(f"epoch/{key}", value, row["step"])

    def close(self) -> None:
        self.steps.close()
        self.results.close()
        if self.tb is not None:
            self.tb.close()


def plot_losses(run_dir: str | Path, out: str | Path | None = None) -> Path | None:
    """``loss.png``: per-step box/obj/cls/total losses of the run (None without matplotlib or
    without steps)."""
    run_dir = Path(run_dir)
    steps_file = run_dir / STEPS_CSV
    if not steps_file.is_file():
        return None
    rows = read_csv(steps_file)
    if not rows:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn("matplotlib is not installed: no loss.png", stacklevel=2)
        return None
    x = [int(r["step"]) for r in rows]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.5))
    for ax, key in zip(axes, ("box", "obj", "cls", "total")):
        ax.plot(x, [float(r[key]) for r in rows], linewidth=0.8)
        ax.set_title(f"{key} loss")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(out) if out is not None else run_dir / "loss.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
