"""Experiment specs (``experiments/*.yaml``): one file per ablation table or search.

An experiment names a base model and either explicit ``variants`` (the rows of a table: a
label plus overrides and transforms; run as a grid) or a ``search`` (a search space with
Optuna distributions, objectives and a trial budget). It says which metrics to collect,
the training recipe (``train``, with named ``budgets`` laid over it, e.g. ``paper`` for COCO
on a cluster), resources per trial and an optional ASHA scheduler. See
``docs/experiments.md`` for the full format.

``load_experiment`` checks everything that can be checked without running a trial: keys,
types, node paths (against the base graph), distributions, metrics, objectives, constraints,
training settings; every variant's graph is built and lowered. Mistakes raise ``SpecError``
naming the file, line and key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scaling_lab.spec.errors import SpecError
from scaling_lab.spec.yaml_lines import read_yaml_mapping, strip_lines
from scaling_lab.sweep.materialize import matching_nodes, materialize, split_overrides
from scaling_lab.sweep.space import Constraint, Distribution, parse_constraint, parse_distribution

AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
PROFILE_COLUMNS = ("params", "params_m", "gmacs", "gflops")
LATENCY_COLUMNS = ("latency_ms", "fps", "peak_memory_mb")
# metric names an experiment may list -> the result columns they produce
METRICS: dict[str, tuple[str, ...]] = {
    "params": ("params", "params_m"),
    "gmacs": ("gmacs", "gflops"),
    "gflops": ("gmacs", "gflops"),
    "latency": LATENCY_COLUMNS,
    "fps": LATENCY_COLUMNS,
    **{key: AP_KEYS for key in AP_KEYS},
}
ALIASES = {"latency": "latency_ms"}
MODES = ("max", "min")
SAMPLERS = ("tpe", "nsga2", "random")
TOP_KEYS = {
    "name", "description", "base", "paper_table", "form", "metrics", "latency", "variants",
    "search", "baseline", "against", "train", "budgets", "resources", "max_concurrent",
    "scheduler", "time_budget_s", "note",
}  # fmt: skip
VARIANT_KEYS = {"label", "model", "overrides", "scale", "repconv", "train", "paper_row"}
SEARCH_KEYS = {"space", "trials", "objectives", "sampler", "seed", "storage", "constraints"}
LATENCY_KEYS = {"device", "dtype", "batch", "warmup", "iters", "threads", "channels_last"}
SCHEDULER_KEYS = {"type", "metric", "mode", "grace_period", "reduction_factor"}


@dataclass(frozen=True)
class Variant:
    """One row of an ablation table (or, for a search, one sampled design)."""

    label: str
    order: int
    key: str
    model: str | None = None  # its own base model (Table 2 rows); None: the experiment's
    overrides: dict[str, Any] = field(default_factory=dict)
    scale: dict[str, Any] | None = None
    paper_row: str | None = None


@dataclass(frozen=True)
class Search:
    """A search space explored by Optuna through Ray Tune's ``OptunaSearch``."""

    space: dict[str, Distribution]
    trials: int
    objectives: dict[str, str]  # result column -> max | min
    sampler: str = "tpe"
    seed: int = 0
    storage: str | None = None  # an RDB URL; None: SQLite in the sweep's storage folder


@dataclass(frozen=True)
class Experiment:
    name: str
    path: str
    base: str
    description: str = ""
    note: str = ""
    paper_table: int | None = None
    form: str = "deploy"  # the graph whose params / FLOPs are counted
    metrics: tuple[str, ...] = ("params", "gflops")
    latency: dict[str, Any] = field(default_factory=dict)
    variants: tuple[Variant, ...] = ()
    search: Search | None = None
    constraints: tuple[Constraint, ...] = ()
    baseline: str | None = None
    against: str | None = None
    train: dict[str, Any] = field(default_factory=dict)
    budgets: dict[str, dict[str, Any]] = field(default_factory=dict)
    resources: dict[str, float] = field(default_factory=lambda: {"cpu": 1.0, "gpu": 0.0})
    max_concurrent: int | None = None
    scheduler: dict[str, Any] | None = None
    time_budget_s: float | None = None

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

    def check_runnable(self, profile_only: bool) -> None:
        """Errors that depend on how the sweep is run (before any trial starts)."""
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


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "row"


