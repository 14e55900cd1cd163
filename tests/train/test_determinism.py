"""The same design, seed and budget give the same weights and AP (issue #13: determinism).

A short CPU training on the real pipeline (synthetic shapes set, augmentation, YoloV7Loss,
COCO evaluation) is run twice from scratch with ``deterministic: true``; the runs must agree
bit for bit: every weight, the EMA, every logged step and the metrics. Non-deterministic ops
would only warn under ``torch.use_deterministic_algorithms(True, warn_only=True)``, so the
warning is turned into an error here: none may run.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from scaling_lab.train.checkpoint import load_checkpoint
from scaling_lab.train.run_log import read_csv
from scaling_lab.train.trainer import train
from tests.helpers import train_fakes
from tests.helpers.specs import TINY_SPEC


@pytest.fixture
def spec_path(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_SPEC)
    return path


def _train(spec_path, out, seed: int, workers: int = 0):
    settings = {
        "data": "synth:images=16,size=64",
        "img_size": 64,
        "batch_size": 8,
        "nominal_batch": 8,
        "epochs": 2,
        "seed": seed,
        "workers": workers,
    }
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*does not have a deterministic implementation")
        train(train_fakes.fake_config(spec_path, out, **settings))
    return load_checkpoint(out)


def _steps(run) -> list[dict]:
    timing = ("data_s", "time_s")
    return [
        {k: v for k, v in row.items() if k not in timing} for row in read_csv(run / "steps.csv")
    ]


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_a_seeded_training_repeats_bit_for_bit(spec_path, tmp_path, monkeypatch, workers):
    monkeypatch.setenv("SCALING_LAB_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)
    first = _train(spec_path, tmp_path / "a", seed=7, workers=workers)
    second = _train(spec_path, tmp_path / "b", seed=7, workers=workers)
    assert train_fakes.fake_config(spec_path, tmp_path).deterministic  # the setting under test
    assert not torch.are_deterministic_algorithms_enabled()  # restored after the runs
    assert _same_state(first["model"], second["model"])
    assert _same_state(first["ema"]["module"], second["ema"]["module"])
    assert _steps(tmp_path / "a") == _steps(tmp_path / "b")  # every loss, lr, target count
    metrics = [json.loads((tmp_path / run / "metrics.json").read_text()) for run in "ab"]
    assert metrics[0]["metrics"] == metrics[1]["metrics"]  # AP and the rest, exactly
    assert "AP" in metrics[0]["metrics"]

    other = _train(spec_path, tmp_path / "c", seed=8, workers=workers)  # the seed matters
    assert not _same_state(first["model"], other["model"])
