"""``run_sweep``: an experiment's trials through a ``ray.tune.Tuner`` (``lab sweep``).

Variants run as a grid; a search draws its trials through Ray Tune's ``OptunaSearch`` (TPE
for one objective, NSGA-II for several), its study kept in SQLite in the sweep folder (or the
RDB URL the experiment gives) so a resumed search goes on from what it learnt. Ray is started
embedded on this machine unless ``address`` names a running cluster (whose workers must see
the storage folder).

Resume does not rely on Ray's own experiment snapshot, which lags behind finished trials:
the trial rows are the record. ``resume=True`` runs only the keys without a terminal row
(variants), or the trials still owed (search: interrupted designs first, then new samples),
in a fresh Tuner; an interrupted trial continues from its training checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd

from scaling_lab.spec.errors import SpecError
from scaling_lab.sweep.experiment import Experiment, Scheduler, trial_key
from scaling_lab.sweep.store import TERMINAL, TrialStore, results_frame, write_results
from scaling_lab.sweep.trial import TrialContext, run_trial

MAX_SEARCH_ROUNDS = 5


def _sampler(experiment: Experiment, told: int) -> Any:
    """The Optuna sampler. ``told``: trials the study already holds; a resumed search seeds
    with ``seed + told`` so its random draws do not replay the first run's (which would
    propose the same designs again and spend the budget on finished keys)."""
    import optuna

    search = experiment.search
    assert search is not None
    seed = search.seed + told
    if search.sampler == "nsga2":
        # generations of a third of the budget (Optuna's default 50 would never get past
        # the random first generation in a small search)
        population = max(4, min(50, search.trials // 3))
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=population)
    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    startup = max(4, min(10, search.trials // 3))
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=startup)


def _storage_url(experiment: Experiment, sweep_dir: Path) -> str:
    search = experiment.search
    if search is not None and search.storage:
        return search.storage
    return f"sqlite:///{sweep_dir / 'optuna.db'}"


def _fail_stale_trials(url: str, study_name: str) -> int:
    """Mark the study's trials left RUNNING by a killed driver as failed; returns how many
    trials the study holds (0 for a new study)."""
    import optuna
    from optuna.trial import TrialState

    storage = optuna.storages.get_storage(url)
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return 0
    for trial in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
        storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
    return len(storage.get_all_trials(study_id, deepcopy=False))


def _search_alg(experiment: Experiment, sweep_dir: Path, pending: list[dict[str, Any]]) -> Any:
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    search = experiment.search
    assert search is not None
    url = _storage_url(experiment, sweep_dir)
    study_name = experiment.name
    told = _fail_stale_trials(url, study_name)
    metrics, modes = list(search.objectives), list(search.objectives.values())
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return OptunaSearch(
        space={path: dist.to_optuna() for path, dist in search.space.items()},
        metric=metrics if len(metrics) > 1 else metrics[0],
        mode=modes if len(modes) > 1 else modes[0],
        sampler=_sampler(experiment, told),
        study_name=study_name,
        storage=optuna.storages.RDBStorage(url),
        points_to_evaluate=pending or None,
    )


def _scheduler(experiment: Experiment, settings: dict[str, Any]) -> Any:
    """A fresh ASHA scheduler (one per Tuner), or None; ``check_runnable`` checked it."""
    cfg = experiment.scheduler
    if not isinstance(cfg, Scheduler):
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        time_attr="training_iteration",
        metric=cfg.metric,
        mode=cfg.mode,
        max_t=int(settings.get("epochs", 300)),
        grace_period=cfg.grace_period,
        reduction_factor=cfg.reduction_factor,
    )


def _trained_to_the_end(row: dict[str, Any], planned: int) -> bool:
    settings = json.loads(row.get("train_settings") or "{}")
    return int(row.get("epochs_done") or 0) >= int(settings.get("epochs", planned))


def _row_callback(
    experiment: Experiment, store: TrialStore, reports_dir: Path, planned_epochs: int
) -> Any:
    """Driver-side: mark trials Ray stopped early, refresh the tidy table as trials end."""
    from ray.tune import Callback

    class _RowsCallback(Callback):
        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._close(trial, "stopped")

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._close(trial, "failed")

        def _close(self, trial: Any, status: str) -> None:
            key = trial_key(experiment, getattr(trial, "config", None) or {})
            row = store.read(key)
            if row is not None and row.get("status") not in TERMINAL:
                if status == "stopped" and _trained_to_the_end(row, planned_epochs):
                    status = "finished"  # ASHA stops every trial at max_t: that is the end
                row["status"] = status
                if status == "failed":
                    row["error"] = row.get("error") or "the trial's worker died"
                store.write(key, row)
            write_results(results_frame(store.rows()), reports_dir)

    return _RowsCallback()


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on a HOST:PORT nobody listens on (Ray itself retries for minutes)."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto", "local" or another form Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise SpecError(
            f"cannot connect to the Ray cluster at '{address}': {exc.strerror or exc} (is it "
            "running? start one with `ray start --head`)",
            field="address",
        ) from None


LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray's node address is 127.0.0.1


def _loopback_only() -> None:
    """The embedded Ray listens on 127.0.0.1 only: its node address is the loopback one (Ray's
    single-machine mode), for this process and the Ray processes it starts."""
    os.environ[LOOPBACK_ENV] = "0"
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False  # read when Ray resolves the node address


def init_ray(address: str | None, num_cpus: int | None = None) -> None:
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if address:
        _check_reachable(address)
        try:
            ray.init(address=address, log_to_driver=False)
        except Exception as exc:  # ConnectionError, AuthenticationError, bad address, ...
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
            raise SpecError(
                f"cannot connect to the Ray cluster at '{address}': {type(exc).__name__}: "
                f"{reason[:300]} (is it running? with token authentication, set "
                "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN or ~/.ray/auth_token)",
                field="address",
            ) from None
    else:
        _loopback_only()
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)


def _check_resources(experiment: Experiment, num_cpus: int | None) -> None:
    """A trial asking the embedded Ray for more than this machine has would wait forever."""
    cpus = num_cpus or os.cpu_count() or 1
    want = experiment.resources
    if want.cpu > cpus:
        raise SpecError(
            f"a trial asks for {want.cpu:g} CPUs, the embedded Ray has {cpus}",
            source=experiment.path,
            field="resources.cpu",
        )
    if want.gpu > 0:
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if want.gpu > gpus:
            raise SpecError(
                f"a trial asks for {want.gpu:g} GPUs, this machine has {gpus}",
                source=experiment.path,
                field="resources.gpu",
            )


def _plan_round(
    experiment: Experiment,
    store: TrialStore,
    sweep_dir: Path,
    retry_failed: bool,
    profile_only: bool = False,
) -> tuple[dict[str, Any], Any, int] | None:
    """What the next Tuner runs: (param_space, search_alg, num_samples); None if nothing."""
    from ray import tune

    rows = store.rows()
    done = store.terminal_keys(retry_failed=retry_failed, rows=rows)
    if experiment.search is None:
        todo = [key for key in experiment.trial_keys(profile_only) if key not in done]
        return ({"variant": tune.grid_search(todo)}, None, 1) if todo else None
    finished = [r for r in rows if r["key"] in done]
    pending = [json.loads(r["config"]) for r in rows if r["key"] not in done and r["config"]]
    count = len(pending) + max(0, experiment.search.trials - len(finished) - len(pending))
    if count == 0:
        return None
    return {}, _search_alg(experiment, sweep_dir, pending), count


def _tuner(
    experiment: Experiment,
    ctx: TrialContext,
    plan: tuple[dict[str, Any], Any, int],
    *,
    scheduler: Any,
    time_left: float | None,
    callback: Any,
    verbose: int,
    round_: int,
) -> Any:
    """One round's Tuner: the trainable with its resources, search and scheduler."""
    from ray import tune

    param_space, search_alg, num_samples = plan
    sweep_dir = Path(ctx.store_root)
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, ctx=ctx), experiment.resources.as_dict()
    )
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            search_alg=search_alg,
            scheduler=scheduler,
            num_samples=num_samples,
            max_concurrent_trials=experiment.max_concurrent,
            time_budget_s=time_left,
            reuse_actors=False,
        ),
        run_config=tune.RunConfig(
            name=f"{experiment.name}-{time.strftime('%Y%m%d-%H%M%S')}-{round_}",
            storage_path=str(sweep_dir / "ray"),
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
            callbacks=[callback],
            verbose=verbose,
        ),
    )


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
    return store


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
) -> pd.DataFrame:
    """Run (or finish, with ``resume``) a sweep; returns the tidy results table."""
    experiment.check_runnable(profile_only, budget, local=not address)
    if not address:
        _check_resources(experiment, num_cpus)
    settings = experiment.train_config(budget)
    trains = experiment.trains(profile_only)
    sweep_dir = Path(storage).resolve() / experiment.name
    reports_dir = Path(reports) / experiment.name
    store = _open_store(sweep_dir, resume)
    ctx = TrialContext(
        experiment=experiment,
        store_root=str(sweep_dir),
        reports_dir=str(reports_dir.resolve()),
        cwd=str(Path.cwd()),
        profile_only=profile_only,
        budget=budget,
    )
    callback = _row_callback(experiment, store, reports_dir, int(settings.get("epochs", 300)))
    started = time.monotonic()
    # A search whose sampler re-proposes finished designs (their trials report the stored
    # row) ends a round with fewer rows than its budget: top up in a few more rounds.
    for round_ in range(MAX_SEARCH_ROUNDS if experiment.search else 1):
        retry = retry_failed and round_ == 0  # later rounds: this run's failures stand
        plan = _plan_round(experiment, store, sweep_dir, retry, profile_only)
        time_left = None
        if experiment.time_budget_s is not None:
            time_left = experiment.time_budget_s - (time.monotonic() - started)
        if plan is None or (time_left is not None and time_left <= 0):
            break
        init_ray(address, num_cpus)
        tuner = _tuner(
            experiment,
            dataclasses.replace(ctx, retry_failed=retry),
            plan,
            scheduler=_scheduler(experiment, settings) if trains else None,  # fresh each round
            time_left=time_left,
            callback=callback,
            verbose=verbose,
            round_=round_,
        )
        tuner.fit()
    frame = results_frame(store.rows())
    write_results(frame, reports_dir)
    return frame