def params_key(params: dict[str, Any]) -> str:
    """A stable id for a sampled configuration (same params -> same trial folder)."""
    text = json.dumps(params, sort_keys=True, default=str)
    return "s-" + hashlib.sha1(text.encode()).hexdigest()[:10]


def _check_keys(data: dict, allowed: set[str], source: str, where: str) -> None:
    lines = data.get("__lines__", {})
    for key in data:
        if key != "__lines__" and key not in allowed:
            raise SpecError(
                f"unknown key '{key}' in {where} (known: {', '.join(sorted(allowed))})",
                source=source,
                field=str(key),
                line=lines.get(key),
            )


def _parse_metrics(raw: Any, source: str) -> tuple[str, ...]:
    if raw is None:
        return ("params", "gflops")
    if not isinstance(raw, list) or not raw:
        raise SpecError("'metrics' must be a non-empty list", source=source, field="metrics")
    for metric in raw:
        if metric not in METRICS:
            raise SpecError(
                f"unknown metric {metric!r} (known: {', '.join(METRICS)})",
                source=source,
                field="metrics",
            )
    return tuple(raw)


def _parse_train(raw: Any, source: str, where: str) -> dict[str, Any]:
    """Training settings: TrainConfig fields (not model / out, which the sweep sets)."""
    from scaling_lab.train.config import TrainConfig

    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SpecError("must be a mapping of training settings", source=source, field=where)
    data = strip_lines(raw)
    allowed = {f.name for f in dataclasses.fields(TrainConfig)} - {"model", "out"}
    for key in data:
        if key not in allowed:
            raise SpecError(
                f"unknown training setting '{key}' (known: {', '.join(sorted(allowed))})",
                source=source,
                field=f"{where}.{key}",
                line=raw.get("__lines__", {}).get(key),
            )
    if "hyp" in data and not isinstance(data["hyp"], dict):
        raise SpecError("must be a mapping", source=source, field=f"{where}.hyp")
    try:
        TrainConfig(**{"model": "-", "data": "synth", **data})
    except (TypeError, ValueError) as exc:
        raise SpecError(str(exc), source=source, field=where) from None
    return data


def _parse_resources(raw: Any, source: str) -> dict[str, float]:
    out = {"cpu": 1.0, "gpu": 0.0}
    if raw is None:
        return out
    if not isinstance(raw, dict):
        raise SpecError("must be a mapping {cpu: N, gpu: N}", source=source, field="resources")
    for key, value in strip_lines(raw).items():
        if key not in out:
            raise SpecError(
                f"unknown resource '{key}' (known: cpu, gpu)", source=source, field="resources"
            )
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise SpecError(
                f"must be a number >= 0, got {value!r}", source=source, field=f"resources.{key}"
            )
        out[key] = float(value)
    if out["cpu"] <= 0 and out["gpu"] <= 0:
        raise SpecError("a trial needs some cpu or gpu", source=source, field="resources")
    return out


def _parse_scheduler(raw: Any, source: str) -> dict[str, Any] | None:
    if raw is None or raw == "none":
        return None
    if raw == "asha":
        raw = {"type": "asha"}
    if not isinstance(raw, dict):
        raise SpecError(
            f"must be 'none', 'asha' or a mapping, got {raw!r}", source=source, field="scheduler"
        )
    _check_keys(raw, SCHEDULER_KEYS, source, "scheduler")
    data = {
        "type": "asha",
        "metric": "AP",
        "mode": "max",
        "grace_period": 1,
        "reduction_factor": 2,
        **strip_lines(raw),
    }
    if data["type"] != "asha":
        raise SpecError(
            f"unknown scheduler {data['type']!r} (known: none, asha)",
            source=source,
            field="scheduler.type",
        )
    if data["metric"] not in AP_KEYS:
        raise SpecError(
            f"ASHA ranks trials by a per-epoch metric ({', '.join(AP_KEYS)}), got "
            f"{data['metric']!r}",
            source=source,
            field="scheduler.metric",
        )
    if data["mode"] not in MODES:
        raise SpecError("must be max or min", source=source, field="scheduler.mode")
    for key in ("grace_period", "reduction_factor"):
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SpecError("must be an integer >= 1", source=source, field=f"scheduler.{key}")
    if data["reduction_factor"] < 2:
        raise SpecError("must be >= 2", source=source, field="scheduler.reduction_factor")
    return data


