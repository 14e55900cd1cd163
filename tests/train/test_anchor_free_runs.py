"""``lab train`` and ``lab eval`` on the anchor-free peers: YOLOX and PP-YOLOE train on the
synthetic set with their head family's loss (no flag), write the COCO AP table, and their
checkpoints evaluate through their family's decode to the same figures."""

from __future__ import annotations

import json

import pytest

from scaling_lab.eval_protocol import AP_KEYS
from scaling_lab.train.checkpoint import load_checkpoint
from tests.helpers.cli import run_lab_here

DATA = "synth:images=16,size=64"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["yolox-s", "ppyoloe-s"])
def test_train_then_eval(name, tmp_path, monkeypatch):
    monkeypatch.setenv("SCALING_LAB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / name
    common = ("--data", DATA, "--img", "64")
    train = run_lab_here(
        "train", "--model", name, *common, "--epochs", "1", "--batch", "8",
        "--nominal-batch", "8", "--warmup-min-steps", "0", "--out", str(out),
    )  # fmt: skip
    assert train.returncode == 0, train.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert set(AP_KEYS) <= set(metrics)
    # (one epoch from the public prior biases: few or no cells pass the NMS threshold yet)
    ckpt = load_checkpoint(out)
    key, value = {"yolox-s": ("mixup", 1.0), "ppyoloe-s": ("mosaic", 0.0)}[name]
    assert ckpt["hyp"]["momentum"] == 0.9 and ckpt["hyp"][key] == value  # its family's recipe
    evaluated = run_lab_here("eval", "--weights", str(out), *common, "--json")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    figures = json.loads(evaluated.stdout.strip().splitlines()[-1])
    assert figures["model"] == name
    for key in (*AP_KEYS, "n_predictions"):
        assert figures[key] == metrics[key], key
