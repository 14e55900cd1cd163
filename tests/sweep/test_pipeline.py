"""The pipelined search (issue #27): slots never wait for a batch's tail, yet the designs
proposed do not depend on the order trials finish in. Simulated without Ray: trials "finish"
by writing their rows, in adversarial orders, and the proposal sequences are compared."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from scaling_lab.sweep.experiment import load_experiment
from scaling_lab.sweep.pipeline import LAG, Pipeline
from scaling_lab.sweep.rungs import RungRule
from scaling_lab.sweep.search import SearchStudy
from scaling_lab.sweep.store import TrialStore

SEARCH = """\
base: yolov7-tiny
metrics: [params, gflops]
search:
  space:
    elan1.depth: {type: int, low: 1, high: 4}
    elan2.depth: {type: int, low: 1, high: 4}
    scale.width: {type: float, low: 0.25, high: 1.0, step: 0.25}
  trials: 12
  objectives: {params: min, gflops: max}
  sampler: nsga2
  seed: 7
max_concurrent: 2
"""


@pytest.fixture()
def experiment(tmp_path):
    path = tmp_path / "pipe.yaml"
    path.write_text(SEARCH)
    return load_experiment(path, check_graphs=False)


def _finish(store: TrialStore, config: dict) -> None:
    """A trial's terminal row: objectives a fixed function of its design."""
    design = config["design"]
    key = next(p.key for p in PROPOSED[id(store)] if p.index == design["proposal"])
    d1, d2, w = design["elan1.depth"], design["elan2.depth"], design["scale.width"]
    store.write(key, {"key": key, "status": "finished", "params": d1 * 7 + w * 3, "gflops": d2 * w})


PROPOSED: dict[int, list] = {}


def _simulate(experiment, root: Path, order: str, slots: int = 2) -> tuple[list[str], int]:
    """Run the pipeline to the end; ``order`` picks which running trial ends next: the
    oldest, the newest, or one at random (seeded). Returns the proposed keys and how often a
    free slot had to wait."""
    store = TrialStore(root / order)
    study = SearchStudy(experiment, store.root.parent)
    pipeline = Pipeline(study, store, None, experiment.search.trials, slots, max_idle=5)
    PROPOSED[id(store)] = []
    running: list[dict] = []
    waits, pick = 0, random.Random(3)
    while True:
        config = pipeline.next_config() if len(running) < slots else None
        if isinstance(config, dict):
            PROPOSED[id(store)] = pipeline.log
            running.append(config)
            continue
        if config == "done" and not running:
            break
        if config is None and len(running) < slots:
            waits += 1
        index = {"oldest": 0, "newest": -1}.get(order, pick.randrange(len(running)))
        _finish(store, running.pop(index))
    return [p.key for p in pipeline.log], waits


def test_the_designs_do_not_depend_on_which_trial_finishes_first(experiment, tmp_path):
    runs = {order: _simulate(experiment, tmp_path, order) for order in ("oldest", "newest", "any")}
    keys = {order: run[0] for order, run in runs.items()}
    assert keys["oldest"] == keys["newest"] == keys["any"]
    assert len(set(keys["oldest"])) == experiment.search.trials


def test_a_slot_waits_only_when_a_trial_two_batches_back_still_runs(experiment, tmp_path):
    """Trials ending oldest first (all alike) never leave a slot waiting; the newest-first
    order keeps an old trial running, and only then does a slot wait for it."""
    assert _simulate(experiment, tmp_path, "oldest")[1] == 0
    assert LAG == 2


def test_a_trial_is_judged_against_the_batches_up_to_two_back():
    rule = RungRule(metric="AP50", mode="max", grace_period=1, reduction_factor=2, max_t=4)
    rule.record("a", {"AP50": [0.2]}, batch=0)
    rule.record("b", {"AP50": [0.8]}, batch=1)
    assert rule.cutoff(1, upto=0) == pytest.approx(0.2)
    assert rule.cutoff(1, upto=1) == pytest.approx(0.5)
    assert rule.cutoff(1, upto=-1) is None  # batches 0 and 1 are never stopped