def _parse_variants(raw: Any, source: str) -> tuple[Variant, ...]:
    if not isinstance(raw, list) or not raw:
        raise SpecError("'variants' must be a non-empty list", source=source, field="variants")
    variants: list[Variant] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        where = f"variants[{i}]"
        if isinstance(item, str):
            item = {"label": item}
        if not isinstance(item, dict):
            raise SpecError("must be a mapping with a 'label'", source=source, field=where)
        _check_keys(item, VARIANT_KEYS, source, where)
        label = item.get("label")
        if not isinstance(label, str) or not label.strip():
            raise SpecError("needs a 'label' (text)", source=source, field=where)
        if label in seen:
            raise SpecError(f"duplicate label '{label}'", source=source, field=where)
        seen.add(label)
        overrides = strip_lines(item.get("overrides") or {})
        if not isinstance(overrides, dict):
            raise SpecError("must be a mapping", source=source, field=f"{where}.overrides")
        if "repconv" in item:
            overrides = {**overrides, "repconv": strip_lines(item["repconv"])}
        for key, value in strip_lines(item.get("train") or {}).items():
            overrides[f"train.{key}"] = value
        scale_args = strip_lines(item.get("scale"))
        if scale_args is not None and not isinstance(scale_args, dict):
            raise SpecError("must be a mapping", source=source, field=f"{where}.scale")
        model = item.get("model")
        if model is not None and not isinstance(model, str):
            raise SpecError("must be a model name or path", source=source, field=f"{where}.model")
        variants.append(
            Variant(
                label=label,
                order=i,
                key=f"{i:02d}-{slug(label)}",
                model=model,
                overrides=overrides,
                scale=scale_args,
                paper_row=item.get("paper_row"),
            )
        )
    return tuple(variants)


def _parse_search(raw: Any, source: str, base_dir: Path) -> tuple[Search, tuple[str, ...]]:
    if not isinstance(raw, dict):
        raise SpecError("'search' must be a mapping", source=source, field="search")
    _check_keys(raw, SEARCH_KEYS, source, "search")
    space_raw, space_source = raw.get("space"), source
    constraints_raw = list(raw.get("constraints") or [])
    if isinstance(space_raw, str):  # a search_spaces/*.yaml file
        space_path = (base_dir / space_raw).resolve()
        if not space_path.is_file():
            raise SpecError(f"no such search space file: {space_raw}", source=source, field="space")
        space_source = str(space_path)
        data = read_yaml_mapping(space_path.read_text(), space_source, "a search space")
        _check_keys(data, {"params", "constraints", "description"}, space_source, "search space")
        space_raw = data.get("params")
        constraints_raw += list(data.get("constraints") or [])
    if not isinstance(space_raw, dict) or not strip_lines(space_raw):
        raise SpecError(
            "the search space needs a mapping of parameters", source=space_source, field="params"
        )
    space = {
        str(path): parse_distribution(dist, path=str(path), source=space_source)
        for path, dist in space_raw.items()
        if path != "__lines__"
    }
    trials = raw.get("trials", 10)
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise SpecError(f"must be an integer >= 1, got {trials!r}", source=source, field="trials")
    objectives_raw = strip_lines(raw.get("objectives"))
    if not isinstance(objectives_raw, dict) or not objectives_raw:
        raise SpecError(
            "a search needs 'objectives' such as {AP: max, latency: min}",
            source=source,
            field="objectives",
        )
    objectives = {}
    for metric, mode in objectives_raw.items():
        if mode not in MODES:
            raise SpecError(
                f"objective '{metric}': mode must be max or min, got {mode!r}",
                source=source,
                field="objectives",
            )
        objectives[ALIASES.get(metric, metric)] = mode
    sampler = raw.get("sampler", "nsga2" if len(objectives) > 1 else "tpe")
    if sampler not in SAMPLERS:
        raise SpecError(
            f"unknown sampler {sampler!r} (known: {', '.join(SAMPLERS)})",
            source=source,
            field="sampler",
        )
    seed = raw.get("seed", 0)
    storage = raw.get("storage")
    if storage is not None and not isinstance(storage, str):
        raise SpecError("must be an RDB URL", source=source, field="storage")
    search = Search(space, trials, objectives, sampler, int(seed), storage)
    return search, tuple(str(c) for c in constraints_raw)


