"""NMS on hand-built boxes; COCOeval on hand-built ground truth; evaluate() end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.ops import batched_nms

from scaling_lab.data import build_dataloader, resolve_data
from scaling_lab.nn import postprocess
from scaling_lab.nn.postprocess import nms_top, non_max_suppression
from scaling_lab.train.coco_eval import (
    AP_KEYS,
    coco_metrics,
    evaluate,
    round_like_python,
    scale_to_original,
    to_coco_json,
)
from tests.helpers.data_files import write_coco


def _pred(rows, nc=2):
    """Decoded predictions (1, N, 5 + nc) from (cx, cy, w, h, obj, *cls) rows."""
    return torch.tensor([rows], dtype=torch.float32).view(1, len(rows), 5 + nc)


def test_nms_suppresses_overlaps_per_class():
    pred = _pred(
        [
            [50, 50, 20, 20, 0.9, 0.9, 0.0],  # class 0, score .81
            [52, 50, 20, 20, 0.8, 0.9, 0.0],  # overlaps the first (IoU .82): suppressed
            [52, 50, 20, 20, 0.8, 0.0, 0.9],  # same place, other class: kept
            [150, 150, 10, 10, 0.9, 0.5, 0.0],  # elsewhere: kept
            [10, 10, 4, 4, 0.0005, 1.0, 1.0],  # objectness under conf_thres: gone
        ]
    )
    (det,) = non_max_suppression(pred, conf_thres=0.001, iou_thres=0.65)
    assert det.shape == (3, 6)
    torch.testing.assert_close(det[0], torch.tensor([40.0, 40.0, 60.0, 60.0, 0.81, 0.0]))
    assert det[:, 4].tolist() == sorted(det[:, 4].tolist(), reverse=True)
    assert sorted(det[:, 5].tolist()) == [0.0, 0.0, 1.0]
    # a looser IoU threshold keeps the overlapping same-class box
    (loose,) = non_max_suppression(pred, iou_thres=0.9)
    assert len(loose) == 4


def test_nms_multi_label_and_limits():
    pred = _pred([[50, 50, 20, 20, 1.0, 0.6, 0.5]])
    (multi,) = non_max_suppression(pred, multi_label=True)
    assert sorted(multi[:, 5].tolist()) == [0.0, 1.0]
    (single,) = non_max_suppression(pred, multi_label=False)
    assert single[:, 5].tolist() == [0.0] and single[0, 4].item() == pytest.approx(0.6)
    many = _pred([[20 * i, 0, 10, 10, 0.9, 0.9, 0.0] for i in range(10)])
    assert len(non_max_suppression(many, max_det=4)[0]) == 4
    assert len(non_max_suppression(many, conf_thres=0.95)[0]) == 0


def test_nms_one_class_scores_objectness():
    (det,) = non_max_suppression(_pred([[50, 50, 20, 20, 0.7, 0.5]], nc=1))
    assert det[0, 4].item() == pytest.approx(0.7)


def test_nms_on_a_prefix_equals_full_nms():
    """The early-stopping NMS gives exactly full NMS's best max_det boxes."""
    g = torch.Generator().manual_seed(0)
    n = 5000
    xy, wh = torch.rand(n, 2, generator=g) * 60, torch.rand(n, 2, generator=g) * 50 + 5
    scores = torch.rand(n, generator=g)
    classes = torch.randint(0, 3, (n,), generator=g).float()
    det = torch.cat([xy, xy + wh, scores[:, None], classes[:, None]], 1)
    det = det[det[:, 4].argsort(descending=True)]
    for max_det in (50, 300, 3000):
        full = batched_nms(det[:, :4], det[:, 4], det[:, 5].long(), 0.65)[:max_det]
        assert torch.equal(nms_top(det, 0.65, max_det), det[full])


def test_nms_empty_batch():
    out = non_max_suppression(torch.zeros(2, 5, 7))
    assert [d.shape for d in out] == [(0, 6), (0, 6)]


# ----------------------------------------------------------------------------- COCOeval

GT_BOXES = {1: [(3, [10, 10, 40, 30]), (7, [60, 20, 25, 50])], 2: [(3, [5, 5, 80, 60])]}


