"""The result columns of a sweep, declared once.

A trial writes one row (``store.py``); each field of it is a ``Column`` here: the order of
``results.csv``, the metric names an experiment may collect, optimize and constrain, the
header of the paper-style table, the axis label of a plot and how a row's repeats combine
all come from this one table, so the store, the experiment checks, the tables and the plots
cannot drift apart (``tests/sweep/test_columns.py`` checks that every field the trial writes
is declared). Plain Python: importable without torch or pandas.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from scaling_lab.eval_protocol import AP_KEYS

# the step of a trial that writes a column
Stage = Literal["trial", "profile", "latency_pred", "latency", "train"]
# how a row's repeats (seeds) combine: the last trial's value, the mean, or the mean with a
# sample std and a 95% interval (``<name>_std``, ``<name>_ci95``)
Aggregate = Literal["last", "mean", "spread"]
# the improvement row's cell: relative change in %, or a difference in AP points
Change = Literal["rel", "ap"]

PARAM_PREFIX = "param:"  # a search's sampled value: ``param:PATH`` (not declared one by one)


@dataclass(frozen=True)
class Column:
    """One field of a trial's row."""

    name: str  # as in the row and results.csv
    stage: Stage
    header: str = ""  # in the paper-style table; "": the name
    axis: str = ""  # a plot's axis label; "": the name
    aggregate: Aggregate = "last"
    numeric: bool = False  # read as a number by the reports
    metrics: tuple[str, ...] = ()  # the ``metrics:`` names of an experiment that collect it
    alias: str = ""  # a shorter name objectives and constraints may use (``latency``)
    change: Change | None = None  # its improvement cell; None: no improvement
    fixed: bool = True  # a column of every results table, even when empty

    @property
    def is_metric(self) -> bool:
        """A measured number an objective or a constraint may name."""
        return bool(self.metrics)


def _ap(name: str, header: str) -> Column:
    """A COCO AP figure: a fraction in the row, percent in tables and plots."""
    return Column(
        name,
        "train",
        header=header,
        axis=f"{name} (%)",
        aggregate="spread",
        numeric=True,
        metrics=AP_KEYS,
        change="ap",
    )


_AP_HEADERS = {"AP": "AP", "AP50": "AP50", "AP75": "AP75", "APs": "APS", "APm": "APM", "APl": "APL"}
_LATENCY = ("latency", "fps")  # either metric times the model: all three numbers
_FLOPS = ("gmacs", "gflops")

