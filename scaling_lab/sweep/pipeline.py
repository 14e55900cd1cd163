"""A pipelined search: no trial slot idles while designs wait, and the proposals stay the same
on every run.

A batch-synchronous search (``search.py``'s batches, one Tuner each) waits for a batch's
slowest trial before it asks the next batch, so a slot idles through every batch's tail
(a quarter of the main job's wall time on two cores). Here one Tuner runs the whole search,
and its searcher (``PipelineSearcher``) hands out designs as slots free. The order of events
is fixed by batch numbers alone, never by timing:

- batch b is asked once every trial of the batches up to b - ``LAG`` is over; those batches
  are told to the sampler (in order) just before the ask, and batch b - 1 is still training;
- a trial of batch b is judged at its rung against the records of batches up to b - ``LAG``
  (``rungs.RungRule``), which were complete before it was proposed;
- a search's baseline runs (``confirm.py``) fill a slot that would otherwise wait, and its
  confirm runs start as soon as the last trial of the search is over.

So the sampler has seen exactly the same results at each ask, whatever finished first. A slot
waits only when a trial of batch b - ``LAG`` outlasts the whole of batch b - 1.

Resume: the proposal log replays the asks and tells in the same order; a logged batch left
unfinished is finished (alone) before it is told, so a resumed search goes on exactly as the
uninterrupted one would have.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable
from typing import Any

from scaling_lab.sweep.rungs import RungRule, row_history
from scaling_lab.sweep.search import Proposal, SearchStudy
from scaling_lab.sweep.store import TERMINAL, TrialStore

LAG = 2  # batch b is asked when batches up to b - LAG are over (b - 1 may still train)


class Pipeline:
    """The search's batches, asks and tells in their fixed order (see the module docstring)."""

    def __init__(
        self,
        study: SearchStudy,
        store: TrialStore,
        rule: RungRule | None,
        trials: int,
        size: int,
        max_idle: int,
        lag: int = LAG,
    ) -> None:
        self.study, self.store, self.rule = study, store, rule
        self.trials, self.size, self.max_idle, self.lag = trials, size, max_idle, lag
        self.batches: list[list[Proposal]] = []
        self.told = 0  # batches told to the sampler (and recorded by the rung rule)
        self.idle = 0  # batches in a row that proposed no new design
        self.queue: deque[Proposal] = deque()
        # runs that depend on no proposal (a search's baselines) fill a slot that would wait;
        # ``closing`` gives the runs that need the whole search (its confirm phase)
        self.fillers: deque[dict[str, Any]] = deque()
        self.closing: Callable[[], list[dict[str, Any]]] | None = None

    @property
    def log(self) -> list[Proposal]:
        return [p for batch in self.batches for p in batch]

    def known(self) -> set[str]:
        return {p.key for p in self.log}

    def over(self, batch: list[Proposal]) -> bool:
        """Every trial of ``batch`` has a terminal row (its rows only: Tune polls this while
        a slot waits, and reading every row of a long search each time is wasted I/O)."""
        rows = (self.store.read(key) for key in dict.fromkeys(p.key for p in batch))
        return all(row is not None and row.get("status") in TERMINAL for row in rows)

    def tell_upto(self, last: int, finish: Callable[[list[Proposal]], None] | None = None) -> bool:
        """Tell batches up to ``last`` in order; a batch not over is finished first by
        ``finish`` (a resume), or stops the telling (returns False)."""
        while self.told <= last:
            batch = self.batches[self.told]
            if not self.over(batch):
                if finish is None:
                    return False
                finish(batch)
            self.study.tell(batch, self.store)
            if self.rule is not None:
                for key in dict.fromkeys(p.key for p in batch):
                    row = self.store.read(key)
                    if row is not None and row.get("status") in ("finished", "stopped"):
                        self.rule.record(key, row_history(row), batch=self.told)
            self.told += 1
        return True

    def replay(self, batch: list[Proposal], finish: Callable[[list[Proposal]], None]) -> None:
        """A logged batch asked again (fixed designs) after the tells before it."""
        number = len(self.batches)
        self.tell_upto(number - self.lag, finish)
        self.study.replay(batch)
        self.batches.append(batch)

    def resume_queue(self, retry_failed: bool) -> None:
        """The untold logged batches' designs without a terminal row train first."""
        done = self.store.terminal_keys(retry_failed=retry_failed)
        queued: set[str] = set()
        for batch in self.batches[self.told :]:
            for p in batch:
                if p.key not in done and p.key not in queued:
                    queued.add(p.key)
                    self.queue.append(p)

    def finished(self) -> bool:
        return len(self.known()) >= self.trials or self.idle >= self.max_idle

    def next_design(self) -> Proposal | str | None:
        """The next design to train; None: wait for trials to end; "done": the search is."""
        while not self.queue:
            if self.finished():
                return "done"
            number = len(self.batches)
            if not self.tell_upto(number - self.lag):
                return None
            known = self.known()
            count = min(self.size, self.trials - len(known))
            batch = self.study.ask(number, count, first_index=len(self.log), known=frozenset(known))
            self.batches.append(batch)
            self.store.write_proposals([p.as_dict() for p in self.log])
            fresh = list(dict.fromkeys(p.key for p in batch if p.key not in known))
            self.idle = 0 if fresh else self.idle + 1
            by_key = {p.key: p for p in batch}
            self.queue.extend(by_key[k] for k in fresh if not self.over([by_key[k]]))
        return self.queue.popleft()

    def next_config(self) -> dict[str, Any] | str | None:
        """The next trial's Ray config: a design, else a filler while designs wait, else the
        closing runs once every trial of the search is over; None: wait; "done"."""
        proposal = self.next_design()
        if isinstance(proposal, Proposal):
            return {"design": proposal.design}
        if self.fillers:
            return self.fillers.popleft()
        if proposal is None:
            return None
        if self.closing is not None:
            if not self.over(self.log):
                return None
            self.fillers.extend(self.closing())
            self.closing = None
            if self.fillers:
                return self.fillers.popleft()
        return "done"


def pipeline_searcher(pipeline: Pipeline) -> Any:
    """A Ray Tune searcher that hands out ``pipeline``'s designs as slots free."""
    return _searcher_class()(pipeline)


@functools.cache
def _searcher_class() -> type:
    """The searcher's class, made once Ray is imported (it holds no pipeline of its own)."""
    from ray.tune.search import Searcher

    class PipelineSearcher(Searcher):
        def __init__(self, pipeline: Pipeline) -> None:
            super().__init__()
            self.pipeline: Pipeline | None = pipeline

        def __getstate__(self) -> dict:
            # Ray pickles the Tuner for its own restore, which sweeps never use (the proposal
            # log is the record): the study's database handle stays out of the pickle
            return {}

        def __setstate__(self, state: dict) -> None:
            self.pipeline = None

        def set_search_properties(self, metric: Any, mode: Any, config: dict, **spec: Any) -> bool:
            return True

        def suggest(self, trial_id: str) -> dict | None:
            config = self.pipeline.next_config() if self.pipeline is not None else "done"
            if config == "done":
                return Searcher.FINISHED
            return config if isinstance(config, dict) else None

        def on_trial_complete(self, trial_id: str, result: Any = None, error: bool = False) -> None:
            return None  # the trial rows are the record; asks read them

        def save(self, checkpoint_path: str) -> None:
            return None  # the proposal log is the record (resume replays it)

        def restore(self, checkpoint_path: str) -> None:
            return None

    return PipelineSearcher
