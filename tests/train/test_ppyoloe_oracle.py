"""PP-YOLOE's assigners and loss against PaddleDetection's recorded output
(``tools/record_ppyoloe_oracle.py``; fixtures in ``tests/fixtures/ppyoloe_oracle``): the same
positives (order-independent) and every loss term within 1e-6 relative, for the Task-Aligned
and the static ATSS assigner, at 1, 6 and 30 boxes per image and at 3 and 7 (padding)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from scaling_lab.train.heads.ppyoloe import WEIGHTS, PpyoloeLoss

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ppyoloe_oracle"
CASES = [f"{rule}_{n}" for rule in ("tal", "atss") for n in ("1", "6", "30", "3_7")]
REL = 1e-6


def run(case: str) -> tuple[dict, dict]:
    data = dict(np.load(FIXTURES / f"{case}.npz"))
    strides = tuple(int(s) for s in data["strides"])
    maps = [torch.from_numpy(data[f"map_{i}"]).float() for i in range(len(strides))]
    size = int(data["img_size"])
    images = torch.zeros(maps[0].shape[0], 3, size, size)
    crit = PpyoloeLoss(None, {}, strides=strides, nc=int(data["nc"]), reg_max=int(data["reg_max"]))
    crit.static = bool(data["static"])
    return data, crit.losses(maps, torch.from_numpy(data["targets"]), images)


@pytest.mark.parametrize("case", CASES)
def test_positives_are_the_oracles(case: str) -> None:
    data, parts = run(case)
    positive = parts["assigned"].positive  # (B, n, N)
    targets = torch.from_numpy(data["targets"])
    ours = set()
    for b, gt, cell in positive.nonzero().tolist():
        first = int((targets[:, 0] < b).sum())
        ours.add((b, cell, first + gt))
    theirs = {tuple(int(v) for v in row) for row in data["positives"]}
    assert len(theirs) > 0
    assert ours == theirs
    score_sum = float(parts["assigned"].scores.sum())
    assert score_sum == pytest.approx(float(data["score_sum"]), rel=REL)


@pytest.mark.parametrize("case", CASES)
def test_loss_is_the_oracles(case: str) -> None:
    data, parts = run(case)
    for key in ("cls", "iou", "dfl"):
        assert float(parts[key]) == pytest.approx(float(data[f"loss_{key}"]), rel=REL), key
    total = sum(WEIGHTS[k] * parts[k] for k in ("cls", "iou", "dfl"))
    assert float(total) == pytest.approx(float(data["loss"]), rel=REL)


def test_static_assigner_for_the_first_third() -> None:
    crit = PpyoloeLoss(None, {}, strides=(32, 16, 8), nc=3, reg_max=16)
    static = []
    for epoch in range(300):
        crit.set_epoch(epoch, 300)
        static.append(crit.static)
    assert static.index(False) == 100 and not any(static[100:])


def test_loss_under_autocast_is_the_float32_loss() -> None:
    """The trainer calls the loss under autocast (AMP); the loss leaves it and stays float32."""
    data = dict(np.load(FIXTURES / "tal_6.npz"))
    maps = [torch.from_numpy(data[f"map_{i}"]).float() for i in range(3)]
    crit = PpyoloeLoss(None, {}, strides=(32, 16, 8), nc=3, reg_max=16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, items = crit(maps, torch.from_numpy(data["targets"]), torch.zeros(2, 3, 128, 128))
    assert loss.dtype == torch.float32
    assert float(items[3]) == pytest.approx(float(data["loss"]), rel=REL)
