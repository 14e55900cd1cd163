"""The experiment file's format: the dataclasses ``scaling_lab.schema`` reads it into.

Each class checks what one value or one section alone decides (``check()``); what needs the
whole file, the base graph or the machine is checked by ``experiment_checks`` and
``experiment_graphs`` when ``experiment.load_experiment`` reads a file. ``Experiment`` also
answers what a sweep of it collects, trains and runs (columns, repeats, trial keys).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from scaling_lab.eval_protocol import AP_KEYS
from scaling_lab.limits import MAX_NAME_CHARS, MAX_SCREEN, MAX_SEEDS, MAX_TRIALS, MAX_VARIANTS
from scaling_lab.schema import INTERNAL, FieldError, Partial
from scaling_lab.spec.errors import SpecError
from scaling_lab.sweep.columns import METRIC_NAMES, collected_by
from scaling_lab.sweep.materialize import Overrides, check_paths, merge_train
from scaling_lab.sweep.space import Constraint, Distribution
from scaling_lab.train.config import TrainConfig, train_default

Metric = Literal[METRIC_NAMES]  # the names ``metrics:`` may list (``columns.py``)
# metric name -> the result columns it fills
METRICS: dict[str, tuple[str, ...]] = {name: collected_by(name) for name in METRIC_NAMES}
Mode = Literal["max", "min"]
# training settings: TrainConfig fields but model / out, which the sweep sets
TrainSettings = Annotated[dict[str, Any], Partial(TrainConfig, exclude=("model", "out"))]


class _Options:
    """Keyword options of a callee; an unset one (None) falls to the callee's default."""

    def given(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Scale(_Options):
    """A variant's ``transforms.scale`` arguments (the transform checks their values)."""

    depth: float | None = None
    width: float | None = None
    mode: str | None = None


@dataclass(frozen=True)
class Variant:
    """One row of an ablation table (or, for a search, one sampled design)."""

    label: str
    model: str | None = None  # its own base model (Table 2 rows); None: the experiment's
    overrides: dict[str, Any] = field(default_factory=dict)  # override paths, as written
    scale: Scale | None = None
    repconv: str | dict[str, str] | None = None
    train: TrainSettings = field(default_factory=dict)  # this row's training settings
    paper_row: str | None = None  # the paper's row label, when it differs from ``label``
    order: int = field(default=-1, metadata=INTERNAL)
    key: str = field(default="", metadata=INTERNAL)  # its trial folder
    line: int | None = field(default=None, metadata=INTERNAL)  # where the file declares it

    @property
    def changes(self) -> Overrides:
        """Everything the row changes, split by kind (``repconv``/``scale``/``train`` last)."""
        explicit = Overrides(
            settings={"repconv": self.repconv} if self.repconv is not None else {},
            scale=self.scale.given() if self.scale else {},
            train=self.train,
        )
        return Overrides.from_paths(self.overrides).over(explicit)

    def check(self) -> None:
        if not self.label.strip():
            raise FieldError("label", "must not be empty")
        try:
            Overrides.from_paths(self.overrides)
        except FieldError as exc:
            raise FieldError(f"overrides.{exc.field}", str(exc)) from None


@dataclass(frozen=True)
class Search:
    """A search space explored by Optuna through Ray Tune's ``OptunaSearch``."""

    # a search_spaces/*.yaml file (relative to the experiment) or the parameters;
    # after load_experiment: always the parameters (path -> distribution)
    space: str | dict[str, Distribution]
    objectives: dict[str, Mode]  # metric -> max | min (after loading: result columns)
    trials: int = 10
    sampler: Literal["tpe", "nsga2", "random"] | None = None  # default: tpe, several: nsga2
    seed: int = 0
    storage: str | None = None  # an RDB URL; None: SQLite in the sweep's storage folder
    constraints: tuple[str, ...] = ()
    # batches pipelined (no slot idles; ``pipeline.py``); false: each batch waits for the one
    # before, as searches did before (kept to measure the difference: benchmarks/)
    pipeline: bool = True
    source: str = field(default="", metadata=INTERNAL)  # the file that declares the space
    lines: dict[str, int | None] = field(default_factory=dict, metadata=INTERNAL)

    def check(self) -> None:
        if self.trials < 1:
            raise FieldError("trials", f"must be an integer >= 1, got {self.trials}")
        if self.trials > MAX_TRIALS:
            raise FieldError(
                "trials",
                f"must be an integer from 1 to {MAX_TRIALS} (MAX_TRIALS), got {self.trials}",
            )
        if not self.objectives:
            raise FieldError("objectives", "a search needs objectives such as {AP: max}")
        if isinstance(self.space, dict):
            check_paths(self.space, "space")


@dataclass(frozen=True)
class Latency(_Options):
    """``lab bench``'s protocol for the latency metric (unset: its defaults)."""

    device: str | None = None
    dtype: str | None = None
    batch: int | None = None
    warmup: int | None = None
    iters: int | None = None
    threads: int | None = None
    channels_last: bool | None = None
    table: str | None = None  # latency_pred's table (lab latency-table build), file-relative

    def given(self) -> dict[str, Any]:
        """The options ``benchmark`` takes (``table`` is the predictor's, not a bench flag)."""
        out = super().given()
        out.pop("table", None)
        return out


@dataclass(frozen=True)
class Resources:
    """What one trial asks Ray for; a fractional gpu packs several trials on one GPU."""

    cpu: float = 1.0
    gpu: float = 0.0

    def check(self) -> None:
        for name in ("cpu", "gpu"):
            if getattr(self, name) < 0:
                raise FieldError(name, f"must be a number >= 0, got {getattr(self, name)!r}")
        if self.cpu <= 0 and self.gpu <= 0:
            raise FieldError("", "a trial needs some cpu or gpu")

    def as_dict(self) -> dict[str, float]:
        return {"cpu": float(self.cpu), "gpu": float(self.gpu)}


@dataclass(frozen=True)
class Scheduler:
    """ASHA: stops trials whose per-epoch metric trails the others'."""

    type: Literal["asha"] = "asha"
    metric: str = "AP"
    mode: Mode = "max"
    grace_period: int = 1
    reduction_factor: int = 2

    def check(self) -> None:
        if self.metric not in AP_KEYS:
            raise FieldError(
                "metric",
                f"ASHA ranks trials by a per-epoch metric ({', '.join(AP_KEYS)}), got "
                f"{self.metric!r}",
            )
        if self.grace_period < 1:
            raise FieldError("grace_period", "must be an integer >= 1")
        if self.reduction_factor < 2:
            raise FieldError("reduction_factor", "must be >= 2")


@dataclass(frozen=True)
class Proxy:
    """A smaller stand-in trained in place of each model (``transforms.scale``'s ``depth``
    then ``width`` mode), so a CPU can train the architecture an ablation is about; the
    block structure (auxiliary heads, RepConv placement, E-ELAN groups) is kept."""

    width: float = 1.0
    depth: float = 1.0
    # also the head's own widths: YOLOX's decoupled head is most of a width-0.25 YOLOX-S
    # unless it shrinks with the body (the YOLO Detect heads have no width of their own)
    heads: bool = False

    def check(self) -> None:
        for name in ("width", "depth"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise FieldError(name, f"a proxy is smaller: a factor in (0, 1], got {value!r}")

    def describe(self) -> str:
        return f"width {self.width:g}, depth {self.depth:g}" + (", heads" if self.heads else "")


@dataclass(frozen=True)
class Confirm:
    """After a search: retrain its ``top`` designs (the Pareto front, ranked by the first
    objective) and every baseline with ``seeds`` fresh seeds, so the headline compares seed
    means, not the single runs a search picked its winner by (the winner's curse)."""

    top: int = 2
    seeds: int = 3

    def check(self) -> None:
        if self.top < 1:
            raise FieldError("top", f"must be an integer >= 1, got {self.top}")
        if not 2 <= self.seeds <= MAX_SEEDS:
            raise FieldError(
                "seeds",
                f"must be an integer from 2 to {MAX_SEEDS} (a spread needs two), got {self.seeds}",
            )


@dataclass(frozen=True)
class Screen:
    """Before a search: ``designs`` designs of the space scored without training
    (``screen.py``); the first generation is drawn from them by the predictor ``by``
    (params, flops, latency_pred or a proxy name) as far as ``lab calibrate --proxies``
    supports it, else from the designs that keep the constraints (``screen_plan.py``)."""

    designs: int = 500
    by: str = "flops"

    def check(self) -> None:
        if not 1 <= self.designs <= MAX_SCREEN:
            raise FieldError(
                "designs", f"must be an integer from 1 to {MAX_SCREEN}, got {self.designs}"
            )
        if not self.by.strip():
            raise FieldError("by", "must name a predictor (params, flops, latency_pred, naswot...)")


@dataclass(frozen=True)
class Experiment:
    """An experiment file (see the module docstring); internal fields are set on loading."""

    base: str  # zoo name or spec path (relative to the file)
    name: str = ""  # default: the file's stem
    description: str = ""
    note: str = ""
    paper_table: int | None = None
    form: Literal["deploy", "training"] = "deploy"  # the graph whose params / FLOPs count
    metrics: tuple[Metric, ...] = ("params", "gflops")
    latency: Latency = field(default_factory=Latency)
    variants: tuple[Variant | str, ...] = ()  # a bare label is a row without changes
    search: Search | None = None
    baseline: str | None = None  # default: the first row
    against: str | None = None  # default: the last row
    seeds: int = 1  # trainings of every row, seeds train.seed + 0 .. seeds - 1
    train: TrainSettings = field(default_factory=dict)
    budgets: dict[str, TrainSettings] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)
    max_concurrent: int | None = None
    scheduler: Scheduler | Literal["none", "asha"] | None = None  # after loading: Scheduler
    time_budget_s: float | None = None
    max_failures: int = 2  # Ray retries of a trial that dies (from its last checkpoint)
    proxy: Proxy | None = None  # train a scaled-down stand-in of every model
    # a search's reference models, trained like its designs (default: the base); none: []
    baselines: tuple[str, ...] | None = None
    confirm: Confirm | None = None  # a search's confirm phase (None: none)
    screen: Screen | None = None  # a search's screen before training (None: none)
    path: str = field(default="", metadata=INTERNAL)
    constraints: tuple[Constraint, ...] = field(default=(), metadata=INTERNAL)

    def check(self) -> None:
        if self.name:
            check_name(self.name, "name")
        if len(self.variants) > MAX_VARIANTS:
            raise FieldError(
                "variants", f"{len(self.variants)} rows, more than {MAX_VARIANTS} (MAX_VARIANTS)"
            )
        if bool(self.variants) == (self.search is not None):
            raise FieldError(
                "",
                "give either 'variants' (a table) or 'search' (a search space), not "
                + ("both" if self.variants else "neither"),
            )
        if not self.metrics:
            raise FieldError("metrics", "must be a non-empty list")
        self._check_seeds()
        if self.search is None:
            for key in ("baselines", "confirm", "screen"):
                if getattr(self, key) is not None:
                    raise FieldError(
                        key, "applies to a search; a table's rows are its own baselines"
                    )
        for i, model in enumerate(self.baselines or ()):
            if not model.strip():
                raise FieldError(f"baselines[{i}]", "must name a zoo model or a spec file")
        if self.paper_table is not None and self.paper_table not in range(1, 9):
            raise FieldError("paper_table", "must be a table number of the paper (1-8)")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise FieldError("max_concurrent", "must be an integer >= 1")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise FieldError("time_budget_s", "must be a positive number of seconds")
        if self.max_failures < 0:
            raise FieldError("max_failures", f"must be an integer >= 0, got {self.max_failures}")
        labels = [_label(v) for v in self.variants]
        for i, label in enumerate(labels):
            if label in labels[:i]:
                raise FieldError(f"variants[{i}]", f"duplicate label '{label}'")
        for key in ("baseline", "against"):
            value = getattr(self, key)
            if value is not None and labels and value not in labels:
                raise FieldError(key, f"'{value}' is not a variant label")
        check_settings(self.train, "train")
        for name, budget in self.budgets.items():
            check_settings(merge_train(self.train, budget), f"budgets.{name}")

    def _check_seeds(self) -> None:
        if not 1 <= self.seeds <= MAX_SEEDS:
            raise FieldError(
                "seeds", f"must be an integer from 1 to {MAX_SEEDS} (MAX_SEEDS), got {self.seeds}"
            )
        if self.seeds > 1 and self.search is not None:
            raise FieldError(
                "seeds", "repeats apply to the rows of a table ('variants'), not to a search"
            )

    def repeats(self, profile_only: bool = False) -> int:
        """Trainings per row; 1 when nothing trains, as counts do not depend on the seed (a
        profile-only sweep runs each design once)."""
        return self.seeds if self.trains(profile_only) else 1

    def trial_keys(self, profile_only: bool = False) -> dict[str, tuple[Variant, int | None]]:
        """Every trial of a table: key -> (row, seed). Seeds are the row's ``train.seed``
        (default 0) + 0 .. seeds - 1; with one seed a row's key is its own (as before repeats
        existed), with several ``KEY-seedS``. Nothing trains: seed None."""
        out: dict[str, tuple[Variant, int | None]] = {}
        repeats = self.repeats(profile_only)
        for variant in self.variants:
            if not self.trains(profile_only):
                out[variant.key] = (variant, None)
                continue
            base = int(merge_train(self.train, variant.changes.train).get("seed", 0))
            for i in range(repeats):
                key = variant.key if repeats == 1 else f"{variant.key}-seed{base + i}"
                out[key] = (variant, base + i)
        return out

    @property
    def search_baselines(self) -> tuple[str, ...]:
        """The models a search trains beside its designs: ``baselines``, default the base
        (only when the search trains)."""
        if self.search is None or not self.trains():
            return ()
        return tuple(dict.fromkeys(self.baselines if self.baselines is not None else (self.base,)))

    @property
    def kind(self) -> str:
        return "search" if self.search is not None else "variant"

    def wants(self, group: str) -> bool:
        return any(group in METRICS[m] for m in self.metrics)

    def trains(self, profile_only: bool = False) -> bool:
        return not profile_only and self.wants("AP")

    def columns(self, profile_only: bool = False) -> tuple[str, ...]:
        """The result columns this experiment fills (profile-only: no AP)."""
        out: list[str] = []
        for metric in self.metrics:
            for col in METRICS[metric]:
                if col in AP_KEYS and profile_only:
                    continue
                if col not in out:
                    out.append(col)
        return tuple(out)

    def train_config(self, budget: str | None = None) -> dict[str, Any]:
        """The training settings: ``train`` with the named budget laid over it."""
        if budget is None:
            return dict(self.train)
        if budget not in self.budgets:
            known = ", ".join(self.budgets) or "none declared"
            raise SpecError(f"unknown budget '{budget}' (known: {known})", source=self.path)
        return merge_train(self.train, self.budgets[budget])

    def check_runnable(
        self, profile_only: bool, budget: str | None = None, *, local: bool = True
    ) -> None:
        """Errors that depend on how the sweep is run, before any trial starts (see
        ``experiment_checks.check_runnable``)."""
        from scaling_lab.sweep.experiment_checks import check_runnable

        check_runnable(self, profile_only, budget, local=local)


def _label(variant: Variant | str) -> str:
    return variant if isinstance(variant, str) else variant.label


def planned_epochs(settings: Mapping[str, Any]) -> int:
    """The epochs training ``settings`` run for: their own, else TrainConfig's default."""
    return int(settings.get("epochs", train_default("epochs")))


def check_settings(settings: dict[str, Any], where: str) -> None:
    """Training settings make a TrainConfig (values each field's type alone cannot refuse)."""
    try:
        TrainConfig(**{"model": "-", "data": "synth", **settings})
    except FieldError as exc:
        raise FieldError(f"{where}.{exc.field}", str(exc)) from None


_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")


def check_name(name: str, field: str) -> None:
    """An experiment name names folders (``reports/NAME``, the sweep storage, Ray's run and
    the Optuna study): letters, digits and ``_ . + -``, no path parts (``/``, ``..``)."""
    if not _NAME.fullmatch(name) or ".." in name or len(name) > MAX_NAME_CHARS:
        raise FieldError(
            field,
            f"must be a name of at most {MAX_NAME_CHARS} letters, digits, '_', '.', '+', '-' "
            f"(no path parts), got {name!r}",
        )
