"""The one NMS against a brute-force greedy NMS written from the rule, and the box helpers."""

from __future__ import annotations

import pytest
import torch

from scaling_lab.nn import postprocess
from scaling_lab.nn.postprocess import (
    count_candidates,
    non_max_suppression,
    xywh_corners,
    xywh_to_xyxy,
)


def _iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _brute_force(
    rows: list[list[float]], conf: float, iou: float, max_det: int
) -> tuple[list[tuple], int]:
    """Greedy NMS in plain Python: every (box, class) with obj > conf and score > conf is a
    candidate (score = obj x cls, or obj with one class); best first, a candidate is kept iff
    no kept box of its class overlaps it by more than ``iou``. Returns the kept boxes and the
    number of candidates."""
    nc = len(rows[0]) - 5
    cands = []
    for cx, cy, w, h, obj, *cls in rows:
        if obj <= conf:
            continue
        box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
        for c, p in enumerate(cls):
            score = obj if nc == 1 else obj * p
            if score > conf:
                cands.append((score, c, box))
    cands.sort(key=lambda t: -t[0])
    kept: list[tuple] = []
    for score, c, box in cands:
        if all(k[1] != c or _iou(k[2], box) <= iou for k in kept):
            kept.append((score, c, box))
        if len(kept) == max_det:
            break
    return kept, len(cands)


def _random_pred(batch: int, n: int, nc: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(batch, n, 2, generator=g) * 100
    wh = torch.rand(batch, n, 2, generator=g) * 35 + 5
    probs = torch.rand(batch, n, 1 + nc, generator=g)
    return torch.cat([xy, wh, probs], -1)


@pytest.mark.parametrize(
    ("nc", "conf", "iou", "max_det"),
    [(4, 0.1, 0.5, 1000), (4, 0.001, 0.65, 30), (3, 0.3, 0.3, 300), (1, 0.2, 0.45, 1000)],
)
def test_nms_equals_brute_force_multi_label(nc, conf, iou, max_det):
    pred = _random_pred(batch=2, n=250, nc=nc, seed=nc * 7 + max_det)
    out = non_max_suppression(pred, conf_thres=conf, iou_thres=iou, max_det=max_det)
    assert len(out) == 2
    n_candidates = 0
    for det, rows in zip(out, pred.double().tolist()):
        expected, n = _brute_force(rows, conf, iou, max_det)
        n_candidates += n
        assert len(det) == len(expected) > 0
        assert det[:, 5].long().tolist() == [c for _, c, _ in expected]
        torch.testing.assert_close(
            det[:, 4].double(), torch.tensor([s for s, _, _ in expected], dtype=torch.float64)
        )
        boxes = torch.tensor([b for _, _, b in expected], dtype=torch.float64)
        torch.testing.assert_close(det[:, :4].double(), boxes, atol=1e-4, rtol=0)
    # the count the benchmark reports is the brute force's number of candidates
    assert count_candidates(pred, conf) == n_candidates > sum(len(d) for d in out)


def test_hand_built_case_keeps_every_class_above_threshold():
    pred = torch.tensor(
        [
            [
                [50.0, 50.0, 20.0, 20.0, 0.9, 0.9, 0.1],  # class 0 .81, class 1 .09
                [52.0, 52.0, 20.0, 20.0, 0.8, 0.9, 0.1],  # overlaps the first (IoU .68)
                [200.0, 200.0, 10.0, 10.0, 0.7, 0.2, 0.9],  # class 0 .14, class 1 .63
                [300.0, 300.0, 10.0, 10.0, 0.0001, 0.5, 0.5],  # objectness too low
            ]
        ]
    )
    (det,) = non_max_suppression(pred, conf_thres=0.01, iou_thres=0.5)
    assert det[:, 4].tolist() == pytest.approx([0.81, 0.63, 0.14, 0.09])
    assert det[:, 5].tolist() == [0.0, 1.0, 0.0, 1.0]
    assert det[0, :4].tolist() == pytest.approx([40.0, 40.0, 60.0, 60.0])
    assert count_candidates(pred, 0.01) == 6
    (single,) = non_max_suppression(pred, conf_thres=0.01, iou_thres=0.5, multi_label=False)
    assert single[:, 4].tolist() == pytest.approx([0.81, 0.63])


def test_nms_refuses_output_without_classes():
    with pytest.raises(ValueError, match="5 \\+ nc"):
        non_max_suppression(torch.zeros(1, 4, 5))


def test_defaults_are_the_map_protocol():
    assert (postprocess.CONF_THRES, postprocess.IOU_THRES, postprocess.MAX_DET) == (
        0.001,
        0.65,
        300,
    )


def test_xywh_helpers():
    box = torch.tensor([[2.0, 3.0, 4.0, 2.0]])
    assert xywh_to_xyxy(box).tolist() == [[0.0, 2.0, 4.0, 4.0]]
    top_left, bottom_right = xywh_corners(box[0])
    assert top_left.tolist() == [0.0, 2.0] and bottom_right.tolist() == [4.0, 4.0]
