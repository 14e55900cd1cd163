"""One trial of a sweep (the Ray Tune trainable): spec -> profile -> (latency) -> (train).

The trial materializes its spec (base + overrides + transforms), counts params and FLOPs,
times it when latency is collected, checks the constraints (a design that breaks one is
``infeasible`` and not trained), then trains and evaluates it with the trainer, reporting AP
after every epoch so ASHA can stop poor trials. It writes its row to the results store at
each stage. A transient exception (a crash, out of memory, a data loader that died) is
recorded in the row, which stays ``running``, and re-raised: Ray Tune retries the trial up to
``max_failures`` times and the retry resumes from the checkpoint; the driver marks the row
``failed`` when Ray gives up, and the sweep goes on. An error the experiment causes (data,
spec, a non-finite loss) fails the trial at once. ``SCALING_LAB_FAULTS`` (tests only,
``faults.py``) injects such faults at a chosen step.

A trial whose key already has a finished row reports that row and returns (resume, or a
search sampling a design twice); one with a training checkpoint resumes from it; a lock file
keeps a stray worker of a killed driver from training the same folder twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import math
import os
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scaling_lab.atomic import atomic_write_text
from scaling_lab.errors import UserError
from scaling_lab.eval_protocol import AP_KEYS
from scaling_lab.sweep.columns import PARAM_PREFIX
from scaling_lab.sweep.experiment_format import Experiment, Scheduler, Variant, planned_epochs
from scaling_lab.sweep.experiment_graphs import training_graph, variant_graph
from scaling_lab.sweep.faults import FAULTS_ENV, FaultInjector, parse_faults
from scaling_lab.sweep.materialize import Overrides, merge_train
from scaling_lab.sweep.rungs import rung_epochs
from scaling_lab.sweep.store import TERMINAL, TrialStore
from scaling_lab.sweep.trial_keys import EXTRA, row_marks, sampled_params, trial_key

INFEASIBLE_AP = 0.0  # what a search is told for a design that breaks a constraint


@dataclass(frozen=True)
class TrialContext:
    """What every trial of one sweep shares (passed through Ray's object store)."""

    experiment: Experiment
    store_root: str  # absolute: Ray runs each trial in a working folder of its own
    reports_dir: str  # absolute reports/EXPERIMENT: materialized specs go to its specs/
    cwd: str = "."  # the driver's working folder: rows name files relative to it
    profile_only: bool = False
    budget: str | None = None
    retry_failed: bool = False
    # test faults (``faults.py``): read from the driver's environment, so they reach trials
    # on every node; empty for users
    faults: str = dataclasses.field(default_factory=lambda: os.environ.get(FAULTS_ENV, ""))

    def __post_init__(self) -> None:
        parse_faults(self.faults)  # a malformed entry fails before any trial starts


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def resolve_variant(
    config: dict[str, Any], ctx: TrialContext
) -> tuple[Variant, dict[str, Any], int | None]:
    """Ray's config -> the variant to run (its key: the trial's), for a search its sampled
    parameters, and for a repeated row its seed (None: the settings' own)."""
    experiment = ctx.experiment
    key = trial_key(experiment, config)
    extra = config.get(EXTRA)
    if extra is not None:  # a search's baseline or confirm run: its model, design and seed
        variant = Variant(
            label=str(extra["label"]), model=extra.get("model"), order=int(extra["order"]), key=key
        )
        return variant, dict(extra.get("params") or {}), int(extra["seed"])
    if experiment.search is None:
        variant, seed = experiment.trial_keys(ctx.profile_only)[key]
        repeated = experiment.repeats(ctx.profile_only) > 1
        return dataclasses.replace(variant, key=key), {}, seed if repeated else None
    # a search trial's order is its proposal number (results_frame labels it by rank)
    order = int(config.get("proposal", -1))
    return Variant(label="", order=order, key=key), sampled_params(experiment, config), None


@contextlib.contextmanager
def trial_lock(folder: Path) -> Iterator[None]:
    """Exclusive lock on the trial folder; released by the OS if the holder dies."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _numeric(row: dict[str, Any]) -> dict[str, float]:
    """The row's finite numbers: what Ray Tune, ASHA and Optuna see."""
    out = {}
    for key, value in row.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)) and math.isfinite(value):
            out[key] = float(value)
    return out