def merge_train(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Training settings with ``extra`` laid over ``base`` (``hyp`` merged key by key)."""
    merged = {**base, **extra}
    if "hyp" in base or "hyp" in extra:
        merged["hyp"] = {**base.get("hyp", {}), **extra.get("hyp", {})}
    return merged


def _resolve_model(model: str, base_dir: Path) -> str:
    """A spec path is relative to the experiment file; a zoo name stays as it is."""
    if model.endswith((".yaml", ".yml")):
        path = (base_dir / model).resolve()
        return str(path)
    return model


def parse_experiment(data: dict, *, source: str, base_dir: Path, stem: str) -> Experiment:
    _check_keys(data, TOP_KEYS, source, "the experiment")
    lines = data.get("__lines__", {})
    base = data.get("base")
    if not isinstance(base, str):
        raise SpecError("needs 'base': a zoo model name or spec path", source=source, field="base")
    has_variants, has_search = "variants" in data, "search" in data
    if has_variants == has_search:
        raise SpecError(
            "give either 'variants' (a table) or 'search' (a search space), not "
            + ("both" if has_variants else "neither"),
            source=source,
        )
    metrics = _parse_metrics(strip_lines(data.get("metrics")), source)
    form = data.get("form", "deploy")
    if form not in ("deploy", "training"):
        raise SpecError(f"must be deploy or training, got {form!r}", source=source, field="form")
    latency = strip_lines(data.get("latency") or {})
    if not isinstance(latency, dict):
        raise SpecError("must be a mapping", source=source, field="latency")
    _check_keys(latency, LATENCY_KEYS, source, "latency")
    variants: tuple[Variant, ...] = ()
    search, constraint_texts = None, ()
    if has_variants:
        variants = _parse_variants(data["variants"], source)
    else:
        search, constraint_texts = _parse_search(data["search"], source, base_dir)
    timed = any("latency_ms" in METRICS[m] for m in metrics)
    known = PROFILE_COLUMNS + (LATENCY_COLUMNS if timed else ())
    constraints = tuple(parse_constraint(c, source=source, known=known) for c in constraint_texts)
    paper_table = data.get("paper_table")
    if paper_table is not None and paper_table not in range(1, 9):
        raise SpecError(
            "must be a table number of the paper (1-8)", source=source, field="paper_table"
        )
    train = _parse_train(data.get("train"), source, "train")
    budgets_raw = data.get("budgets") or {}
    if not isinstance(budgets_raw, dict):
        raise SpecError("must be a mapping of named budgets", source=source, field="budgets")
    budgets = {
        str(name): _parse_train(body, source, f"budgets.{name}")
        for name, body in budgets_raw.items()
        if name != "__lines__"
    }
    max_concurrent = data.get("max_concurrent")
    if max_concurrent is not None and (
        isinstance(max_concurrent, bool)
        or not isinstance(max_concurrent, int)
        or max_concurrent < 1
    ):
        raise SpecError("must be an integer >= 1", source=source, field="max_concurrent")
    time_budget = data.get("time_budget_s")
    if time_budget is not None and (not isinstance(time_budget, (int, float)) or time_budget <= 0):
        raise SpecError(
            "must be a positive number of seconds", source=source, field="time_budget_s"
        )
    labels = [v.label for v in variants]
    baseline = data.get("baseline", labels[0] if labels else None)
    against = data.get("against", labels[-1] if len(labels) > 1 else None)
    for key, value in (("baseline", baseline), ("against", against)):
        if value is not None and labels and value not in labels:
            raise SpecError(
                f"'{value}' is not a variant label", source=source, field=key, line=lines.get(key)
            )
    return Experiment(
        name=str(data.get("name") or stem),
        path=source,
        base=_resolve_model(base, base_dir),
        description=str(data.get("description") or ""),
        note=str(data.get("note") or ""),
        paper_table=paper_table,
        form=form,
        metrics=metrics,
        latency=latency,
        variants=tuple(
            dataclasses.replace(v, model=_resolve_model(v.model, base_dir)) if v.model else v
            for v in variants
        ),
        search=search,
        constraints=constraints,
        baseline=baseline,
        against=against,
        train=train,
        budgets=budgets,
        resources=_parse_resources(data.get("resources"), source),
        max_concurrent=max_concurrent,
        scheduler=_parse_scheduler(data.get("scheduler"), source),
        time_budget_s=time_budget,
    )


def load_experiment(path: str | Path, *, check_graphs: bool = True) -> Experiment:
    """Read and check an experiment file (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise SpecError("no such experiment file", source=str(path))
    source = str(path)
    data = read_yaml_mapping(path.read_text(), source, "an experiment")
    experiment = parse_experiment(data, source=source, base_dir=path.parent, stem=path.stem)
    _check_references(experiment)
    if check_graphs:
        check_graphs_of(experiment)
    return experiment


def _check_references(experiment: Experiment) -> None:
    from scaling_lab.sweep.reference import paper_rows

    if experiment.paper_table is None:
        return
    rows = paper_rows(experiment.paper_table)
    for variant in experiment.variants:
        wanted = variant.paper_row or variant.label
        if variant.paper_row is not None and wanted not in rows:
            raise SpecError(
                f"variant '{variant.label}': no row '{wanted}' in the paper's Table "
                f"{experiment.paper_table} (rows: {', '.join(rows)})",
                source=experiment.path,
                field="paper_row",
            )


def base_graph(experiment: Experiment, model: str | None = None):
    from scaling_lab.models import get_block_graph

    try:
        return get_block_graph(model or experiment.base)
    except SpecError as exc:
        raise exc.located(experiment.path) from None


def variant_graph(experiment: Experiment, variant: Variant):
    """The BlockGraph a variant's trial profiles and trains."""
    graph = base_graph(experiment, variant.model)
    return materialize(graph, variant.overrides, scale_args=variant.scale, source=experiment.path)


def check_graphs_of(experiment: Experiment) -> None:
    """Build and lower every variant; for a search, try each path at its extreme values."""
    from scaling_lab.models import get_layer_graph

    def lowered(graph, where: str) -> None:
        try:
            get_layer_graph(graph, deploy=experiment.form == "deploy")
        except SpecError as exc:
            raise SpecError(f"{where}: {exc}", source=experiment.path) from None

    for variant in experiment.variants:
        split = split_overrides(variant.overrides, source=experiment.path)
        if split.train:  # the row's training settings over every budget's
            for budget in (None, *experiment.budgets):
                merged = merge_train(experiment.train_config(budget), split.train)
                _parse_train(merged, experiment.path, f"variant '{variant.label}': train")
        lowered(variant_graph(experiment, variant), f"variant '{variant.label}'")
    if experiment.search is None:
        return
    base = base_graph(experiment)
    for path, dist in experiment.search.space.items():
        split = split_overrides({path: dist.corners()[0]}, source=experiment.path)
        if split.fields:
            matching_nodes(base, path, source=experiment.path)
        for value in dist.corners():
            if split.train:
                _parse_train(split_overrides({path: value}).train, experiment.path, f"space.{path}")
                continue
            graph = materialize(base, {path: value}, source=experiment.path)
            lowered(graph, f"search parameter '{path}' = {value!r}")