# in the order of results.csv (the columns a row may lack come last, sorted, when present)
COLUMNS: tuple[Column, ...] = (
    Column("experiment", "trial"),
    Column("order", "trial", numeric=True),
    Column("key", "trial"),
    Column("label", "trial"),
    Column("seed", "trial", numeric=True),
    Column("kind", "trial"),
    Column("phase", "trial"),  # a search's trials: "search", or "confirm" (fresh seeds)
    Column("baseline", "trial"),  # a search's baseline model (True) or a design (False)
    Column("design_key", "trial"),  # a confirm run's design: the key of its search trial
    Column("status", "trial"),
    Column("error", "trial"),
    Column("model", "trial"),
    Column("overrides", "trial"),
    Column("config", "trial"),  # a search trial's sampled values, as JSON
    Column("spec_hash", "trial"),
    Column("spec_path", "trial"),
    Column(
        "params", "profile", axis="#Param.", aggregate="mean", numeric=True, metrics=("params",)
    ),
    Column(
        "params_m",
        "profile",
        header="#Param.",
        axis="#Param. (M)",
        aggregate="mean",
        numeric=True,
        metrics=("params",),
        change="rel",
    ),
    Column("gmacs", "profile", axis="MACs (G)", aggregate="mean", numeric=True, metrics=_FLOPS),
    Column(
        "gflops",
        "profile",
        header="FLOPs",
        axis="FLOPs (G)",
        aggregate="mean",
        numeric=True,
        metrics=_FLOPS,
        change="rel",
    ),
    Column("img_size", "profile", header="Size", numeric=True),
    Column("form", "trial"),
    Column(
        "latency_ms",
        "latency",
        header="Latency (ms)",
        axis="latency (ms)",
        aggregate="mean",
        numeric=True,
        metrics=_LATENCY,
        alias="latency",
        change="rel",
    ),
    Column(
        "fps",
        "latency",
        header="FPS",
        axis="FPS",
        aggregate="mean",
        numeric=True,
        metrics=_LATENCY,
        change="rel",
    ),
    Column(
        "peak_memory_mb",
        "latency",
        axis="peak memory (MB)",
        aggregate="mean",
        numeric=True,
        metrics=_LATENCY,
    ),
    Column(
        "latency_pred_ms",  # from the latency table, before any training
        "latency_pred",
        header="Latency, predicted (ms)",
        axis="predicted latency (ms)",
        aggregate="mean",
        numeric=True,
        metrics=("latency_pred",),
        alias="latency_pred",
        change="rel",
    ),
    Column("latency_device", "latency"),
    Column("latency_protocol", "latency"),
    *(_ap(name, header) for name, header in _AP_HEADERS.items()),
    Column("epochs_done", "train", aggregate="mean", numeric=True),
    Column("budget", "trial"),
    Column("train_img_size", "train"),
    Column("wall_s", "trial", aggregate="mean", numeric=True),
    Column("started_at", "trial"),
    Column("finished_at", "trial"),
    # written only by some trials
    Column("history", "train", fixed=False),  # AP per epoch, as JSON
    Column("latency_pred_estimated", "latency_pred", fixed=False),
    Column("attempts", "trial", fixed=False),  # how often the trial started (retries, resumes)
    Column("retry_errors", "trial", fixed=False),  # the errors of the attempts retried, as JSON
    Column("machine", "train", fixed=False),  # what the run trained on (scaling_lab.machine)
    Column("proxy", "trial", fixed=False),
    Column("scale", "trial", fixed=False),
    Column("traceback", "trial", fixed=False),
    Column("train_settings", "trial", fixed=False),
)

# the paper-style table's metric columns, in the paper's order (#Param., FLOPs, Size, FPS, AP)
TABLE_ORDER = ("params_m", "gflops", "img_size", "fps", "latency_ms", "latency_pred_ms", *AP_KEYS)

# the names an experiment's ``metrics:`` may list, in declared order
METRIC_NAMES: tuple[str, ...] = tuple(dict.fromkeys(m for c in COLUMNS for m in c.metrics))
# short names of objectives and constraints -> their columns
ALIASES: dict[str, str] = {c.alias: c.name for c in COLUMNS if c.alias}


def declared(name: str) -> Column | None:
    """The declaration of a column, or None (a sampled ``param:PATH``, a report's own)."""
    return next((c for c in COLUMNS if c.name == name), None)


def header(name: str) -> str:
    """A column's header in the paper-style table."""
    column = declared(name)
    return column.header if column is not None and column.header else name


def axis_label(name: str) -> str:
    """A column's axis label in plots."""
    column = declared(name)
    return column.axis if column is not None and column.axis else name


def fixed_columns() -> tuple[str, ...]:
    """The columns of every results table, in order."""
    return tuple(c.name for c in COLUMNS if c.fixed)


def numeric_columns() -> tuple[str, ...]:
    """The columns the reports read as numbers."""
    return tuple(c.name for c in COLUMNS if c.numeric)


def aggregated(how: Aggregate) -> tuple[str, ...]:
    """The columns whose repeats combine by ``how``."""
    return tuple(c.name for c in COLUMNS if c.aggregate == how)


def table_columns() -> tuple[tuple[str, str, Change | None], ...]:
    """(column, header, improvement) of the paper-style table's metric columns, in order."""
    out = []
    for name in TABLE_ORDER:
        column = declared(name)
        assert column is not None, f"TABLE_ORDER names an undeclared column {name!r}"
        out.append((name, header(name), column.change))
    return tuple(out)


def collected_by(metric: str) -> tuple[str, ...]:
    """The columns an experiment's metric (``params``, ``latency``, ``AP``...) fills."""
    return tuple(c.name for c in COLUMNS if metric in c.metrics)


def measured_at(stage: Stage) -> tuple[str, ...]:
    """The metric columns a stage of the trial measures (what constraints may bound)."""
    return tuple(c.name for c in COLUMNS if c.stage == stage and c.is_metric)
