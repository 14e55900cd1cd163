"""Label assignment: centre-prior candidates, dynamic k, cost, one target per prediction, and
the fine/coarse label sets, on hand-built cases."""

import math

import pytest
import torch
from torch.nn import functional

from scaling_lab.train.assign import COARSE, FINE, AssignRule
from scaling_lab.train.assign_own_prior import (
    assign,
    candidate_cells,
    class_cost,
    dynamic_k,
    first_per_key,
    lowest_k,
    union,
)
from scaling_lab.train.box_ops import box_iou

STRIDE = 8.0


def _cells(
    centre, size=(16.0, 16.0), neighbours=3, grids=((8, 8),), strides=(STRIDE,), anchors=None
):
    """Valid (level, anchor, gj, gi) candidates of one target (pixels)."""
    anchors = anchors if anchors is not None else [[[16.0, 16.0]]] * len(grids)
    cand = candidate_cells(
        torch.tensor([centre]),
        torch.tensor([size]),
        list(grids),
        torch.tensor(strides),
        torch.tensor(anchors),
        4.0,
        neighbours,
    )
    t, slot = cand.valid.nonzero(as_tuple=True)
    rows = zip(
        cand.level[slot].tolist(),
        cand.anchor[slot].tolist(),
        cand.gj[t, slot].tolist(),
        cand.gi[t, slot].tolist(),
    )
    return set(rows)


def _px(gx, gy):
    return (gx * STRIDE, gy * STRIDE)


def test_three_and_five_positive_cells():
    centre = _px(3.3, 5.7)  # cell (gi 3, gj 5); left half in x, lower half in y
    fine = _cells(centre, neighbours=3)
    assert fine == {(0, 0, 5, 3), (0, 0, 5, 2), (0, 0, 6, 3)}  # centre, left, down
    coarse = _cells(centre, neighbours=5)
    assert coarse == {(0, 0, 5, 3), (0, 0, 5, 2), (0, 0, 5, 4), (0, 0, 4, 3), (0, 0, 6, 3)}
    assert fine < coarse


def test_neighbours_outside_the_grid_are_dropped():
    assert _cells(_px(0.2, 0.2), neighbours=3) == {(0, 0, 0, 0)}
    assert _cells(_px(0.2, 0.2), neighbours=5) == {(0, 0, 0, 0), (0, 0, 0, 1), (0, 0, 1, 0)}
    assert _cells(_px(7.8, 7.8), neighbours=3) == {(0, 0, 7, 7)}
    assert _cells(_px(7.8, 7.8), neighbours=5) == {(0, 0, 7, 7), (0, 0, 7, 6), (0, 0, 6, 7)}


def test_every_level_offers_its_own_cells():
    centre = _px(3.3, 5.7)  # at stride 16: (1.65, 2.85) -> cell (1, 2), right and down
    cells = _cells(centre, grids=((8, 8), (4, 4)), strides=(8.0, 16.0))
    assert {c for c in cells if c[0] == 1} == {(1, 0, 2, 1), (1, 0, 2, 2), (1, 0, 3, 1)}


def test_anchor_shape_filter():
    anchors = [[[10.0, 10.0], [40.0, 10.0]]]
    # 100 x 10 against 10 x 10: ratio 10 (out); against 40 x 10: 2.5 (in)
    cells = _cells(_px(3.3, 5.7), size=(100.0, 10.0), anchors=anchors)
    assert {c[1] for c in cells} == {1}
    # the threshold is strict: ratio exactly 4 is out
    assert {c[1] for c in _cells(_px(3.3, 5.7), size=(40.0, 10.0), anchors=anchors)} == {1}


def test_dynamic_k_on_known_ious():
    ious = torch.tensor(
        [
            [0.75, 0.5, 0.5, 0.25] + [0.0] * 8,  # sum 2.0 -> 2
            [0.5, 0.25, 0.125] + [0.0] * 9,  # sum 0.875 -> at least 1
            [0.5] * 12,  # top 10 -> 5.0; top 20 -> 6.0
            [0.0] * 12,  # no overlap: still 1
        ]
    )
    assert dynamic_k(ious, 10).tolist() == [2, 1, 5, 1]
    assert dynamic_k(ious, 20).tolist() == [2, 1, 6, 1]
    assert dynamic_k(ious[:, :3], 10).tolist() == [1, 1, 1, 1]  # fewer candidates than n