def _display_path(path: Path, cwd: str) -> str:
    """``path`` relative to the driver's folder when it lies below it (portable reports)."""
    try:
        return str(path.relative_to(cwd))
    except ValueError:
        return str(path)


def evaluated_rungs(experiment: Experiment, settings: dict[str, Any]) -> list[int]:
    """The settings' ``eval_epochs`` and the scheduler's rungs: whatever the evaluation
    cadence, a rung decision has its metric."""
    wanted = set(settings.get("eval_epochs") or ())
    cfg = experiment.scheduler
    if isinstance(cfg, Scheduler):
        epochs = planned_epochs(settings)
        wanted.update(rung_epochs(cfg.grace_period, cfg.reduction_factor, epochs))
    return sorted(wanted)


def _report(row: dict[str, Any], ctx: TrialContext) -> None:
    from ray import tune

    metrics = _numeric(row)
    search = ctx.experiment.search
    if search is not None and row.get("status") == "infeasible":
        for objective in search.objectives:
            if objective in AP_KEYS:
                metrics.setdefault(objective, INFEASIBLE_AP)
    metrics["feasible"] = float(row.get("status") != "infeasible")
    tune.report(metrics)


def _new_row(
    variant: Variant,
    sampled: dict[str, Any],
    changes: Overrides,
    ctx: TrialContext,
    seed: int | None,
) -> dict[str, Any]:
    experiment = ctx.experiment
    row: dict[str, Any] = {
        "experiment": experiment.name,
        "order": variant.order,
        "key": variant.key,
        "label": variant.label,
        "seed": seed,
        "kind": experiment.kind,
        "status": "running",
        "error": None,
        "model": variant.model or experiment.base,
        "overrides": json.dumps(changes.paths(), sort_keys=True, default=str),
        "config": json.dumps(sampled, sort_keys=True, default=str) if sampled else None,
        "form": experiment.form,
        "budget": (ctx.budget or "default") if experiment.trains(ctx.profile_only) else None,
        "train_settings": json.dumps(changes.train, sort_keys=True) if changes.train else None,
        "started_at": _now(),
        "wall_s": 0.0,
    }
    if changes.scale:
        row["scale"] = json.dumps(changes.scale, sort_keys=True)
    proxied = experiment.proxy is not None and ctx.budget is None
    if proxied and experiment.trains(ctx.profile_only):
        row["proxy"] = json.dumps(dataclasses.asdict(experiment.proxy), sort_keys=True)
    for path, value in sampled.items():
        row[f"{PARAM_PREFIX}{path}"] = value
    return row


class _TrialStoppedError(Exception):
    """Raised in a trial the driver has already marked stopped (ASHA, time budget)."""


