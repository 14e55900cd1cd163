"""What ``lab sweep`` prints while it runs: a line per finished trial and one live status line.

Ray Tune's own status table (every 5 s, mostly resource bookkeeping) says little a researcher
needs. This prints one line per trial as it ends (its key, the metrics it measured, how it
ended, how long it took) and, on a terminal, one line kept up to date below them: trials done
of the total, running, failed, the best so far (with its 95% interval when rows are repeated
over seeds), elapsed time and an estimate of the time left. Off a terminal (a log file, CI)
only the per-trial lines and a final summary are written, so the log reads top to bottom.

Nothing here knows Ray: the runner's callback feeds ``started``, ``ended`` and ``tick``.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from scaling_lab.eval_protocol import AP_KEYS
from scaling_lab.sweep.experiment_format import Experiment, Scheduler

REFRESH_S = 1.0  # the live line's update interval
# columns a trial line shows, in this order, when the row has them
SHOWN = ("AP", "AP50", "params_m", "gflops", "latency_ms")


def _duration(seconds: float) -> str:
    seconds = int(max(0.0, seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _fmt(name: str, value: float) -> str:
    if name == "params":
        return f"params {value / 1e6:.2f}M"
    if name == "params_m":
        return f"params {value:.2f}M"
    if name == "latency_ms":
        return f"latency {value:.1f} ms"
    if name == "gflops":
        return f"GFLOPs {value:.2f}"
    return f"{name} {value:.3f}"


class SweepProgress:
    """Progress of one sweep. ``metric``/``mode``: what "best" means (None: no best);
    ``summarize``: values -> object with ``n``, ``mean``, ``ci95`` (the report's statistics),
    for the interval of a repeated row; ``live``: None: only on a terminal."""

    def __init__(
        self,
        name: str,
        total: int,
        *,
        metric: str | None = None,
        mode: str = "max",
        shown: Sequence[str] = SHOWN,
        summarize: Callable[[Sequence[float]], Any] | None = None,
        stream: TextIO | None = None,
        live: bool | None = None,
    ) -> None:
        self.name, self.total = name, total
        self.metric, self.mode = metric, mode
        same = {metric, "params_m"} if metric == "params" else {metric}
        self.shown = [c for c in shown if c not in same]
        self.summarize = summarize
        self.stream = stream or sys.stdout
        isatty = getattr(self.stream, "isatty", lambda: False)
        self.live = isatty() if live is None else live
        self.rows: dict[str, dict[str, Any]] = {}  # key -> terminal row
        self.running: set[str] = set()
        self.done_before = 0
        self.t0 = time.monotonic()
        self._last_refresh = 0.0
        self._bar: Any = None

    def resume(self, rows: Sequence[dict[str, Any]]) -> None:
        """Trials a resumed sweep already holds count as done (they are not printed)."""
        for row in rows:
            self.rows[row["key"]] = row
        self.done_before = len(self.rows)

    def started(self, key: str) -> None:
        self.running.add(key)
        self.tick(force=True)

    def ended(self, row: dict[str, Any]) -> None:
        self.running.discard(row["key"])
        self.rows[row["key"]] = row
        self._write(self.trial_line(row))
        self.tick(force=True)

    def tick(self, force: bool = False) -> None:
        """Redraw the live line (at most once a second unless ``force``)."""
        now = time.monotonic()
        if not self.live or (not force and now - self._last_refresh < REFRESH_S):
            return
        self._last_refresh = now
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, bar_format="{desc}", file=self.stream, leave=False)
        self._bar.set_description_str(self.status_line(), refresh=True)

    def close(self) -> str:
        """End the live line and write the summary (returned too)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        line = self.summary_line()
        self._write(line)
        return line

    def _write(self, line: str) -> None:
        if self._bar is not None:
            self._bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    # --- the lines --------------------------------------------------------------------

    def trial_line(self, row: dict[str, Any]) -> str:
        """``#003 s-1a2b3c4d5e  AP50 0.312  params 2.13M  finished  41 s``."""
        if row.get("kind") == "search":
            order = row.get("order")
            tag = f"#{order:03d} {row['key']}" if isinstance(order, int) and order >= 0 else ""
            tag = tag or row["key"]
        else:
            tag = str(row.get("label") or row["key"])
            if row.get("seed") is not None and row["key"].endswith(f"-seed{row['seed']}"):
                tag += f" (seed {row['seed']})"
        parts = [tag]
        for name in [self.metric, *self.shown] if self.metric else self.shown:
            value = _number(row.get(name))
            if value is not None:
                parts.append(_fmt(name, value))
        status = str(row.get("status"))
        if status == "stopped" and row.get("epochs_done"):
            status += f" at epoch {row['epochs_done']}"
        if status in ("failed", "infeasible") and row.get("error"):
            status += f": {' '.join(str(row['error']).split())[:100]}"
        parts.append(status)
        wall = float(row.get("wall_s") or 0.0)
        parts.append(f"{wall:.1f} s" if wall < 10 else _duration(wall))
        return "  ".join(parts)

    def status_line(self) -> str:
        done = len(self.rows)
        failed = sum(r.get("status") == "failed" for r in self.rows.values())
        parts = [f"{self.name}: {done}/{self.total} done", f"{len(self.running)} running"]
        if failed:
            parts.append(f"{failed} failed")
        best = self.best()
        if best:
            parts.append(f"best {best}")
        elapsed = time.monotonic() - self.t0
        parts.append(f"{_duration(elapsed)} elapsed")
        new = done - self.done_before
        left = max(0, self.total - done)
        if left and new > 0:
            parts.append(f"ETA {_duration(elapsed / new * left)}")
        elif left:
            parts.append("ETA ?")
        return ", ".join(parts)

    def summary_line(self) -> str:
        counts: dict[str, int] = {}
        for row in self.rows.values():
            counts[str(row.get("status"))] = counts.get(str(row.get("status")), 0) + 1
        how = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "none"
        took = _duration(time.monotonic() - self.t0)
        line = f"{self.name}: {len(self.rows)} trials ({how}) in {took}"
        best = self.best()
        return f"{line}; best {best}" if best else line

    def best(self) -> str:
        """The best finished row by ``metric`` (its seeds' mean and 95% CI when repeated)."""
        if self.metric is None:
            return ""
        groups: dict[str, list[float]] = {}
        for row in self.rows.values():
            value = _number(row.get(self.metric))
            if row.get("status") == "finished" and value is not None:
                search = row.get("kind") == "search"
                name = row["key"] if search else str(row.get("label") or row["key"])
                groups.setdefault(name, []).append(value)
        if not groups:
            return ""
        sign = 1 if self.mode == "max" else -1
        name, values = max(groups.items(), key=lambda kv: sign * sum(kv[1]) / len(kv[1]))
        mean = _fmt(self.metric, sum(values) / len(values))
        if len(values) > 1 and self.summarize is not None:
            summary = self.summarize(values)
            if math.isfinite(summary.ci95):
                return f"{mean} ± {summary.ci95:.3f} (95% CI, {len(values)} seeds, {name})"
        if len(values) > 1:
            return f"{mean} (mean of {len(values)} seeds, {name})"
        return f"{mean} ({name})"


def progress_metric(experiment: Experiment, profile_only: bool) -> tuple[str | None, str]:
    """What "best" means for an experiment: its first AP objective (or its first objective),
    its scheduler's metric, or AP; None when nothing is ranked."""
    search = experiment.search
    trains = experiment.trains(profile_only)
    if search is not None:
        ranked = [m for m in search.objectives if m in AP_KEYS and trains] or [
            m for m in search.objectives if m not in AP_KEYS
        ]
        if ranked:
            return ranked[0], search.objectives[ranked[0]]
        return None, "max"
    if not trains:
        return None, "max"
    scheduler = experiment.scheduler
    if isinstance(scheduler, Scheduler):
        return scheduler.metric, scheduler.mode
    return "AP", "max"
