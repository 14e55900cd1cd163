"""Experiment specs (``experiments/*.yaml``): one file per ablation table or search.

An experiment names a base model and either explicit ``variants`` (the rows of a table: a
label plus overrides and transforms; run as a grid) or a ``search`` (a search space with
Optuna distributions, objectives and a trial budget). It says which metrics to collect,
the training recipe (``train``, with named ``budgets`` laid over it, e.g. ``paper`` for COCO
on a cluster), resources per trial and an optional ASHA scheduler. See
``docs/experiments.md`` for the full format.

The file's format is the dataclasses below, read by ``scaling_lab.schema`` (keys, types,
required keys, each class's ``check()``). ``load_experiment`` then checks what needs more
than one value: node paths (against the base graph), constraints, paper rows, training
settings over every budget; every variant's graph is built and lowered. Mistakes raise a
``UserError`` naming the file, line and key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from scaling_lab import schema
from scaling_lab.errors import UserError
from scaling_lab.eval_protocol import AP_KEYS
from scaling_lab.limits import MAX_NAME_CHARS, MAX_SEEDS, MAX_TRIALS, MAX_VARIANTS
from scaling_lab.schema import INTERNAL, FieldError, Partial
from scaling_lab.spec.errors import SpecError
from scaling_lab.spec.yaml_lines import read_text_file, read_yaml_file, read_yaml_mapping
from scaling_lab.sweep.materialize import (
    Overrides,
    check_paths,
    matching_nodes,
    materialize,
    merge_train,
)
from scaling_lab.sweep.space import Constraint, Distribution, SpaceFile, parse_constraint
from scaling_lab.train.config import TrainConfig

PROFILE_COLUMNS = ("params", "params_m", "gmacs", "gflops")
LATENCY_COLUMNS = ("latency_ms", "fps", "peak_memory_mb")
PREDICTED_COLUMNS = ("latency_pred_ms",)  # from the latency table, before any training
Metric = Literal[("params", "gmacs", "gflops", "latency", "fps", "latency_pred", *AP_KEYS)]
# metric names an experiment may list (Metric) -> the result columns they produce
METRICS: dict[str, tuple[str, ...]] = {
    "params": ("params", "params_m"),
    "gmacs": ("gmacs", "gflops"),
    "gflops": ("gmacs", "gflops"),
    "latency": LATENCY_COLUMNS,
    "fps": LATENCY_COLUMNS,
    "latency_pred": PREDICTED_COLUMNS,
    **{key: AP_KEYS for key in AP_KEYS},
}
ALIASES = {"latency": "latency_ms", "latency_pred": "latency_pred_ms"}
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

    def check(self) -> None:
        for name in ("width", "depth"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise FieldError(name, f"a proxy is smaller: a factor in (0, 1], got {value!r}")

    def describe(self) -> str:
        return f"width {self.width:g}, depth {self.depth:g}"


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
    proxy: Proxy | None = None  # train a scaled-down stand-in of every model
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
        if self.paper_table is not None and self.paper_table not in range(1, 9):
            raise FieldError("paper_table", "must be a table number of the paper (1-8)")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise FieldError("max_concurrent", "must be an integer >= 1")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise FieldError("time_budget_s", "must be a positive number of seconds")
        labels = [_label(v) for v in self.variants]
        for i, label in enumerate(labels):
            if label in labels[:i]:
                raise FieldError(f"variants[{i}]", f"duplicate label '{label}'")
        for key in ("baseline", "against"):
            value = getattr(self, key)
            if value is not None and labels and value not in labels:
                raise FieldError(key, f"'{value}' is not a variant label")
        _check_settings(self.train, "train")
        for name, budget in self.budgets.items():
            _check_settings(merge_train(self.train, budget), f"budgets.{name}")

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
        """Errors that depend on how the sweep is run (before any trial starts). ``local``:
        trials run on this machine (embedded Ray), so their devices and datasets are checked
        here too; every trial would otherwise fail with the same error."""
        settings = self.train_config(budget)
        if local and self.wants("latency_ms"):
            self._check_latency()
        if self.wants("latency_pred_ms"):
            self._check_latency_table()
        if local and self.trains(profile_only):
            for where, trial_settings in self._trial_settings(budget):
                _check_trial_settings(trial_settings, self.path, where)
        if self.trains(profile_only):
            if "data" not in settings:
                raise SpecError(
                    "a training sweep needs train.data (a dataset folder or 'synth')",
                    source=self.path,
                    field="train",
                )
            epochs = int(settings.get("epochs", 300))
            if isinstance(self.scheduler, Scheduler) and self.scheduler.grace_period > epochs:
                raise SpecError(
                    f"ASHA's grace_period ({self.scheduler.grace_period}) is longer than the "
                    f"training budget ({epochs} epochs)",
                    source=self.path,
                    field="scheduler.grace_period",
                )
        if self.search is None:
            return
        collected = self.columns(profile_only)
        for objective in self.search.objectives:
            if objective not in collected:
                why = " (--profile-only trains nothing)" if objective in AP_KEYS else ""
                raise SpecError(
                    f"objective '{objective}' is not collected{why}; collected: "
                    f"{', '.join(collected)}",
                    source=self.path,
                    field="search.objectives",
                )

    def _check_latency(self) -> None:
        from scaling_lab.analyze.timing import resolve_request
        from scaling_lab.device import default_device

        options = self.latency.given()
        options.pop("channels_last", None)
        options.setdefault("device", default_device())
        try:
            resolve_request(**options)
        except SpecError as exc:
            raise SpecError(
                exc.reason, source=self.path, field=f"latency.{exc.field or 'device'}"
            ) from None

    def _check_latency_table(self) -> None:
        """latency_pred's table loads, is complete and matches the ``latency:`` settings."""
        from scaling_lab.analyze.latency_table import check_protocol, load_table

        given = self.latency.given()
        wanted = {k: given[k] for k in ("device", "dtype", "batch", "threads") if k in given}
        if wanted.get("device") == "cuda":
            wanted["device"] = "cuda:0"
        if given.get("channels_last") is not None:
            wanted["layout"] = "nhwc" if given["channels_last"] else "nchw"
        try:
            check_protocol(load_table(self.latency.table), wanted, what="the latency: settings")
        except UserError as exc:
            raise SpecError(str(exc), source=self.path, field="latency.table") from None

    def _trial_settings(self, budget: str | None) -> list[tuple[str, dict[str, Any]]]:
        """(where, training settings) of every row, and of every searched training value."""
        base = self.train_config(budget)
        out = [("train", base)]
        for v in self.variants:
            out.append((f"variants[{v.order}].train", merge_train(base, v.changes.train)))
        for path, dist in self.search.space.items() if self.search is not None else ():
            if path.startswith("train."):
                for value in dist.corners():
                    extra = Overrides.from_paths({path: value}).train
                    out.append((f"search.space.{path}", merge_train(base, extra)))
        return out