def test_lowest_k_and_first_per_key():
    cost = torch.tensor([[3.0, 1.0, 2.0, float("inf")], [0.5, 0.5, 9.0, 1.0]])
    chosen = lowest_k(cost, torch.tensor([2, 3]))
    assert chosen.tolist() == [[False, True, True, False], [True, True, False, True]]
    key = torch.tensor([7, 3, 7, 3, 5])
    priority = torch.tensor([2.0, 1.0, 1.0, 1.0, 0.0])
    assert sorted(first_per_key(key, priority).tolist()) == [1, 2, 4]  # ties: earlier wins


def test_class_cost_is_bce_of_sqrt_score():
    torch.manual_seed(0)
    obj, cls_logits = torch.randn(2, 5), torch.randn(2, 5, 4)
    cls = torch.tensor([3, 1])
    y = (cls_logits.sigmoid() * obj.sigmoid()[..., None]).sqrt()
    one_hot = functional.one_hot(cls, 4).float()[:, None].expand_as(y)
    expected = functional.binary_cross_entropy_with_logits(
        torch.log(y / (1 - y)), one_hot, reduction="none"
    ).sum(-1)
    assert torch.allclose(class_cost(obj, cls_logits, cls[:, None]), expected, atol=1e-5)


def _maps(batch=1, na=1, grid=8, nc=2):
    return [torch.zeros(batch, na, grid, grid, 5 + nc)]


def _positives(labels):
    """(image, level, anchor, gj, gi, target) of every positive."""
    cols = (labels.image, labels.level, labels.anchor, labels.gj, labels.gi, labels.target)
    return set(zip(*(c.tolist() for c in cols)))


def _assign(maps, targets, rule=FINE, anchors=((16.0, 16.0),)):
    return assign(
        maps,
        torch.as_tensor(targets, dtype=torch.float32).reshape(-1, 6),
        torch.tensor([STRIDE]),
        torch.tensor([anchors]),
        4.0,
        rule,
    )


def _logit(p):
    return math.log(p / (1 - p))


def test_assign_known_ious():
    """Target 16 x 16 at grid (2.25, 2.25); anchor 16 x 16. Candidates: centre (2, 2), left
    (gi 1) and up (gj 1). With all outputs 0 each prediction is the anchor at its cell centre:
    IoUs 0.620, 0.376, 0.376 (sum < 2: k = 1) and the classification cost is the same for
    all, so the centre cell wins."""
    target = [[0.0, 1.0, *_px(2.25, 2.25), 16.0, 16.0]]
    maps = _maps()
    assert _assign(maps, target).cells() == {(0, 0, 0, 2, 2)}

    # Steer the left cell's box onto the target (IoU 1): sum 1.996, k = 1, left wins.
    maps[0][0, 0, 2, 1, 0] = _logit(0.875)  # 2 s - 0.5 + 1 = 2.25
    assert _assign(maps, target).cells() == {(0, 0, 0, 2, 1)}

    # The up cell too: sum 2.62, k = 2: both exact boxes, not the centre.
    maps[0][0, 0, 1, 2, 1] = _logit(0.875)
    assert _assign(maps, target).cells() == {(0, 0, 0, 2, 1), (0, 0, 0, 1, 2)}

    ious = box_iou(
        torch.tensor(target)[0, 2:6],
        torch.tensor([[20.0, 20.0, 16.0, 16.0], [18.0, 18.0, 16.0, 16.0]]),
    )
    assert ious[0].item() == pytest.approx(3.0625 / 4.9375, rel=1e-5)
    assert ious[1].item() == pytest.approx(1.0, rel=1e-6)


