"""``run_sweep``: an experiment's trials through Ray Tune (``lab sweep``).

Variants run as one grid in a ``ray.tune.Tuner``. A search runs in batches (``search.py``):
the driver asks Optuna (TPE for one objective, NSGA-II for several) for as many designs as run
at once and tells the sampler their results in proposal order; the batches are pipelined
(``pipeline.py``): one Tuner trains them as slots free, and batch b is asked once the batches
up to b - 2 are over, so no slot idles through a batch's tail. The study lives in SQLite in the
sweep folder (or the RDB URL the experiment gives) and is rebuilt from the proposal log and
the trial rows on every start. So the same command proposes the same designs in the same
order, and early stopping (``rungs.py``) judges a trial of batch b against the batches up to
b - 2 only. A search's baseline runs fill slots that would wait, and its confirm runs start
once its last trial is over (``confirm.py``). Ray is started
embedded on this machine unless ``address`` names a running cluster (whose workers must see
the storage folder).

Resume does not rely on Ray's own experiment snapshot, which lags behind finished trials:
the trial rows are the record. ``resume=True`` runs only the keys without a terminal row
(variants), or finishes the logged batches and then proposes the trials still owed (search),
in fresh Tuners; an interrupted trial continues from its training checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from scaling_lab.atomic import atomic_write_text
from scaling_lab.spec.errors import SpecError
from scaling_lab.sweep.confirm import (
    baseline_runs,
    best_designs,
    confirm_seeds,
    design_runs,
    extra_runs_planned,
    search_seed,
)
from scaling_lab.sweep.experiment_format import Experiment, Scheduler, planned_epochs
from scaling_lab.sweep.latency_auto import resolve_auto_table
from scaling_lab.sweep.pipeline import LAG, Pipeline, pipeline_searcher
from scaling_lab.sweep.progress import SweepProgress, progress_metric
from scaling_lab.sweep.ray_setup import (
    LOOPBACK_ENV,
    check_resources,
    init_ray,
    ray_output,
    trial_slots,
)
from scaling_lab.sweep.rungs import RungRule, rung_scheduler
from scaling_lab.sweep.screen import PROFILE_PREDICTORS
from scaling_lab.sweep.search import Proposal, SearchStudy, first_generation, logged_batches
from scaling_lab.sweep.store import TERMINAL, TrialStore, results_frame, write_results
from scaling_lab.sweep.trial import TrialContext, run_trial
from scaling_lab.sweep.trial_keys import EXTRA, trial_key

__all__ = ["LOOPBACK_ENV", "default_progress", "init_ray", "run_sweep"]
MAX_IDLE_BATCHES = 5  # a search ends after this many batches in a row propose no new design


def _scheduler(experiment: Experiment, settings: dict[str, Any]) -> Any:
    """A fresh ASHA scheduler for a table's Tuner, or None; ``check_runnable`` checked it."""
    cfg = experiment.scheduler
    if not isinstance(cfg, Scheduler):
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        # the trial's own epoch count: Ray's iteration count restarts when a trial is
        # retried or resumed from its checkpoint, which would judge later epochs as first ones
        time_attr="epochs_done",
        metric=cfg.metric,
        mode=cfg.mode,
        max_t=planned_epochs(settings),
        grace_period=cfg.grace_period,
        reduction_factor=cfg.reduction_factor,
    )


def _rung_rule(experiment: Experiment, settings: dict[str, Any]) -> RungRule | None:
    """The search's stop rule (records are added batch by batch), or None."""
    cfg = experiment.scheduler
    if not isinstance(cfg, Scheduler):
        return None
    return RungRule(
        metric=cfg.metric,
        mode=cfg.mode,
        grace_period=cfg.grace_period,
        reduction_factor=cfg.reduction_factor,
        max_t=planned_epochs(settings),
    )


def _trained_to_the_end(row: dict[str, Any], planned: int) -> bool:
    settings = json.loads(row.get("train_settings") or "{}")
    return int(row.get("epochs_done") or 0) >= int(settings.get("epochs", planned))


def _config(trial: Any) -> dict[str, Any]:
    """A Ray trial's config as the trial reads it (a search batch nests it under 'design')."""
    config = getattr(trial, "config", None) or {}
    return dict(config.get("design", config))