def _check_trial_settings(settings: dict[str, Any], source: str, where: str) -> None:
    """What a trial's training would refuse at its start: its device and its dataset."""
    from scaling_lab.data.sources import check_data_ref
    from scaling_lab.device import check_device

    device = settings.get("device")
    if device is not None:
        try:
            check_device(device)
        except SpecError as exc:
            raise SpecError(exc.reason, source=source, field=f"{where}.device") from None
    data = settings.get("data")
    if isinstance(data, str):
        try:
            check_data_ref(data)
        except UserError as exc:
            detail = exc.reason if exc.field is None else f"{exc.field} {exc.reason}"
            if exc.source and exc.source != data:
                detail = f"{exc.source}: {detail}"
            raise SpecError(f"'{data}': {detail}", source=source, field=f"{where}.data") from None


def _label(variant: Variant | str) -> str:
    return variant if isinstance(variant, str) else variant.label


def _check_settings(settings: dict[str, Any], where: str) -> None:
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


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "row"


def params_key(params: dict[str, Any]) -> str:
    """A stable id for a sampled configuration (same params -> same trial folder)."""
    text = json.dumps(params, sort_keys=True, default=str)
    return "s-" + hashlib.sha1(text.encode()).hexdigest()[:10]


def sampled_params(experiment: Experiment, config: Mapping[str, Any]) -> dict[str, Any]:
    """A search trial's sampled values out of Ray's config."""
    space = experiment.search.space if experiment.search is not None else {}
    return {k: v for k, v in config.items() if k in space}