@pytest.fixture
def gt_file(tmp_path):
    coco = {
        "images": [{"id": i, "file_name": f"{i}.png", "width": 100, "height": 100} for i in (1, 2)],
        "annotations": [],
        "categories": [{"id": 3, "name": "a"}, {"id": 7, "name": "b"}],
    }
    for image_id, boxes in GT_BOXES.items():
        for cat, bbox in boxes:
            coco["annotations"].append(
                {
                    "id": len(coco["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": cat,
                    "bbox": bbox,
                    "area": bbox[2] * bbox[3],
                    "iscrowd": 0,
                }
            )
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(coco))
    return path


def _results(shift=0.0):
    return [
        {"image_id": i, "category_id": c, "bbox": [x + shift * w, y, w, h], "score": 0.9}
        for i, boxes in GT_BOXES.items()
        for c, (x, y, w, h) in boxes
    ]


def test_cocoeval_perfect_predictions_score_one(gt_file):
    m = coco_metrics(gt_file, _results())
    assert m["AP"] == pytest.approx(1.0) and m["AP50"] == pytest.approx(1.0)
    assert m["AP75"] == pytest.approx(1.0)
    assert math.isnan(m["APs"])  # no small ground truth: COCOeval's -1 becomes NaN


def test_cocoeval_shifted_predictions_score_lower(gt_file):
    m = coco_metrics(gt_file, _results(shift=0.2))  # IoU 0.8/1.2 = 0.67
    assert m["AP50"] == pytest.approx(1.0) and m["AP75"] == pytest.approx(0.0)
    assert 0.2 < m["AP"] < 0.5
    assert coco_metrics(gt_file, _results(shift=0.6))["AP50"] == pytest.approx(0.0)


def test_cocoeval_empty_predictions_give_zeros(gt_file):
    m = coco_metrics(gt_file, [])
    assert m["AP"] == m["AP50"] == m["APl"] == 0.0


# ----------------------------------------------------------------------------- evaluate


class Oracle(nn.Module):
    """Returns, batch after batch, decoded predictions built from the val targets."""

    def __init__(self, loader, nc=2, perfect=True):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.outputs = []
        for images, targets, _, _ in loader:
            size = images.shape[-1]
            per_image = []
            for b in range(len(images)):
                t = targets[targets[:, 0] == b]
                rows = torch.zeros(8, 5 + nc)
                rows[: len(t), :4] = t[:, 2:] * size
                rows[: len(t), 4] = 0.95 if perfect else 0.0
                rows[torch.arange(len(t)), 5 + t[:, 1].long()] = 1.0
                per_image.append(rows)
            self.outputs.append(torch.stack(per_image))
        self.calls = 0

    def forward(self, x):
        assert not self.training
        out = self.outputs[self.calls % len(self.outputs)]
        self.calls += 1
        return out * self.scale, None  # (decoded, raw) like a model returning a tuple


@pytest.fixture
def val_loader(tmp_path):
    write_coco(tmp_path / "data")
    info = resolve_data(tmp_path / "data")
    return info, build_dataloader(info, "val", img_size=96, batch_size=3, augment=False)


def test_evaluate_maps_back_to_original_coordinates(val_loader, tmp_path):
    info, loader = val_loader
    model = Oracle(loader).train()
    out = tmp_path / "preds.json"
    m = evaluate(model, loader, info.val_ann, save_json=out, progress=False)
    assert model.training  # mode restored
    assert m["AP"] > 0.95 and m["AP50"] == pytest.approx(1.0)
    assert m["n_images"] == 4 and m["n_predictions"] == 6
    preds = json.loads(out.read_text())
    assert {p["category_id"] for p in preds} == {3, 7}
    gt = json.loads(info.val_ann.read_text())["annotations"]
    first = next(p for p in preds if p["image_id"] == 1 and p["category_id"] == 3)
    assert first["bbox"] == pytest.approx(gt[0]["bbox"], abs=0.01)


def test_evaluate_with_no_predictions_gives_zeros(val_loader):
    info, loader = val_loader
    m = evaluate(Oracle(loader, perfect=False), loader, info.val_ann, progress=False)
    assert m["AP"] == 0.0 and m["AP50"] == 0.0 and m["n_predictions"] == 0
    assert m["n_images"] == 4


def test_evaluate_refuses_a_class_count_mismatch(val_loader):
    info, loader = val_loader
    with pytest.raises(ValueError, match="predicts 3 classes but the dataset has 2"):
        evaluate(Oracle(loader, nc=3), loader, info.val_ann, progress=False)


def test_scale_to_original_undoes_the_letterbox_and_clips():
    # original 200 x 100 (h x w) letterboxed to 96: ratio 0.48, pad_w 24, pad_h 0
    det = torch.tensor([[24.0 + 4.8, 9.6, 24.0 + 48.0, 96.0, 0.9, 0.0], [0.0, 0.0, 96, 99, 0.5, 1]])
    boxes = scale_to_original(det, (200, 100, 0.48, 24.0, 0.0))
    assert boxes[0].tolist() == pytest.approx([10.0, 20.0, 100.0, 200.0])
    assert boxes[1].tolist() == pytest.approx([0.0, 0.0, 100.0, 200.0])  # clipped


def test_evaluate_uses_the_one_nms(val_loader, monkeypatch):
    """Evaluation's NMS is ``nn.postprocess.non_max_suppression``, the one the benchmark times
    (tests/analyze/test_latency.py checks the benchmark's side)."""
    calls = []
    real = postprocess.non_max_suppression

    def spy(pred, *args, **kwargs):
        calls.append(kwargs)
        return real(pred, *args, **kwargs)

    monkeypatch.setattr(postprocess, "non_max_suppression", spy)
    info, loader = val_loader
    m = evaluate(Oracle(loader), loader, info.val_ann, progress=False)
    assert len(calls) == len(loader) and m["n_predictions"] == 6
    assert calls[0] == {"conf_thres": 0.001, "iou_thres": 0.65, "max_det": 300}
    assert set(AP_KEYS) <= set(m)


@pytest.mark.parametrize("digits", [3, 5])
def test_vectorized_rounding_is_pythons(digits):
    """Random values and the hard cases: decimal halves that are not exact in binary (2.675
    is 2.67499999...), exact binary halves (0.0625 ties to even) and values whose scaled
    product rounds across a half."""
    rng = np.random.default_rng(0)
    step = 10.0**-digits
    halves = (np.arange(-2000, 2000) + 0.5) * step  # k + 1/2 at the last digit, in decimal
    values = np.concatenate(
        [
            rng.uniform(-1e4, 1e4, 20000),
            rng.uniform(0, 1, 20000),
            halves,
            np.nextafter(halves, np.inf),
            np.nextafter(halves, -np.inf),
            [2.675, 0.0625, 0.125, 1.0005, 0.285, 1.005, 0.0, -0.0, 640.0],
        ]
    )
    got = round_like_python(values, digits).tolist()
    expected = [round(v, digits) for v in values.tolist()]
    mismatches = [(v, g, e) for v, g, e in zip(values.tolist(), got, expected) if g != e]
    assert not mismatches, mismatches[:5]
    # 2D input rounds in place of each element too
    grid = values[:60].reshape(6, 10)
    assert round_like_python(grid, digits).tolist() == [
        [round(v, digits) for v in row] for row in grid.tolist()
    ]


def test_coco_results_are_the_per_box_formula():
    """The batched conversion writes what one box at a time with Python's round writes."""
    torch.manual_seed(0)
    xy = torch.rand(50, 2) * 100
    det = torch.cat(
        [xy, xy + torch.rand(50, 2) * 40, torch.rand(50, 1), torch.randint(0, 3, (50, 1))], 1
    )
    shapes = [(90, 120, 120 / 128, 0.0, 19.0), (128, 128, 1.0, 0.0, 0.0)]
    class_ids = [1, 5, 9]
    got = to_coco_json(
        [det, det[:0], det[:7]], [3, 4, 8], [shapes[0], shapes[1], shapes[1]], class_ids
    )
    expected = []
    for d, image_id, shape in ((det, 3, shapes[0]), (det[:7], 8, shapes[1])):
        boxes = scale_to_original(d, shape).tolist()
        for (x1, y1, x2, y2), score, cls in zip(boxes, d[:, 4].tolist(), d[:, 5].long().tolist()):
            bbox = [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)]
            expected.append(
                {
                    "image_id": image_id,
                    "category_id": class_ids[cls],
                    "bbox": bbox,
                    "score": round(score, 5),
                }
            )
    assert got == expected
    assert len(got) == 57
