"""A search's proposals: Optuna asked and told batch by batch, so the same command proposes the
same designs in the same order.

Proposing from a shared sampler while trials finish in whatever order the machine gives makes
every proposal depend on timing. Here the driver asks the study for a batch of designs (as
many new ones as run at once; a design proposed again is told its stored row and holds no
slot), the batch trains, and only then is the sampler told every result, in
proposal order; then the next batch is asked. Each batch's sampler is seeded from
(``search.seed``, batch number), so a proposal depends on the results told before it and on
nothing else.

The proposals are logged in the sweep folder (``proposals.json``: index, batch, design, key)
before their batch runs. Every start, fresh or ``--resume``, rebuilds the study from that log:
each batch's designs are asked again as fixed parameters (the sampler's own bookkeeping, e.g.
NSGA-II's generations, follows) and told the results in the trial rows, batch after batch. An
interrupted batch is finished first, then told, so a resumed search goes on exactly as the
uninterrupted one would have.

What the sampler is told: a design's objectives from its row; a trial stopped early by the
rung rule, the values at the epoch where it stopped (its last report: the sampler learns it was
weak, as ASHA judged); an infeasible design, AP 0 (``INFEASIBLE_AP``) and its measured costs;
a failed trial (or one without every objective), a failure, which samplers leave out.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any

import numpy as np

from scaling_lab.eval_protocol import AP_KEYS
from scaling_lab.spec.errors import SpecError
from scaling_lab.sweep.experiment_format import Experiment
from scaling_lab.sweep.store import TrialStore
from scaling_lab.sweep.trial import INFEASIBLE_AP
from scaling_lab.sweep.trial_keys import params_key

ASKS_PER_SLOT = 5  # proposals asked per trial slot of a batch, at most (repeats fill none)


@dataclass(frozen=True)
class Proposal:
    """One design the sampler proposed: its number, batch, sampled values and trial key."""

    index: int
    batch: int
    params: dict[str, Any]
    key: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "batch": self.batch, "params": self.params, "key": self.key}

    @property
    def design(self) -> dict[str, Any]:
        """The trial's config (what ``trial_key`` and the trial read)."""
        return {**self.params, "proposal": self.index, "batch": self.batch}


def logged_batches(store: TrialStore) -> list[list[Proposal]]:
    """The proposal log, grouped by batch in order."""
    proposals = [
        Proposal(int(p["index"]), int(p["batch"]), dict(p["params"]), str(p["key"]))
        for p in store.proposals()
    ]
    proposals.sort(key=lambda p: p.index)
    return [list(group) for _, group in groupby(proposals, key=lambda p: p.batch)]


def batch_seed(seed: int, batch: int) -> int:
    """The sampler seed of one batch: a function of the search's seed and the batch only."""
    return int(np.random.SeedSequence([seed, batch]).generate_state(1)[0])