def trial_key(experiment: Experiment, config: Mapping[str, Any]) -> str:
    """The key (trial folder) of a Ray config: the variant's own, or for a search the hash
    of the sampled values. The driver and the trial both name a trial by it."""
    if experiment.search is None:
        return str(config["variant"])
    return params_key(sampled_params(experiment, config))


def _resolve_model(model: str, base_dir: Path) -> str:
    """A spec path is relative to the experiment file; a zoo name stays as it is."""
    if model.endswith((".yaml", ".yml")):
        return str((base_dir / model).resolve())
    return model


def _number_variants(
    declared: tuple[Variant | str, ...], data: Mapping, base_dir: Path
) -> tuple[Variant, ...]:
    """Rows in declared order with their keys, lines and resolved model paths."""
    variants = []
    for i, item in enumerate(declared):
        variant = Variant(label=item) if isinstance(item, str) else item
        model = _resolve_model(variant.model, base_dir) if variant.model else None
        variants.append(
            dataclasses.replace(
                variant,
                model=model,
                order=i,
                key=f"{i:02d}-{slug(variant.label)}",
                line=schema.line_of(data, f"variants[{i}]"),
            )
        )
    return tuple(variants)


def _resolve_search(
    search: Search, data: Mapping, source: str, base_dir: Path, known: tuple[str, ...]
) -> tuple[Search, tuple[Constraint, ...]]:
    """The space read (from its file if it names one), objectives as result columns, the
    sampler chosen, constraints parsed against the columns a profile measures."""
    space, space_source = search.space, source
    constraints = [
        parse_constraint(c, source=source, known=known, field="search.constraints")
        for c in search.constraints
    ]
    if isinstance(space, str):  # a search_spaces/*.yaml file
        space_path = (base_dir / space).resolve()
        if not space_path.is_file():
            raise SpecError(
                f"no such search space file: {space}", source=source, field="search.space"
            )
        space_source = str(space_path)
        text = read_text_file(space_path, "search space file")
        raw = read_yaml_mapping(text, space_source, "a search space")
        declared = schema.build(SpaceFile, raw, source=space_source)
        space = declared.params
        lines = {p: schema.line_of(raw, f"params.{p}") for p in space}
        try:
            constraints += [
                parse_constraint(c, source=space_source, known=known) for c in declared.constraints
            ]
        except UserError as exc:
            raise _at(exc, space_source, schema.line_of(raw, "constraints")) from None
    else:
        lines = {p: schema.line_of(data, f"search.space.{p}") for p in space}
    objectives = {ALIASES.get(m, m): mode for m, mode in search.objectives.items()}
    resolved = dataclasses.replace(
        search,
        space=space,
        objectives=objectives,
        sampler=search.sampler or ("nsga2" if len(objectives) > 1 else "tpe"),
        source=space_source,
        lines=lines,
    )
    return resolved, tuple(constraints)


def parse_experiment(data: dict, *, source: str, base_dir: Path, stem: str) -> Experiment:
    """The checked Experiment of a file's mapping, with defaults and paths resolved."""
    declared = schema.build(Experiment, data, source=source)
    variants = _number_variants(declared.variants, data, base_dir)
    search, constraints = None, ()
    if declared.search is not None:
        timed = any("latency_ms" in METRICS[m] for m in declared.metrics)
        known = PROFILE_COLUMNS + (LATENCY_COLUMNS if timed else ())
        known += PREDICTED_COLUMNS if "latency_pred" in declared.metrics else ()
        known += tuple(alias for alias, column in ALIASES.items() if column in known)
        search, constraints = _resolve_search(declared.search, data, source, base_dir, known)
        constraints = tuple(  # ``latency_pred <= 30`` bounds the column latency_pred_ms
            dataclasses.replace(c, metric=ALIASES.get(c.metric, c.metric)) for c in constraints
        )
    labels = [v.label for v in variants]
    name = declared.name or stem
    try:
        check_name(name, "name")
    except FieldError as exc:
        raise SpecError(
            f"{exc} (the file name's stem is the default: set 'name:' in the file)",
            source=source,
            field="name",
        ) from None
    scheduler = declared.scheduler
    if isinstance(scheduler, str):
        scheduler = Scheduler() if scheduler == "asha" else None
    return dataclasses.replace(
        declared,
        name=name,
        path=source,
        base=_resolve_model(declared.base, base_dir),
        latency=_resolve_table(declared, base_dir),
        variants=variants,
        search=search,
        constraints=constraints,
        scheduler=scheduler,
        baseline=declared.baseline or (labels[0] if labels else None),
        against=declared.against or (labels[-1] if len(labels) > 1 else None),
    )


