"""YOLOX's SimOTA and loss against the public YOLOX code's recorded output
(``tools/record_yolox_oracle.py``; fixtures in ``tests/fixtures/yolox_oracle``): the same
positives (order-independent) and every loss term within 1e-6 relative, at 1, 6 and 30 boxes
per image, with the SimOTA prior of YOLOX 0.3.0 and with the older one (``simota.LEGACY``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from scaling_lab.train.heads.grid import cells
from scaling_lab.train.heads.yolox import YoloxLoss, decode_boxes

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "yolox_oracle"
# legacy_*: recorded with the code before YOLOX commit 14c62a7 (the SimOTA prior of 0.1-0.2)
CASES = tuple(f"{prefix}boxes_{n}" for prefix in ("", "legacy_") for n in (1, 6, 30))
REL = 1e-6


def load(case: str) -> tuple[dict, list[torch.Tensor], torch.Tensor, torch.Tensor]:
    data = dict(np.load(FIXTURES / f"{case}.npz"))
    strides = tuple(int(s) for s in data["strides"])
    maps = [torch.from_numpy(data[f"map_{i}"]).float() for i in range(len(strides))]
    size = int(data["img_size"])
    images = torch.zeros(maps[0].shape[0], 3, size, size)
    return data, maps, torch.from_numpy(data["targets"]), images


def criterion(data: dict, *, use_l1: bool, legacy: bool = False) -> YoloxLoss:
    hyp = {"simota_legacy": 1.0 if legacy else 0.0}
    loss = YoloxLoss(None, hyp, strides=tuple(data["strides"]), nc=int(data["nc"]))
    loss.use_l1 = use_l1
    return loss


@pytest.mark.parametrize("case", CASES)
def test_positives_are_the_oracles(case: str) -> None:
    data, maps, targets, _ = load(case)
    crit = criterion(data, use_l1=False, legacy=case.startswith("legacy"))
    raw = torch.cat([m.flatten(2).transpose(1, 2) for m in maps], 1)
    sizes = [tuple(m.shape[-2:]) for m in maps]
    cell_xy, stride = cells(sizes, crit.strides, raw.device)
    boxes = decode_boxes(raw[..., :4], cell_xy, stride)
    gts = torch.cat((targets[:, :2], targets[:, 2:] * float(data["img_size"])), 1)
    matches = crit.assign(raw, boxes, gts, cell_xy, stride)
    ours = set()
    for b, match in enumerate(matches):
        first = int((targets[:, 0] < b).sum())  # the image's targets start at this row
        for cell, target in zip(match.cell.tolist(), match.target.tolist()):
            ours.add((b, cell, first + target))
    theirs = {tuple(int(v) for v in row) for row in data["positives"]}
    assert len(theirs) == int(data["num_fg"]) > 0
    assert ours == theirs


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("use_l1", [False, True])
def test_loss_is_the_oracles(case: str, use_l1: bool) -> None:
    data, maps, targets, images = load(case)
    crit = criterion(data, use_l1=use_l1, legacy=case.startswith("legacy"))
    parts = crit.losses(maps, targets, images)
    total = parts["iou"] + parts["obj"] + parts["cls"] + parts["l1"]
    if use_l1:
        assert float(parts["l1"]) == pytest.approx(float(data["l1"]), rel=REL)
        assert float(total) == pytest.approx(float(data["loss_l1"]), rel=REL)
    else:
        for key in ("iou", "obj", "cls"):
            assert float(parts[key]) == pytest.approx(float(data[key]), rel=REL), key
        assert float(total) == pytest.approx(float(data["loss"]), rel=REL)


def test_trainer_loss_scales_to_the_nominal_batch() -> None:
    """The trainer's loss is the public total x batch / 64; items hold the public terms."""
    data, maps, targets, images = load("boxes_6")
    loss, items = criterion(data, use_l1=False)(maps, targets, images)
    assert float(items[3]) == pytest.approx(float(data["loss"]), rel=REL)
    assert float(loss) == pytest.approx(float(data["loss"]) * len(images) / 64, rel=REL)


def test_l1_switches_on_for_the_last_epochs() -> None:
    crit = YoloxLoss(None, {}, strides=(8, 16, 32), nc=3)
    on = []
    for epoch in range(300):
        crit.set_epoch(epoch, 300)
        on.append(crit.use_l1)
    assert on.index(True) == 285 and all(on[285:])
    crit.set_epoch(9, 10)
    assert not crit.use_l1  # 15/300 of 10 epochs rounds to none


def test_the_priors_differ_on_these_inputs() -> None:
    """The legacy fixtures test something the current ones do not: another positive set."""
    data, maps, targets, _ = load("legacy_boxes_30")
    legacy = criterion(data, use_l1=False, legacy=True).losses(
        maps, targets, torch.zeros(2, 3, 128, 128)
    )
    current = criterion(data, use_l1=False).losses(maps, targets, torch.zeros(2, 3, 128, 128))
    assert int(legacy["num_fg"]) == len(data["positives"]) != int(current["num_fg"])


def test_loss_under_autocast_is_the_float32_loss() -> None:
    """The trainer calls the loss under autocast (AMP); the loss leaves it and stays float32."""
    data, maps, targets, images = load("boxes_6")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, items = criterion(data, use_l1=True)(maps, targets, images)
    assert loss.dtype == torch.float32
    assert float(items[3]) == pytest.approx(float(data["loss_l1"]), rel=REL)