def _row_callback(
    experiment: Experiment,
    store: TrialStore,
    reports_dir: Path,
    planned_epochs: int,
    progress: SweepProgress | None = None,
) -> Any:
    """Driver-side: mark trials Ray stopped early, refresh the tidy table as trials end, and
    tell ``progress`` what starts and ends."""
    from ray.tune import Callback

    class _RowsCallback(Callback):
        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            if progress is not None:
                progress.started(trial_key(experiment, _config(trial)))

        def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
            if progress is not None:
                progress.tick()

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._close(trial, "stopped")

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._close(trial, "failed")

        def _close(self, trial: Any, status: str) -> None:
            key = trial_key(experiment, _config(trial))
            row = store.read(key)
            if row is not None and row.get("status") not in TERMINAL:
                if status == "stopped" and _trained_to_the_end(row, planned_epochs):
                    status = "finished"  # ASHA stops every trial at max_t: that is the end
                row["status"] = status
                if status == "failed":
                    row["error"] = row.get("error") or "the trial's worker died"
                store.write(key, row)
            write_results(results_frame(store.rows()), reports_dir)
            if progress is not None and row is not None:
                progress.ended(row)

    return _RowsCallback()


@dataclass
class _Session:
    """What every Tuner of one ``run_sweep`` call shares."""

    experiment: Experiment
    ctx: TrialContext
    store: TrialStore
    settings: dict[str, Any]
    address: str | None
    num_cpus: int | None
    verbose: int
    callback: Any
    started: float = dataclasses.field(default_factory=time.monotonic)
    tuners: int = 0

    def time_left(self) -> float | None:
        if self.experiment.time_budget_s is None:
            return None
        return self.experiment.time_budget_s - (time.monotonic() - self.started)

    def fit(
        self,
        trainable: Any,
        param_space: dict,
        scheduler: Any,
        concurrent: int | None,
        search_alg: Any = None,
    ) -> None:
        """One Tuner over ``param_space`` (a grid) or the designs ``search_alg`` hands out,
        ``concurrent`` trials at a time; nothing once the experiment's time budget is spent."""
        from ray import tune

        time_left = self.time_left()
        if time_left is not None and time_left <= 0:
            return
        init_ray(self.address, self.num_cpus, self.verbose)
        self.tuners += 1
        experiment = self.experiment
        name = f"{experiment.name}-{time.strftime('%Y%m%d-%H%M%S')}-{self.tuners}"
        tuner = tune.Tuner(
            tune.with_resources(
                tune.with_parameters(trainable, ctx=self.ctx), experiment.resources.as_dict()
            ),
            param_space=param_space,
            tune_config=tune.TuneConfig(
                search_alg=search_alg,
                num_samples=-1 if search_alg is not None else 1,
                scheduler=scheduler,
                max_concurrent_trials=concurrent,
                time_budget_s=time_left,
                # a worker trains trial after trial (no process start and imports each):
                # a trial sets every global it reads (seeds, threads), so the same sweep gives
                # the same rows either way (checked on a training search, and by the main
                # job's byte-identical tables)
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=str(Path(self.ctx.store_root) / "ray"),
                failure_config=tune.FailureConfig(
                    max_failures=experiment.max_failures, fail_fast=False
                ),
                callbacks=[self.callback],
                verbose=1 if self.verbose >= 2 else 0,  # Ray's status table: --verbose only
            ),
        )
        tuner.fit()


def _run_table(session: _Session, retry_failed: bool) -> None:
    from ray import tune

    experiment, ctx = session.experiment, session.ctx
    done = session.store.terminal_keys(retry_failed=retry_failed)
    todo = [key for key in experiment.trial_keys(ctx.profile_only) if key not in done]
    if not todo:
        return
    trains = experiment.trains(ctx.profile_only)
    scheduler = _scheduler(experiment, session.settings) if trains else None
    grid = {"variant": tune.grid_search(todo)}
    session.fit(run_trial, grid, scheduler, experiment.max_concurrent)  # None: as resources allow


def _run_batch(
    session: _Session,
    proposals: list[Proposal],
    todo: set[str],
    rule: RungRule | None,
    lag: int = LAG,
) -> None:
    """Train the batch's designs that have no terminal row (one trial per key)."""
    from ray import tune

    designs, seen = [], set()
    for proposal in proposals:
        if proposal.key in todo and proposal.key not in seen:
            seen.add(proposal.key)
            designs.append(proposal.design)
    if not designs:
        return
    scheduler = rung_scheduler(rule, lag=lag) if rule is not None else None
    session.fit(run_search_trial, {"design": tune.grid_search(designs)}, scheduler, len(designs))