def _resolve_table(declared: Experiment, base_dir: Path) -> Latency:
    """``latency.table`` resolved against the experiment's folder; required by latency_pred."""
    table = declared.latency.table
    if table is None:
        if "latency_pred" in declared.metrics:
            raise SpecError(
                "metric latency_pred needs latency.table: a table from `lab latency-table "
                "build` (path relative to this file)",
                field="latency.table",
            )
        return declared.latency
    return dataclasses.replace(declared.latency, table=str((base_dir / table).resolve()))


def load_experiment(path: str | Path, *, check_graphs: bool = True) -> Experiment:
    """Read and check an experiment file (see the module docstring)."""
    path = Path(path)
    source = str(path)
    data = read_yaml_file(path, "experiment file")
    try:
        experiment = parse_experiment(data, source=source, base_dir=path.parent, stem=path.stem)
    except UserError as exc:
        raise _at(exc, source, schema.line_of(data, exc.field or "")) from None
    _check_references(experiment)
    check_training(experiment)
    if check_graphs:
        try:
            check_graphs_of(experiment)
        except UserError as exc:
            if exc.field != "proxy":
                raise
            raise _at(exc, source, schema.line_of(data, "proxy")) from None
    return experiment


def _at(exc: UserError, source: str, line: int | None) -> UserError:
    """``exc`` located at ``line`` of ``source``, unless it names another place."""
    if exc.line is None and exc.source in (None, source):
        return exc.located(source, line)
    return exc


def _check_references(experiment: Experiment) -> None:
    from scaling_lab.sweep.reference import paper_rows

    if experiment.paper_table is None:
        return
    rows = paper_rows(experiment.paper_table)
    for variant in experiment.variants:
        if variant.paper_row is not None and variant.paper_row not in rows:
            raise SpecError(
                f"variant '{variant.label}': no row '{variant.paper_row}' in the paper's Table "
                f"{experiment.paper_table} (rows: {', '.join(rows)})",
                source=experiment.path,
                field=f"variants[{variant.order}].paper_row",
                line=variant.line,
            )


def _check_train(experiment: Experiment, extra: dict[str, Any], where: str) -> None:
    """``extra`` training settings are settings, and laid over every budget make a valid
    TrainConfig."""
    schema.convert(TrainSettings, extra, source=experiment.path, path=where)
    for budget in (None, *experiment.budgets):
        try:
            _check_settings(merge_train(experiment.train_config(budget), extra), where)
        except FieldError as exc:
            over = f" (over budget '{budget}')" if budget else ""
            raise SpecError(f"{exc}{over}", source=experiment.path, field=exc.field) from None


def check_training(experiment: Experiment) -> None:
    """Every row's and searched value's training settings, over every budget."""
    for variant in experiment.variants:
        try:
            _check_train(experiment, variant.changes.train, f"variants[{variant.order}].train")
        except UserError as exc:
            raise _at(exc, experiment.path, variant.line) from None
    search = experiment.search
    for path, dist in search.space.items() if search is not None else ():
        for value in dist.corners():
            train = Overrides.from_paths({path: value}).train
            try:
                _check_train(experiment, train, f"search.space.{path}")
            except UserError as exc:
                raise _at(exc, search.source, search.lines.get(path)) from None