class Trial:
    """Runs one trial; every stage updates ``self.row`` and writes it to the store."""

    def __init__(self, config: dict[str, Any], ctx: TrialContext) -> None:
        self.ctx = ctx
        self.experiment = ctx.experiment
        self.store = TrialStore(ctx.store_root)
        self.variant, self.sampled, self.seed = resolve_variant(config, ctx)
        self.marks = row_marks(ctx.experiment, config)  # a search's: phase, baseline
        # what the trial changes, split once: the row's overrides, then the sampled values
        self.changes = self.variant.changes.over(Overrides.from_paths(self.sampled))
        self.settings = merge_train(self.experiment.train_config(ctx.budget), self.changes.train)
        if self.seed is not None:  # one of a row's repeats: its own seed
            self.settings["seed"] = self.seed
        self.settings["eval_epochs"] = evaluated_rungs(self.experiment, self.settings)
        trains = self.experiment.trains(ctx.profile_only)
        self.row_seed = int(self.settings.get("seed", 0)) if trains else None
        self.folder = self.store.trial_dir(self.variant.key)
        self.t0 = time.perf_counter()
        self.wall_before = 0.0
        self.row: dict[str, Any] = {}

    def save(self) -> None:
        on_disk = self.store.read(self.variant.key) or {}
        if on_disk.get("status") == "stopped" and self.row.get("status") == "running":
            raise _TrialStoppedError  # the driver stopped this trial: keep its verdict
        self.row["wall_s"] = round(self.wall_before + time.perf_counter() - self.t0, 3)
        self.store.write(self.variant.key, self.row)

    def run(self) -> None:
        with trial_lock(self.folder):
            stored = self.store.read(self.variant.key)  # read under the lock: final
            status = (stored or {}).get("status")
            if status in TERMINAL and not (self.ctx.retry_failed and status == "failed"):
                _report(stored, self.ctx)  # already done: never trained twice
                return
            self.row = _new_row(self.variant, self.sampled, self.changes, self.ctx, self.row_seed)
            self.row.update(self.marks)
            self.row["attempts"] = 1
            if stored is not None and stored.get("status") == "running":  # interrupted
                self.wall_before = float(stored.get("wall_s") or 0.0)
                self.row["order"], self.row["label"] = stored["order"], stored["label"]
                self.row["started_at"] = stored.get("started_at", self.row["started_at"])
                # a Ray retry or a resumed sweep: this attempt goes on from the checkpoint
                self.row["attempts"] = int(stored.get("attempts") or 1) + 1
                if stored.get("retry_errors"):
                    self.row["retry_errors"] = stored["retry_errors"]
            self.save()
            try:
                self._run()
            except _TrialStoppedError:
                return
            except Exception as exc:
                self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        """Record ``exc``. A transient error (a crash, out of memory, a data loader that
        died) leaves the row ``running`` and is re-raised: Ray retries the trial up to
        ``max_failures`` times, from its last checkpoint, and the driver marks the row
        ``failed`` when Ray gives up. An error the experiment causes (its data, its spec, a
        non-finite loss: a retry would meet it again) fails the trial at once."""
        error = f"{type(exc).__name__}: {exc}"
        self.row["error"] = error
        self.row["traceback"] = traceback.format_exc(limit=8)
        transient = not isinstance(exc, (UserError, FloatingPointError))
        if transient and self.experiment.max_failures > 0:
            errors = json.loads(self.row.get("retry_errors") or "[]")
            self.row["retry_errors"] = json.dumps([*errors, error])
            with contextlib.suppress(_TrialStoppedError):
                self.save()
            raise exc
        self.row["status"] = "failed"
        self.row["finished_at"] = _now()
        self.save()
        if transient:  # max_failures 0: Ray marks the trial errored, as before
            raise exc

    def _run(self) -> None:
        from scaling_lab.graph.block_graph import dump_spec

        graph = variant_graph(self.experiment, self.variant, self.changes)
        text = dump_spec(graph)  # for the record: the graph itself is profiled and trained
        atomic_write_text(self.folder / "spec.yaml", text)
        spec_path = Path(self.ctx.reports_dir) / "specs" / f"{self.variant.key}.yaml"
        atomic_write_text(spec_path, text)
        self.row["spec_hash"] = hashlib.sha256(text.encode()).hexdigest()[:12]
        self.row["spec_path"] = _display_path(spec_path, self.ctx.cwd)
        self._profile(graph)
        if self.experiment.wants("latency_pred_ms"):
            self._latency_pred(graph)
        if self.experiment.wants("latency_ms"):
            self._latency(graph)
        # a search's constraints bound its designs; a baseline is the reference, whatever it costs
        constraints = () if self.marks.get("baseline") else self.experiment.constraints
        broken = [str(c) for c in constraints if not c.holds(self.row.get(c.metric))]
        if broken:
            self.row["status"] = "infeasible"
            self.row["error"] = "breaks " + ", ".join(broken)
        elif self.experiment.trains(self.ctx.profile_only):
            self.save()
            self._train(graph)
            self.row["status"] = "finished"
        else:
            self.row["status"] = "finished"
        self.row["finished_at"] = _now()
        self.save()
        if broken or not self.experiment.trains(self.ctx.profile_only):
            _report(self.row, self.ctx)

    def _profile(self, graph) -> None:
        from scaling_lab.analyze.profile import profile
        from scaling_lab.models import model_ref

        counted = profile(model_ref(graph, form=self.experiment.form))
        self.row.update(
            params=counted.params,
            params_m=round(counted.params_m, 4),
            gmacs=round(counted.gmacs, 4),
            gflops=round(counted.gflops, 4),
            img_size=counted.img_size,
        )

    def _latency_pred(self, graph) -> None:
        """The deploy model's latency predicted from the experiment's table (no module)."""
        from scaling_lab.analyze.latency_predict import predict_latency
        from scaling_lab.analyze.latency_table import cached_table
        from scaling_lab.models import get_layer_graph, model_ref

        table = cached_table(self.experiment.latency.table)
        predicted = predict_latency(get_layer_graph(model_ref(graph, form="deploy")), table)
        self.row.update(
            latency_pred_ms=round(predicted.total_ms, 4),
            latency_pred_estimated=predicted.estimated,
        )

    def _latency(self, graph) -> None:
        from scaling_lab.analyze.latency import benchmark
        from scaling_lab.device import default_device

        options = self.experiment.latency.given()
        options.setdefault("device", default_device())
        from scaling_lab.train.heads import with_decode

        result = benchmark(graph, wrap=with_decode, **options)
        protocol = result.protocol
        self.row.update(
            latency_ms=round(result.latency_ms, 4),
            fps=round(result.fps, 3),
            peak_memory_mb=result.peak_memory_mb,
            latency_device=protocol.device_name,
            latency_protocol=(
                f"{protocol.runtime}, {protocol.dtype}, batch {protocol.batch}, "
                f"{protocol.img_size}px, {protocol.threads} threads, median of {protocol.iters}"
            ),
        )

    def _train(self, graph) -> None:
        import torch

        from scaling_lab.machine import machine_line
        from scaling_lab.train.config import TrainConfig
        from scaling_lab.train.evaluation import plain_number
        from scaling_lab.train.trainer import resume, train

        graph = training_graph(self.experiment, graph, self.ctx.budget)  # the proxy, if any
        settings = self.settings
        cpus = int(self.experiment.resources.cpu)
        torch.set_num_threads(max(1, cpus))
        run_dir = self.folder / "train"
        self.row["train_img_size"] = settings.get("img_size")
        reported = []

        def on_epoch(trainer: Any, epoch_row: dict[str, Any]) -> None:
            self.row["epochs_done"] = trainer.epoch
            if epoch_row.get("fitness") is not None:  # evaluated; otherwise keep the last
                for key in AP_KEYS:  # values, which a trial stopped meanwhile is judged by
                    self.row[key] = plain_number(epoch_row.get(key))
            self.row["history"] = json.dumps(epoch_history(run_dir / "results.csv"))
            self.save()
            reported.append(trainer.epoch)
            _report(self.row, self.ctx)

        hooks: dict[str, Any] = {"epoch_callbacks": [on_epoch]}
        injector = FaultInjector(parse_faults(self.ctx.faults), self.variant.key, self.folder)
        if injector.pending:  # tests only (SCALING_LAB_FAULTS)
            from scaling_lab.train.backends import Backends

            hooks["callbacks"] = [injector.on_step]
            if injector.wants_loader:
                build = injector.wrap_build(Backends().get_build_dataloader())
                hooks["backends"] = Backends(build_dataloader=build)
        if (run_dir / "weights" / "last.pt").is_file():
            summary = resume(run_dir, **hooks)
        else:
            config = TrainConfig(
                model=str(self.folder / "spec.yaml"),  # the record; trained: ``graph``
                out=str(run_dir),
                **{"progress": False, "tensorboard": False, **settings},
            )
            summary = train(config, graph=graph, **hooks)
        self.row["epochs_done"] = summary.get("epochs")
        if summary.get("machine"):
            self.row["machine"] = machine_line(summary["machine"])
        for key in AP_KEYS:
            self.row[key] = plain_number(summary.get("metrics", {}).get(key))
        self.row["history"] = json.dumps(epoch_history(run_dir / "results.csv"))
        if not reported:  # the checkpoint was already at its last epoch
            _report(self.row, self.ctx)


def epoch_history(results_csv: Path) -> dict[str, list[float | None]]:
    """Each AP metric per epoch (None where the epoch was not evaluated), from the training
    run's ``results.csv``, which a resumed run rewrites: the rung values of early stopping
    and of ``lab calibrate``."""
    from scaling_lab.train.run_log import read_csv

    rows = read_csv(results_csv) if results_csv.is_file() else []
    history: dict[str, list[float | None]] = {key: [] for key in AP_KEYS}
    for row in rows:
        for key in AP_KEYS:
            text = row.get(key) or ""
            value = float(text) if text.strip() else math.nan
            history[key].append(value if math.isfinite(value) else None)
    return history


def run_trial(config: dict[str, Any], ctx: TrialContext) -> None:
    """The Ray Tune function trainable."""
    Trial(config, ctx).run()