def _extra_runs(session: _Session, retry_failed: bool) -> tuple[list[dict], Any]:
    """A search's baseline runs (its seed and the confirm seeds: they depend on no design)
    and a function giving its confirm runs of the best designs once the search is over
    (``confirm.py``); runs with a terminal row are left out."""
    experiment, store = session.experiment, session.store
    if not experiment.trains(session.ctx.profile_only) or experiment.search is None:
        return [], None
    search = experiment.search
    confirm = experiment.confirm
    seeds = confirm_seeds(session.settings, confirm.seeds) if confirm is not None else []
    runs = baseline_runs(experiment, [search_seed(session.settings)], "search")
    runs += baseline_runs(experiment, seeds, "confirm", first_order=len(runs))
    first = len(runs)

    def todo(candidates: list[dict]) -> list[dict]:
        done = store.terminal_keys(retry_failed=retry_failed)
        return [run for run in candidates if run[EXTRA]["key"] not in done]

    def closing() -> list[dict]:
        if confirm is None:
            return []
        designs = best_designs(store.rows(), search.objectives, confirm.top)
        return todo(design_runs(designs, seeds, first_order=first))

    return todo(runs), closing


def run_search_trial(config: dict[str, Any], ctx: TrialContext) -> None:
    """The trainable of a search: a design (nested, with its proposal number) or a baseline
    or confirm run."""
    run_trial(dict(config["design"]) if "design" in config else config, ctx)


def _screen(session: _Session, count: int) -> list[dict[str, Any]]:
    """A search's screen (``screen.py``, ``screen_plan.py``): ``screen.csv`` and
    ``screen.json`` in the reports folder; the designs that open the search."""
    from scaling_lab.sweep.calibrate import training_settings
    from scaling_lab.sweep.screen import screen_designs
    from scaling_lab.sweep.screen_plan import plan_screen

    experiment, ctx = session.experiment, session.ctx
    screen = experiment.screen
    if screen is None or not experiment.trains(ctx.profile_only):
        return []
    reports_dir = Path(ctx.reports_dir)
    proxies = [screen.by] if screen.by not in PROFILE_PREDICTORS else False  # only what ranks
    frame = screen_designs(
        experiment,
        screen.designs,
        budget=ctx.budget,
        reports=reports_dir.parent,
        proxies=proxies,
        progress=session.verbose >= 1,
    )
    train = training_settings(experiment, ctx.budget)
    plan = plan_screen(frame, experiment, count, reports_dir / "calibration.json", train)
    record = {"designs": len(frame), "by": screen.by, "supported": plan.supported}
    record.update(note=plan.note, seeds=plan.seeds)
    atomic_write_text(reports_dir / "screen.json", json.dumps(record, indent=1) + "\n")
    return plan.seeds


def _screen_while_ray_starts(session: _Session, count: int) -> list[dict[str, Any]]:
    """``_screen`` in a thread while Ray starts in this one. Ray's start mostly waits on the
    processes it launches, the screen is CPU work in this process: side by side they take
    the longer of the two (the main job: ~8 s of screen, ~4 s of Ray) instead of the sum.
    The screen's result does not depend on Ray, so the designs are the same."""
    from concurrent.futures import ThreadPoolExecutor

    experiment = session.experiment
    if experiment.screen is None or not experiment.trains(session.ctx.profile_only):
        return _screen(session, count)
    time_left = session.time_left()
    with ThreadPoolExecutor(1, thread_name_prefix="screen") as pool:
        screening = pool.submit(_screen, session, count)
        if time_left is None or time_left > 0:  # as ``fit``: no Ray for a spent budget
            init_ray(session.address, session.num_cpus, session.verbose)
        return screening.result()


def _run_search(session: _Session, retry_failed: bool) -> None:
    """Replay the logged batches (finishing any left unfinished), then propose and train the
    rest in one Tuner whose searcher hands out designs as slots free (``pipeline.py``)."""
    experiment, store = session.experiment, session.store
    search = experiment.search
    assert search is not None
    study = SearchStudy(experiment, Path(session.ctx.store_root))
    trains = experiment.trains(session.ctx.profile_only)
    rule = _rung_rule(experiment, session.settings) if trains else None
    if experiment.max_concurrent is None:  # the batch size asks Ray what it has
        init_ray(session.address, session.num_cpus, session.verbose)
    size = trial_slots(experiment, session.num_cpus, session.address)
    lag = LAG if search.pipeline else 1
    pipeline = Pipeline(study, store, rule, search.trials, size, MAX_IDLE_BATCHES, lag)
    fillers, closing = _extra_runs(session, retry_failed)
    pipeline.fillers.extend(fillers)
    pipeline.closing = closing

    def finish(batch: list[Proposal]) -> None:
        todo = {p.key for p in batch} - store.terminal_keys(retry_failed=retry_failed)
        _run_batch(session, batch, todo, rule)

    seeds = _screen_while_ray_starts(session, first_generation(experiment))
    for batch in logged_batches(store):
        pipeline.replay(batch, finish)
    study.enqueue(seeds[len(pipeline.log) :])
    pipeline.resume_queue(retry_failed)
    scheduler = rung_scheduler(rule, lag=lag) if rule is not None else None
    session.fit(run_search_trial, {}, scheduler, size, search_alg=pipeline_searcher(pipeline))
    pipeline.tell_upto(len(pipeline.batches) - 1)  # the study ends with every result told


