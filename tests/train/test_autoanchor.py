"""Autoanchor: the best possible recall against a per-label loop, the fit on labels of known
sizes, the keep / refit decision, and a training run whose spec and head carry the fit."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from scaling_lab.data.sources import ImageRecord
from scaling_lab.train.autoanchor import (
    RECALL_GOAL,
    anchor_fitness,
    best_possible_recall,
    check_anchors,
    fit_anchors,
    label_sizes,
)
from scaling_lab.train.checkpoint import load_checkpoint
from scaling_lab.train.evaluation import model_from_spec
from scaling_lab.train.trainer import train
from tests.helpers import train_fakes
from tests.helpers.specs import TINY_SPEC

P5_ANCHORS = np.array(
    [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]], float
).reshape(3, 3, 2)


def _loop_best_ratios(wh: np.ndarray, anchors: np.ndarray) -> list[float]:
    """Per label, the best anchor's worst-side ratio, one scalar at a time."""
    out = []
    for w, h in wh:
        best = 0.0
        for aw, ah in anchors.reshape(-1, 2):
            worst = min(w / aw, aw / w, h / ah, ah / h)
            best = max(best, worst)
        out.append(best)
    return out


def _records(sizes: np.ndarray, image: tuple[int, int] = (200, 100)) -> list[ImageRecord]:
    """One image (width, height) per 4 labels of the given (w, h) sizes in image pixels."""
    records = []
    for i in range(0, len(sizes), 4):
        wh = sizes[i : i + 4]
        boxes = np.concatenate([np.full_like(wh, 5.0), 5.0 + wh], 1)
        records.append(
            ImageRecord(i, Path(f"{i}.jpg"), image[0], image[1], boxes, np.zeros(len(wh), int))
        )
    return records


def test_recall_and_fitness_match_a_per_label_loop():
    rng = np.random.default_rng(0)
    wh = rng.uniform(2, 400, size=(300, 2))
    best = np.array(_loop_best_ratios(wh, P5_ANCHORS))
    for anchor_t in (2.0, 4.0):
        assert best_possible_recall(wh, P5_ANCHORS, anchor_t) == pytest.approx(
            np.mean(best > 1 / anchor_t)
        )
        assert anchor_fitness(wh, P5_ANCHORS, anchor_t) == pytest.approx(
            np.mean(np.where(best > 1 / anchor_t, best, 0.0))
        )


def test_label_sizes_are_at_the_network_input():
    sizes = np.array([[20.0, 10.0], [50.0, 40.0]])
    records = _records(sizes, image=(200, 100))  # long side 200 -> 64: factor 0.32
    assert np.allclose(label_sizes(records, 64), sizes * 0.32)
    jittered = label_sizes(records, 64, np.random.default_rng(1))
    ratio = jittered / (sizes * 0.32)
    assert np.allclose(ratio, ratio[0, 0])  # one scale per image
    assert 0.9 <= ratio[0, 0] <= 1.1


def test_fit_finds_three_size_clusters():
    rng = np.random.default_rng(2)
    centres = np.array([[6.0, 4.0], [15.0, 20.0], [40.0, 30.0]])
    wh = np.concatenate([c * rng.uniform(0.9, 1.1, size=(200, 2)) for c in centres])
    fitted = fit_anchors(wh, 3, anchor_t=4.0, rng=np.random.default_rng(0), generations=200)
    assert fitted.shape == (3, 2)
    assert (np.diff(fitted.prod(1)) > 0).all()  # sorted by area
    assert np.allclose(fitted, centres, rtol=0.15)
    assert best_possible_recall(wh, fitted, 4.0) == 1.0
    assert np.array_equal(fitted, fitted.round(1))  # as a spec stores them


def test_fitting_never_lowers_the_fitness():
    rng = np.random.default_rng(3)
    wh = rng.lognormal(2.5, 0.6, size=(400, 2))
    start = fit_anchors(wh, 6, 4.0, np.random.default_rng(0), generations=0)
    evolved = fit_anchors(wh, 6, 4.0, np.random.default_rng(0), generations=300)
    assert anchor_fitness(wh, evolved, 4.0) >= anchor_fitness(wh, start, 4.0) - 1e-3


def test_anchors_that_fit_are_kept():
    sizes = np.random.default_rng(4).uniform(20, 120, size=(40, 2))
    fit = check_anchors(_records(sizes), P5_ANCHORS, 200, anchor_t=4.0, seed=0)
    assert not fit.refit and fit.recall_before >= RECALL_GOAL
    assert np.array_equal(fit.anchors, P5_ANCHORS)


def test_anchors_too_large_for_the_labels_are_refit_reproducibly():
    sizes = np.random.default_rng(5).uniform(3, 12, size=(120, 2))  # 1-4 px at 64 px input
    records = _records(sizes * 3)
    fit = check_anchors(records, P5_ANCHORS, 64, anchor_t=4.0, seed=0)
    assert fit.refit and fit.recall_before < RECALL_GOAL < fit.recall_after
    assert fit.anchors.shape == P5_ANCHORS.shape
    areas = fit.anchors.reshape(-1, 2).prod(1)
    assert (np.diff(areas) >= 0).all()  # finest level gets the smallest
    again = check_anchors(records, P5_ANCHORS, 64, anchor_t=4.0, seed=0)
    assert np.array_equal(again.anchors, fit.anchors)


def test_too_few_labels_keep_the_anchors():
    records = _records(np.array([[1.0, 1.0]]))  # below the fit's 2 px floor
    fit = check_anchors(records, P5_ANCHORS, 64, anchor_t=4.0, seed=0)
    assert not fit.refit and np.array_equal(fit.anchors, P5_ANCHORS)


class _InfoWithRecords(train_fakes.FakeInfo):
    def records(self, split: str) -> list[ImageRecord]:
        sizes = np.random.default_rng(6).uniform(1.5, 4.0, size=(64, 2))  # px at 32 px input
        return _records(sizes, image=(32, 32))


@pytest.mark.parametrize("autoanchor", [True, False])
def test_a_run_trains_and_stores_the_fitted_anchors(tmp_path, autoanchor):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY_SPEC)
    backends = dataclasses.replace(
        train_fakes.fake_backends(), resolve_data=lambda d: _InfoWithRecords()
    )
    cfg = train_fakes.fake_config(
        spec, tmp_path / "run", img_size=32, epochs=1, autoanchor=autoanchor, hyp={"anchor_t": 4.0}
    )
    train(cfg, backends=backends)
    stored = yaml.safe_load((tmp_path / "run" / "spec.yaml").read_text())["anchors"]
    checkpoint = load_checkpoint(tmp_path / "run" / "weights" / "last.pt")
    state = checkpoint["model"]
    (buffer,) = (v for k, v in state.items() if k.endswith(".anchors"))  # the trained head's
    settings = yaml.safe_load((tmp_path / "run" / "train.yaml").read_text())
    original = yaml.safe_load(TINY_SPEC)["anchors"]
    if autoanchor:
        assert settings["autoanchor"]["refit"] is True
        assert stored != original
        assert settings["autoanchor"]["anchors"] == stored
    else:
        assert "autoanchor" not in settings
        assert stored == original
    assert torch.allclose(buffer, torch.tensor(stored, dtype=torch.float32).view_as(buffer))
    rebuilt = model_from_spec(checkpoint["spec"])  # the model eval / export build, before weights
    head = next(m for m in rebuilt.modules() if hasattr(m, "anchors"))
    assert torch.equal(head.anchors, buffer)
