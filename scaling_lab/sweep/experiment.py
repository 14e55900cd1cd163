"""Experiment specs (``experiments/*.yaml``): one file per ablation table or search.

An experiment names a base model and either explicit ``variants`` (the rows of a table: a
label plus overrides and transforms; run as a grid) or a ``search`` (a search space with
Optuna distributions, objectives and a trial budget). It says which metrics to collect,
the training recipe (``train``, with named ``budgets`` laid over it, e.g. ``paper`` for COCO
on a cluster), resources per trial and an optional ASHA scheduler. See
``docs/experiments.md`` for the full format.

This module reads a file into the checked ``Experiment``. The file's format is the
dataclasses of ``experiment_format``, read by ``scaling_lab.schema`` (keys, types, required
keys, each class's ``check()``); here paths are resolved (models, the search space file, the
latency table) and objectives and constraints named by their result columns. Then
``experiment_checks`` checks what needs more than one value (paper rows, training settings
over every budget) and ``experiment_graphs`` builds and lowers every row's graph and every
searched value. Mistakes raise a ``UserError`` naming the file, line and key.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

from scaling_lab import schema
from scaling_lab.errors import UserError, shown
from scaling_lab.schema import FieldError
from scaling_lab.spec.errors import SpecError
from scaling_lab.spec.yaml_lines import read_text_file, read_yaml_file, read_yaml_mapping
from scaling_lab.sweep.columns import ALIASES, measured_at
from scaling_lab.sweep.experiment_checks import check_references, check_training, located
from scaling_lab.sweep.experiment_format import (
    METRICS,
    Experiment,
    Latency,
    Scheduler,
    Search,
    Variant,
    check_name,
)
from scaling_lab.sweep.experiment_graphs import check_graphs_of
from scaling_lab.sweep.latency_auto import AUTO
from scaling_lab.sweep.space import Constraint, SpaceFile, parse_constraint
from scaling_lab.sweep.trial_keys import slug


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
        if not os.path.exists(space_path):  # False, not OSError, for a name too long
            raise SpecError(
                f"no such search space file: {shown(space)}", source=source, field="search.space"
            )
        space_source = str(space_path)
        try:  # what is wrong with that file (a folder, /etc/passwd), at the line naming it
            text = read_text_file(space_path, "search space file")
            raw = read_yaml_mapping(text, space_source, "a search space")
            declared = schema.build(SpaceFile, raw, source=space_source)
        except UserError as exc:
            raise SpecError(str(exc), source=source, field="search.space") from None
        space = declared.params
        lines = {p: schema.line_of(raw, f"params.{p}") for p in space}
        try:
            constraints += [
                parse_constraint(c, source=space_source, known=known) for c in declared.constraints
            ]
        except UserError as exc:
            raise located(exc, space_source, schema.line_of(raw, "constraints")) from None
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
        known = measured_at("profile") + (measured_at("latency") if timed else ())
        known += measured_at("latency_pred") if "latency_pred" in declared.metrics else ()
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
        baselines=None
        if declared.baselines is None
        else tuple(_resolve_model(m, base_dir) for m in declared.baselines),
        baseline=declared.baseline or (labels[0] if labels else None),
        against=declared.against or (labels[-1] if len(labels) > 1 else None),
    )


def _resolve_table(declared: Experiment, base_dir: Path) -> Latency:
    """``latency.table`` resolved against the experiment's folder (``auto``: this machine's
    cached table, built on first use: ``latency_auto.py``); required by latency_pred."""
    table = declared.latency.table
    if table == AUTO:
        return declared.latency
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
        raise located(exc, source, schema.line_of(data, exc.field or "")) from None
    check_references(experiment)
    check_training(experiment)
    if check_graphs:
        try:
            check_graphs_of(experiment)
        except UserError as exc:
            if exc.field not in ("proxy", "base") and not str(exc.field).startswith("baselines"):
                raise
            raise located(exc, source, schema.line_of(data, exc.field)) from None
    return experiment
