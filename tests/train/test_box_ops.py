"""IoU and CIoU against values computed by hand."""

import math

import pytest
import torch

from scaling_lab.train.box_ops import box_ciou, box_iou


def test_iou_by_hand():
    a = torch.tensor([0.0, 0.0, 2.0, 2.0])  # [-1, 1] x [-1, 1]
    b = torch.tensor([1.0, 0.0, 2.0, 2.0])  # [0, 2] x [-1, 1]: overlap 1 x 2
    assert box_iou(a, b).item() == pytest.approx(2 / 6, rel=1e-6)
    far = torch.tensor([10.0, 10.0, 2.0, 2.0])
    assert box_iou(a, far).item() == 0.0
    assert box_iou(a, a).item() == pytest.approx(1.0, rel=1e-6)


def test_iou_broadcasts():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])  # (1, 4)
    b = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 0.0, 2.0, 2.0]])[:, None]  # (2, 1, 4)
    assert box_iou(a, b).shape == (2, 1)


def _ciou_by_hand(p, t):
    """CIoU from the definition, with plain floats; boxes (cx, cy, w, h)."""
    px1, px2, py1, py2 = p[0] - p[2] / 2, p[0] + p[2] / 2, p[1] - p[3] / 2, p[1] + p[3] / 2
    tx1, tx2, ty1, ty2 = t[0] - t[2] / 2, t[0] + t[2] / 2, t[1] - t[3] / 2, t[1] + t[3] / 2
    inter = max(0.0, min(px2, tx2) - max(px1, tx1)) * max(0.0, min(py2, ty2) - max(py1, ty1))
    iou = inter / (p[2] * p[3] + t[2] * t[3] - inter)
    c2 = (max(px2, tx2) - min(px1, tx1)) ** 2 + (max(py2, ty2) - min(py1, ty1)) ** 2
    rho2 = (p[0] - t[0]) ** 2 + (p[1] - t[1]) ** 2
    v = 4 / math.pi**2 * (math.atan(t[2] / t[3]) - math.atan(p[2] / p[3])) ** 2
    alpha = v / (1 - iou + v)
    return iou - rho2 / c2 - alpha * v


def test_ciou_by_hand():
    # pred [1, 3] x [1, 3]; target [2, 4] x [1, 4]: overlap 1 x 2 = 2, union 4 + 6 - 2 = 8
    pred, target = (2.0, 2.0, 2.0, 2.0), (3.0, 2.5, 2.0, 3.0)
    iou = 0.25
    c2 = 3.0**2 + 3.0**2  # enclosing box [1, 4] x [1, 4]
    rho2 = 1.0**2 + 0.5**2
    v = 4 / math.pi**2 * (math.atan(2 / 3) - math.atan(1.0)) ** 2
    expected = iou - rho2 / c2 - v / (1 - iou + v) * v
    assert expected == pytest.approx(_ciou_by_hand(pred, target), rel=1e-12)
    got = box_ciou(
        torch.tensor(pred, dtype=torch.float64), torch.tensor(target, dtype=torch.float64)
    )
    assert got.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    ("pred", "target"),
    [
        ((0.5, 0.5, 2.0, 2.0), (0.25, 0.25, 2.0, 2.0)),  # same shape: no aspect term
        ((0.0, 0.0, 1.0, 3.0), (0.4, -0.2, 2.5, 1.2)),
        ((0.0, 0.0, 1.0, 1.0), (5.0, 5.0, 1.0, 1.0)),  # disjoint: CIoU < 0
    ],
)
def test_ciou_cases(pred, target):
    got = box_ciou(
        torch.tensor(pred, dtype=torch.float64), torch.tensor(target, dtype=torch.float64)
    )
    assert got.item() == pytest.approx(_ciou_by_hand(pred, target), rel=1e-6, abs=1e-9)


def test_ciou_identical_is_one_and_has_gradients():
    box = torch.tensor([[1.0, 2.0, 3.0, 4.0]], requires_grad=True)
    target = torch.tensor([[1.5, 2.0, 2.0, 5.0]])
    assert box_ciou(target, target).item() == pytest.approx(1.0, abs=1e-6)
    (1 - box_ciou(box, target)).sum().backward()
    assert torch.isfinite(box.grad).all() and box.grad.abs().sum() > 0