def base_graph(experiment: Experiment, model: str | None = None):
    from scaling_lab.models import get_block_graph

    try:
        return get_block_graph(model or experiment.base)
    except SpecError as exc:
        raise exc.located(experiment.path) from None


def variant_graph(experiment: Experiment, variant: Variant, changes: Overrides | None = None):
    """The BlockGraph a variant's trial profiles and trains: its base model with ``changes``
    (default: the variant's own; a search trial adds its sampled values)."""
    graph = base_graph(experiment, variant.model)
    changes = changes if changes is not None else variant.changes
    return materialize(graph, changes, source=experiment.path)


def training_graph(experiment: Experiment, graph, budget: str | None = None):
    """The graph a trial trains: ``graph`` itself, or its proxy (depth, then width). The
    proxy stands in at the experiment's own budget only: a named budget (``--budget paper``,
    the recipe for a GPU cluster) trains the full-size model."""
    proxy = experiment.proxy
    if proxy is None or budget is not None:
        return graph
    from scaling_lab.transforms.scale import scale

    if proxy.depth != 1:
        graph = scale(graph, depth=proxy.depth, mode="depth")
    if proxy.width != 1:
        graph = scale(graph, width=proxy.width, mode="width")
    return graph


def _lowered(experiment: Experiment, graph, where: str, source: str, line: int | None) -> None:
    from scaling_lab.models import get_layer_graph, model_ref

    try:
        get_layer_graph(model_ref(graph, form=experiment.form))
    except SpecError as exc:
        raise SpecError(f"{where}: {exc}", source=source, line=line) from None


def check_graphs_of(experiment: Experiment) -> None:
    """Build and lower every variant; for a search, try each path at its extreme values."""
    for variant in experiment.variants:
        try:
            graph = variant_graph(experiment, variant)
        except UserError as exc:
            raise _at(exc, experiment.path, variant.line) from None
        _lowered(experiment, graph, f"variant '{variant.label}'", experiment.path, variant.line)
    if experiment.proxy is not None:
        _check_proxy(experiment)
    if experiment.search is None:
        return
    search = experiment.search
    base = base_graph(experiment)
    for path, dist in search.space.items():
        line = search.lines.get(path)
        changes = Overrides.from_paths({path: dist.corners()[0]})
        if changes.train:
            continue  # check_training's
        try:
            if changes.fields:
                matching_nodes(base, path, source=search.source)
            for value in dist.corners():
                graph = materialize(base, Overrides.from_paths({path: value}), source=search.source)
                where = f"search parameter '{path}' = {value!r}"
                _lowered(experiment, graph, where, search.source, line)
        except UserError as exc:
            raise _at(exc, search.source, line) from None


def _layers(graph) -> tuple:
    """What a model trains, layer by layer (ops compare by value), for telling rows apart."""
    from scaling_lab.models import get_layer_graph, model_ref

    return tuple((x.name, x.op, x.inputs) for x in get_layer_graph(model_ref(graph)).layers)


def _check_proxy(experiment: Experiment) -> None:
    """Every model's proxy lowers, and rows that train different models still do (a depth
    factor can remove the very convs a row's RepConv placement names)."""
    assert experiment.proxy is not None
    what = f"proxy ({experiment.proxy.describe()})"
    rows = experiment.variants or (Variant(label="base", order=0),)
    full, small = [], []
    for variant in rows:
        graph = variant_graph(experiment, variant)
        try:
            proxy = training_graph(experiment, graph)
            small.append(_layers(proxy))
        except SpecError as exc:
            raise SpecError(
                f"{what}: variant '{variant.label}': {exc}",
                source=experiment.path,
                field="proxy",
                line=variant.line,
            ) from None
        full.append(_layers(graph))
    for j, later in enumerate(rows):
        for i in range(j):
            if full[i] != full[j] and small[i] == small[j]:
                raise SpecError(
                    f"{what}: variants '{rows[i].label}' and '{later.label}' train different "
                    "models at full size but the same proxy (a smaller depth factor removes "
                    "what tells them apart)",
                    source=experiment.path,
                    field="proxy",
                    line=later.line,
                )