def _open_store(sweep_dir: Path, resume: bool) -> TrialStore:
    """The sweep's store; a folder holding trials is only reused with ``resume``."""
    store = TrialStore(sweep_dir)
    if store.rows() and not resume:
        raise SpecError(
            f"{sweep_dir} already holds this sweep's trials: pass --resume to finish it, or "
            "choose another --storage",
            field="storage",
        )
    sweep_dir.mkdir(parents=True, exist_ok=True)
    if not resume and store.proposals():  # proposed by a run killed before any trial began
        store.write_proposals([])
    return store


def default_progress(
    experiment: Experiment, profile_only: bool, verbose: int = 1, **options: Any
) -> SweepProgress:
    """The display of a sweep: a line per trial; a live line on a terminal below ``verbose``
    2 (Ray's table takes the terminal then). ``options``: more ``SweepProgress`` arguments."""
    search = experiment.search
    total = search.trials if search else len(experiment.trial_keys(profile_only))
    if search is not None and not profile_only:
        total += extra_runs_planned(experiment)
    metric, mode = progress_metric(experiment, profile_only)
    settings = {"metric": metric, "mode": mode, "live": False if verbose >= 2 else None}
    return SweepProgress(experiment.name, total, **{**settings, **options})


def run_sweep(
    experiment: Experiment,
    *,
    profile_only: bool = False,
    address: str | None = None,
    storage: str | Path = "runs/sweeps",
    reports: str | Path = "reports",
    resume: bool = False,
    budget: str | None = None,
    retry_failed: bool = False,
    num_cpus: int | None = None,
    verbose: int = 1,
    progress: SweepProgress | None = None,
) -> pd.DataFrame:
    """Run (or finish, with ``resume``) a sweep; returns the tidy results table.

    ``verbose``: 0 prints nothing, 1 a line per trial and a live status line (``progress``,
    or the default one), 2 Ray's own status table and log lines too."""
    experiment = resolve_auto_table(experiment, progress=verbose >= 1 or None)
    experiment.check_runnable(profile_only, budget, local=not address)
    if not address:
        check_resources(experiment, num_cpus)
    settings = experiment.train_config(budget)
    sweep_dir = Path(storage).resolve() / experiment.name
    reports_dir = Path(reports) / experiment.name
    store = _open_store(sweep_dir, resume)
    if address:  # every node: a trial's resources, the storage writable, the datasets there
        from scaling_lab.sweep.experiment_checks import dataset_refs
        from scaling_lab.sweep.ray_setup import check_cluster

        data = dataset_refs(experiment, profile_only, budget)
        check_cluster(experiment, address, str(sweep_dir), data, verbose)
    ctx = TrialContext(
        experiment=experiment,
        store_root=str(sweep_dir),
        reports_dir=str(reports_dir.resolve()),
        cwd=str(Path.cwd()),
        profile_only=profile_only,
        budget=budget,
        retry_failed=retry_failed,
    )
    if verbose >= 1 and progress is None:
        progress = default_progress(experiment, profile_only, verbose)
    if progress is not None:
        progress.resume([r for r in store.rows() if r["key"] in store.terminal_keys()])
    planned = planned_epochs(settings)
    callback = _row_callback(experiment, store, reports_dir, planned, progress)
    session = _Session(experiment, ctx, store, settings, address, num_cpus, verbose, callback)
    try:
        with ray_output(verbose):
            if experiment.search is None:
                _run_table(session, retry_failed)
            else:
                _run_search(session, retry_failed)
    finally:
        if progress is not None:
            progress.close()
    frame = results_frame(store.rows())
    write_results(frame, reports_dir)
    return frame
