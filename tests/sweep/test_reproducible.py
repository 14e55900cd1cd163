"""Reproducible searches (issue #13): the same command proposes the same designs in the same
order and gives the same table, and a search interrupted mid-batch resumes into that very
sequence. Profile-only NSGA-II on deterministic objectives (params, GFLOPs), so that every
proposal after the first generation depends on what the sampler was told."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from scaling_lab.sweep.experiment import load_experiment
from scaling_lab.sweep.runner import run_sweep
from scaling_lab.sweep.store import TrialStore

pytest.importorskip("ray")

SEARCH = """\
base: yolov7-tiny
metrics: [params, gflops]
search:
  space:
    elan1.depth: {type: int, low: 1, high: 4}
    elan2.depth: {type: int, low: 1, high: 4}
    elan3.depth: {type: int, low: 1, high: 4}
    scale.width: {type: float, low: 0.25, high: 1.0, step: 0.25}
  trials: 6
  objectives: {params: min, gflops: max}
  sampler: nsga2
  seed: 11
max_concurrent: 2
"""
VARIES = ("started_at", "finished_at", "wall_s", "spec_path")  # times, and the tmp folder


pytestmark = pytest.mark.usefixtures("ray_session")  # one Ray session for the module


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    path = tmp_path_factory.mktemp("exp") / "repro.yaml"
    path.write_text(SEARCH)
    return load_experiment(path)


def _run(experiment, root: Path, **kw) -> pd.DataFrame:
    return run_sweep(experiment, storage=root / "runs", reports=root / "reports", verbose=0, **kw)


def _proposals(root: Path, experiment) -> list[tuple[int, int, str]]:
    store = TrialStore(root / "runs" / experiment.name)
    return [(p["index"], p["batch"], p["key"]) for p in store.proposals()]


def _table(frame: pd.DataFrame) -> list[dict]:
    return frame.drop(columns=list(VARIES)).astype(str).to_dict("records")


@pytest.fixture(scope="module")
def first(experiment, tmp_path_factory):
    root = tmp_path_factory.mktemp("first")
    return root, _run(experiment, root)


def test_the_same_search_twice_proposes_the_same_designs_in_order(experiment, first, tmp_path):
    root, frame = first
    proposed = _proposals(root, experiment)
    assert [batch for _, batch, _ in proposed] == [0, 0, 1, 1, 2, 2]  # batches of max_concurrent
    assert len({key for *_, key in proposed}) == len(frame) == 6
    again = _run(experiment, tmp_path)
    assert _proposals(tmp_path, experiment) == proposed
    assert list(frame["key"]) == [key for *_, key in proposed]  # rows in proposal order
    assert list(frame["label"]) == [f"t{i:03d}" for i in range(6)]
    assert _table(again) == _table(frame)  # the same table, timings and paths aside


def test_a_search_interrupted_mid_batch_resumes_into_the_same_sequence(experiment, first, tmp_path):
    """The driver dies in the second batch after one of its two trials finished: the sweep
    folder as it was then (the first 4 proposals logged, 3 trials over) resumes into the
    uninterrupted run's sequence and table."""
    import shutil

    root, frame = first
    shutil.copytree(root / "runs", tmp_path / "runs")
    store = TrialStore(tmp_path / "runs" / experiment.name)
    logged = store.proposals()
    store.write_proposals(logged[:4])
    for proposal in logged[3:]:
        shutil.rmtree(store.trial_dir(proposal["key"]))
    assert len(store.rows()) == 3 and len(store.proposals()) == 4

    resumed = _run(experiment, tmp_path, resume=True)
    assert _proposals(tmp_path, experiment) == _proposals(root, experiment)
    assert _table(resumed) == _table(frame)


def test_resuming_with_a_changed_space_is_refused(first, tmp_path):
    """Logged proposals outside the space could not be replayed as they were made."""
    import shutil

    from scaling_lab.errors import UserError

    root, _ = first
    shutil.copytree(root / "runs", tmp_path / "runs")
    path = tmp_path / "repro.yaml"  # the same name: the same sweep folder
    path.write_text(
        SEARCH.replace(
            "elan1.depth: {type: int, low: 1, high: 4}",
            "elan1.depth: {type: int, low: 9, high: 12}",
        )
    )
    with pytest.raises(
        UserError, match=r"logged proposal 0 .* is not in the search space any more"
    ):
        _run(load_experiment(path), tmp_path, resume=True)


SMALL_SPACE = """\
base: yolov7-tiny
metrics: [params, gflops]
search:
  space:
    elan1.depth: {type: int, low: 1, high: 2}
    scale.width: {type: categorical, choices: [0.25, 0.5]}
  trials: TRIALS
  objectives: {params: min, gflops: max}
  sampler: nsga2
  seed: 3
max_concurrent: 2
"""


@pytest.mark.parametrize("trials", [4, pytest.param(6, marks=pytest.mark.slow)])
def test_a_design_proposed_again_holds_no_slot(tmp_path, trials):
    """Four designs in the space: the random first generation proposes some again. Each is
    logged and told with its batch, but the batch asks on until it holds two new designs;
    a budget beyond the space ends when the space runs out (ask limits, idle batches)."""
    path = tmp_path / "small.yaml"
    path.write_text(SMALL_SPACE.replace("TRIALS", str(trials)))
    experiment = load_experiment(path)
    frame = _run(experiment, tmp_path)
    proposed = _proposals(tmp_path, experiment)
    assert len(frame) == 4 and frame["key"].is_unique  # every design of the space, once
    assert len(proposed) > 4  # the sampler did propose designs again
    first_seen = {}
    for _, batch, key in proposed:
        first_seen.setdefault(key, batch)
    new_per_batch = [list(first_seen.values()).count(b) for b in sorted(set(first_seen.values()))]
    assert new_per_batch == [2, 2]  # no batch trained a single design beside a repeat
    assert [batch for _, batch, _ in proposed] == sorted(batch for _, batch, _ in proposed)
    again = tmp_path / "again"
    _run(experiment, again)
    assert _proposals(again, experiment) == proposed