def test_one_target_per_prediction():
    """Both targets want the centre cell (2, 2); the one whose box it predicts better (B,
    IoU 0.747 against A's 0.620) keeps it, and it appears once."""
    a = [0.0, 1.0, *_px(2.25, 2.25), 16.0, 16.0]
    b = [0.0, 0.0, *_px(2.4, 2.3), 16.0, 16.0]
    labels = _assign(_maps(), [a, b])
    assert len(labels) == len(set(labels.key.tolist()))
    centre = (labels.gj == 2) & (labels.gi == 2)
    assert centre.sum() == 1 and labels.target[centre].tolist() == [1]

    # The same cell in two different images is two predictions: both keep it.
    a_other = [1.0, *a[1:]]
    labels = _assign(_maps(batch=2), [a_other, b])
    assert labels.cells() == {(1, 0, 0, 2, 2), (0, 0, 0, 2, 2)}


def test_positives_come_from_own_prior_and_batch_equals_per_image():
    torch.manual_seed(1)
    maps = [torch.randn(3, 3, 16, 16, 8), torch.randn(3, 3, 8, 8, 8)]
    strides, anchors = (
        torch.tensor([4.0, 8.0]),
        torch.tensor(
            [[[10, 13], [16, 30], [33, 23]], [[30, 61], [62, 45], [59, 119]]], dtype=torch.float32
        ),
    )
    g = torch.Generator().manual_seed(2)
    n = 12
    targets = torch.cat(
        (
            torch.randint(0, 3, (n, 1), generator=g).float(),
            torch.randint(0, 3, (n, 1), generator=g).float(),
            torch.rand(n, 2, generator=g) * 64,
            torch.rand(n, 2, generator=g) * 40 + 4,
        ),
        1,
    )
    for rule in (FINE, COARSE):
        labels = assign(maps, targets, strides, anchors, 4.0, rule)
        assert len(labels) > 0
        assert len(set(labels.key.tolist())) == len(labels)
        # every positive is a valid candidate of its own target
        cand = candidate_cells(
            targets[:, 2:4],
            targets[:, 4:6],
            [(16, 16), (8, 8)],
            strides,
            anchors,
            4.0,
            rule.neighbours,
        )
        for _, lv, a, gj, gi, t in _positives(labels):
            slot = (cand.level == lv) & (cand.anchor == a) & (cand.gj[t] == gj) & (cand.gi[t] == gi)
            assert (slot & cand.valid[t]).any()
        # vectorized over the batch: the same as assigning image by image
        per_image = set()
        for b in range(3):
            rows = (targets[:, 0] == b).nonzero()[:, 0]
            alone = targets[rows].clone()
            alone[:, 0] = 0
            one = assign([m[b : b + 1] for m in maps], alone, strides, anchors, 4.0, rule)
            per_image |= {(b, *p[1:5], rows[p[5]].item()) for p in _positives(one)}
        batch = _positives(labels)
        assert batch == per_image


def test_union_keeps_primary_targets():
    torch.manual_seed(3)
    maps = [torch.randn(2, 3, 8, 8, 7)]
    strides, anchors = (
        torch.tensor([8.0]),
        torch.tensor([[[10.0, 13.0], [16.0, 30.0], [33.0, 23.0]]]),
    )
    targets = torch.tensor(
        [
            [0, 0, 20.0, 21.0, 14.0, 20.0],
            [0, 1, 24.0, 22.0, 20.0, 16.0],
            [1, 1, 40.0, 9.0, 30.0, 25.0],
        ]
    )
    fine = assign(maps, targets, strides, anchors, 4.0, FINE)
    relaxed = assign(maps, targets, strides, anchors, 4.0, COARSE)
    coarse = union(fine, relaxed)
    assert fine.cells() <= coarse.cells()
    assert len(coarse) > len(fine)
    owner = dict(zip(coarse.key.tolist(), coarse.target.tolist()))
    assert all(owner[k] == t for k, t in zip(fine.key.tolist(), fine.target.tolist()))


def test_empty_targets():
    labels = _assign(_maps(), torch.zeros(0, 6))
    assert len(labels) == 0


def test_rule_checks():
    with pytest.raises(ValueError):
        AssignRule(neighbours=4, topk_iou=10)
    with pytest.raises(ValueError):
        AssignRule(neighbours=3, topk_iou=0)
