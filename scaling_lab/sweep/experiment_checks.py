"""The checks of an experiment that need more than one of its values: paper rows, every
row's training settings over every budget, and what depends on how a sweep runs (devices,
datasets, the latency table, objectives that are collected). All run before any trial."""

from __future__ import annotations

from typing import Any

from scaling_lab import schema
from scaling_lab.errors import UserError
from scaling_lab.eval_protocol import AP_KEYS
from scaling_lab.schema import FieldError
from scaling_lab.spec.errors import SpecError
from scaling_lab.sweep.experiment_format import (
    Experiment,
    Scheduler,
    TrainSettings,
    check_settings,
    planned_epochs,
)
from scaling_lab.sweep.materialize import Overrides, merge_train


def located(exc: UserError, source: str, line: int | None) -> UserError:
    """``exc`` located at ``line`` of ``source``, unless it names another place."""
    if exc.line is None and exc.source in (None, source):
        return exc.located(source, line)
    return exc


def check_references(experiment: Experiment) -> None:
    from scaling_lab.sweep.paper_figures import paper_rows

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
            check_settings(merge_train(experiment.train_config(budget), extra), where)
        except FieldError as exc:
            over = f" (over budget '{budget}')" if budget else ""
            raise SpecError(f"{exc}{over}", source=experiment.path, field=exc.field) from None


def check_training(experiment: Experiment) -> None:
    """Every row's and searched value's training settings, over every budget."""
    for variant in experiment.variants:
        try:
            _check_train(experiment, variant.changes.train, f"variants[{variant.order}].train")
        except UserError as exc:
            raise located(exc, experiment.path, variant.line) from None
    search = experiment.search
    for path, dist in search.space.items() if search is not None else ():
        for value in dist.corners():
            train = Overrides.from_paths({path: value}).train
            try:
                _check_train(experiment, train, f"search.space.{path}")
            except UserError as exc:
                raise located(exc, search.source, search.lines.get(path)) from None


def check_runnable(
    experiment: Experiment, profile_only: bool, budget: str | None = None, *, local: bool = True
) -> None:
    """Errors that depend on how the sweep is run (before any trial starts). ``local``:
    trials run on this machine (embedded Ray), so their devices and datasets are checked
    here too; every trial would otherwise fail with the same error."""
    settings = experiment.train_config(budget)
    if local and experiment.wants("latency_ms"):
        _check_latency(experiment)
    if experiment.wants("latency_pred_ms"):
        _check_latency_table(experiment)
    if local and experiment.trains(profile_only):
        for where, trial_settings in _trial_settings(experiment, budget):
            _check_trial_settings(trial_settings, experiment.path, where)
    if experiment.trains(profile_only):
        if "data" not in settings:
            raise SpecError(
                "a training sweep needs train.data (a dataset folder or 'synth')",
                source=experiment.path,
                field="train",
            )
        epochs = planned_epochs(settings)
        scheduler = experiment.scheduler
        if isinstance(scheduler, Scheduler) and scheduler.grace_period > epochs:
            raise SpecError(
                f"ASHA's grace_period ({scheduler.grace_period}) is longer than the "
                f"training budget ({epochs} epochs)",
                source=experiment.path,
                field="scheduler.grace_period",
            )
    if experiment.search is None:
        return
    collected = experiment.columns(profile_only)
    for objective in experiment.search.objectives:
        if objective not in collected:
            why = " (--profile-only trains nothing)" if objective in AP_KEYS else ""
            raise SpecError(
                f"objective '{objective}' is not collected{why}; collected: {', '.join(collected)}",
                source=experiment.path,
                field="search.objectives",
            )


def _check_latency(experiment: Experiment) -> None:
    from scaling_lab.analyze.timing import resolve_request
    from scaling_lab.device import default_device

    options = experiment.latency.given()
    options.pop("channels_last", None)
    options.setdefault("device", default_device())
    try:
        resolve_request(**options)
    except SpecError as exc:
        raise SpecError(
            exc.reason, source=experiment.path, field=f"latency.{exc.field or 'device'}"
        ) from None


def _check_latency_table(experiment: Experiment) -> None:
    """latency_pred's table loads, is complete and matches the ``latency:`` settings."""
    from scaling_lab.analyze.latency_table import check_protocol, load_table

    given = experiment.latency.given()
    wanted = {k: given[k] for k in ("device", "dtype", "batch", "threads") if k in given}
    if wanted.get("device") == "cuda":
        wanted["device"] = "cuda:0"
    if given.get("channels_last") is not None:
        wanted["layout"] = "nhwc" if given["channels_last"] else "nchw"
    try:
        table = load_table(experiment.latency.table)
        check_protocol(table, wanted, what="the latency: settings")
    except UserError as exc:
        raise SpecError(str(exc), source=experiment.path, field="latency.table") from None


def _trial_settings(experiment: Experiment, budget: str | None) -> list[tuple[str, dict[str, Any]]]:
    """(where, training settings) of every row, and of every searched training value."""
    base = experiment.train_config(budget)
    out = [("train", base)]
    for v in experiment.variants:
        out.append((f"variants[{v.order}].train", merge_train(base, v.changes.train)))
    search = experiment.search
    for path, dist in search.space.items() if search is not None else ():
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


def dataset_refs(
    experiment: Experiment, profile_only: bool, budget: str | None = None
) -> list[tuple[str, str]]:
    """(where, dataset) of every trial's training settings, each dataset once: what every
    node of a cluster must have (``ray_setup.check_cluster``)."""
    if not experiment.trains(profile_only):
        return []
    refs: dict[str, str] = {}
    for where, settings in _trial_settings(experiment, budget):
        data = settings.get("data")
        if isinstance(data, str):
            refs.setdefault(data, where)
    return [(where, data) for data, where in refs.items()]