def first_generation(experiment: Experiment) -> int:
    """Designs the sampler draws before it learns from results: NSGA-II's population, TPE's
    startup trials (what a screen may choose instead: ``screen_plan.py``)."""
    search = experiment.search
    assert search is not None
    if search.sampler == "nsga2":
        # generations of a third of the budget (Optuna's default 50 would never get past
        # the random first generation in a small search)
        return max(4, min(50, search.trials // 3))
    return max(4, min(10, search.trials // 3))


def make_sampler(experiment: Experiment, batch: int) -> Any:
    import optuna

    search = experiment.search
    assert search is not None
    seed = batch_seed(search.seed, batch)
    first = first_generation(experiment)
    if search.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=first)
    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=first)


def storage_url(experiment: Experiment, sweep_dir: Path) -> str:
    search = experiment.search
    if search is not None and search.storage:
        return search.storage
    return f"sqlite:///{sweep_dir / 'optuna.db'}"


class SearchStudy:
    """The Optuna study of one search, rebuilt on every start (see the module docstring)."""

    def __init__(self, experiment: Experiment, sweep_dir: Path) -> None:
        import optuna

        search = experiment.search
        assert search is not None
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.experiment = experiment
        self.objectives = dict(search.objectives)
        self.distributions = {path: dist.to_optuna() for path, dist in search.space.items()}
        storage = optuna.storages.RDBStorage(storage_url(experiment, sweep_dir))
        with contextlib.suppress(KeyError):  # KeyError: a new search
            optuna.delete_study(study_name=experiment.name, storage=storage)
        self.study = optuna.create_study(
            storage=storage,
            study_name=experiment.name,
            directions=["maximize" if m == "max" else "minimize" for m in self.objectives.values()],
        )
        self._asked: dict[int, Any] = {}  # proposal index -> its Optuna trial

    def ask(
        self, batch: int, count: int, first_index: int, known: frozenset[str] = frozenset()
    ) -> list[Proposal]:
        """Proposals of batch ``batch``, numbered from ``first_index``, until ``count`` of them
        are designs outside ``known`` and each other: a design proposed again (its stored row
        is told with the batch) holds no trial slot, which would otherwise idle through the
        batch. At most ``ASKS_PER_SLOT`` x ``count`` asks, for a space that is running out."""
        self.study.sampler = make_sampler(self.experiment, batch)
        proposals: list[Proposal] = []
        seen = set(known)
        while len(proposals) < ASKS_PER_SLOT * count:
            proposal = self._ask(batch, first_index + len(proposals))
            proposals.append(proposal)
            seen.add(proposal.key)
            if len(seen) - len(known) == count:
                break
        return proposals

    def enqueue(self, designs: list[dict[str, Any]]) -> None:
        """Designs the next asks propose first, in order (a screen's choice)."""
        for params in designs:
            self.study.enqueue_trial(params, skip_if_exists=False)

    def replay(self, proposals: list[Proposal]) -> None:
        """Ask a logged batch again, each design as fixed parameters."""
        self.study.sampler = make_sampler(self.experiment, proposals[0].batch)
        for proposal in proposals:
            self._check_logged(proposal)
            self.study.enqueue_trial(proposal.params, skip_if_exists=False)
            self._ask(proposal.batch, proposal.index)

    def _check_logged(self, proposal: Proposal) -> None:
        """A logged design is a point of the space (it is not if the space was edited)."""
        params, dists = proposal.params, self.distributions
        inside = set(params) == set(dists) and all(_holds(dists[p], v) for p, v in params.items())
        if not inside:
            search = self.experiment.search
            raise SpecError(
                f"logged proposal {proposal.index} ({params}) is not in the search space any "
                "more: the space changed since this sweep began; finish it with the old space "
                "or use another --storage",
                source=(search.source if search else "") or self.experiment.path,
                field="search.space",
            )

    def _ask(self, batch: int, index: int) -> Proposal:
        trial = self.study.ask(fixed_distributions=self.distributions)
        # a sampler keeps its bookkeeping when it samples (NSGA-II numbers the trial's
        # generation); a replayed design is fixed and never sampled, so ask for it anyway
        trial.relative_params  # noqa: B018
        self._asked[index] = trial
        params = {path: trial.params[path] for path in self.distributions}
        return Proposal(index, batch, params, params_key(params))

    def tell(self, proposals: list[Proposal], store: TrialStore) -> None:
        """Tell the sampler the batch's results from the trial rows, in proposal order."""
        from optuna.trial import TrialState

        for proposal in sorted(proposals, key=lambda p: p.index):
            trial = self._asked.pop(proposal.index)
            values = told_values(store.read(proposal.key), self.objectives)
            if values is None:
                self.study.tell(trial, state=TrialState.FAIL)
            else:
                self.study.tell(trial, values)


def _holds(distribution: Any, value: Any) -> bool:
    try:
        return bool(distribution._contains(distribution.to_internal_repr(value)))
    except (ValueError, TypeError):  # e.g. a choice the distribution does not have
        return False


def told_values(row: dict[str, Any] | None, objectives: dict[str, str]) -> list[float] | None:
    """The objective values a row gives the sampler; None: tell a failure."""
    if row is None or row.get("status") not in ("finished", "stopped", "infeasible"):
        return None
    values = []
    for name in objectives:
        value = row.get(name)
        if row["status"] == "infeasible" and name in AP_KEYS:
            value = INFEASIBLE_AP
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        if not math.isfinite(value):
            return None
        values.append(float(value))
    return values
