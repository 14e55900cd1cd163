"""Mixed precision training on the CPU (``amp: true`` = bf16 autocast): the model runs in the
lower precision, the loss in fp32, nothing is loss-scaled, and a seeded run still repeats bit
for bit (a search's tables must)."""

from __future__ import annotations

import math

import pytest
import torch

from scaling_lab.train.checkpoint import load_checkpoint
from scaling_lab.train.precision import autocast_dtype, to_float32
from scaling_lab.train.run_log import read_csv
from scaling_lab.train.trainer import Trainer, train
from tests.helpers import train_fakes
from tests.helpers.specs import TINY_SPEC


def test_to_float32_casts_every_floating_tensor_and_keeps_the_structure():
    half = torch.ones(2, dtype=torch.bfloat16)
    index = torch.arange(3)
    out = to_float32({"a": [half, (half, index)], "b": 1.5})
    assert out["a"][0].dtype == torch.float32 and isinstance(out["a"][1], tuple)
    assert out["a"][1][0].dtype == torch.float32 and out["a"][1][1] is index
    assert out["b"] == 1.5


def test_autocast_type_is_fp16_on_cuda_and_bf16_on_the_cpu():
    assert autocast_dtype(torch.device("cuda", 0)) == torch.float16
    assert autocast_dtype(torch.device("cpu")) == torch.bfloat16


@pytest.fixture
def spec_path(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_SPEC)
    return path


def _config(spec_path, out, **settings):
    base = {
        "data": "synth:images=16,size=64",
        "img_size": 64,
        "batch_size": 8,
        "nominal_batch": 8,
        "epochs": 2,
        "seed": 3,
    }
    return train_fakes.fake_config(spec_path, out, **{**base, **settings})


def _losses(run) -> list[float]:
    return [float(row["total"]) for row in read_csv(run / "steps.csv")]


@pytest.fixture
def runs(spec_path, tmp_path, monkeypatch):
    monkeypatch.setenv("SCALING_LAB_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)
    train(_config(spec_path, tmp_path / "fp32"))
    for name in ("bf16-a", "bf16-b"):
        train(_config(spec_path, tmp_path / name, amp=True))
    return tmp_path


def test_bf16_first_loss_is_fp32_within_bf16_rounding_and_runs_repeat_bit_for_bit(runs):
    fp32, bf16 = _losses(runs / "fp32"), _losses(runs / "bf16-a")
    assert math.isclose(fp32[0], bf16[0], rel_tol=2e-2)  # bf16: 8 bits of mantissa
    assert fp32[0] != bf16[0]  # the setting is in force: the model ran in bf16
    assert bf16 == _losses(runs / "bf16-b")
    a, b = (load_checkpoint(runs / name) for name in ("bf16-a", "bf16-b"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.isfinite(v).all() for v in a["model"].values() if v.is_floating_point())


def test_bf16_needs_no_loss_scaling(spec_path, tmp_path, monkeypatch):
    monkeypatch.setenv("SCALING_LAB_CACHE", str(tmp_path / "cache"))
    trainer = Trainer(_config(spec_path, tmp_path / "run", amp=True))
    trainer._setup()
    assert trainer.amp and trainer.amp_dtype == torch.bfloat16
    assert not trainer.scaler.is_enabled()
