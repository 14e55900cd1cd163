"""faster-coco-eval gives pycocotools' AP, key for key, on the project's own predictions."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from scaling_lab.data import build_dataloader, resolve_data
from scaling_lab.errors import UserError
from scaling_lab.eval_protocol import AP_KEYS, RECALL_KEYS
from scaling_lab.models import create_model, get_block_graph
from scaling_lab.train.coco_eval import coco_metrics, evaluate, load_gt


@pytest.fixture(scope="module")
def predictions(tmp_path_factory):
    """The synthetic set's val split, an untrained detector's COCO predictions through
    ``evaluate`` (hundreds of low-score boxes per image, as early in training), and jittered
    copies of the ground truth with random scores and some wrong classes (AP well above 0)."""
    info = resolve_data("synth:images=60,size=96,val_fraction=0.5")
    loader = build_dataloader(info, "val", img_size=96, batch_size=8, augment=False)
    torch.manual_seed(0)
    model = create_model(get_block_graph("yolov7-tiny", nc=info.nc, img_size=96))
    out = tmp_path_factory.mktemp("eval") / "pred.json"
    evaluate(model, loader, info.val_ann, save_json=out, progress=False, evaluator="pycocotools")
    results = json.loads(out.read_text())
    gt = json.loads(info.val_ann.read_text())
    categories = [c["id"] for c in gt["categories"]]
    rng = np.random.default_rng(0)
    for ann in gt["annotations"]:
        for _ in range(2):
            x, y, w, h = ann["bbox"]
            jitter = rng.normal(0, 0.1, 4) * [w, h, w, h]
            wrong = rng.random() < 0.2
            results.append(
                {
                    "image_id": ann["image_id"],
                    "category_id": int(rng.choice(categories)) if wrong else ann["category_id"],
                    "bbox": [round(float(v), 3) for v in np.array([x, y, w, h]) + jitter],
                    "score": round(float(rng.random()), 5),
                }
            )
    return info, results


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-12


def test_faster_coco_eval_equals_pycocotools(predictions):
    info, results = predictions
    reference = coco_metrics(info.val_ann, results, evaluator="pycocotools")
    fast = coco_metrics(info.val_ann, results, evaluator="faster")
    assert reference["AP50"] > 0.2  # not a trivial all-zero comparison
    assert len(results) > 1000
    for key in AP_KEYS + RECALL_KEYS:
        assert _same(fast[key], reference[key]), (key, fast[key], reference[key])


def test_equal_on_a_subset_of_images_and_a_loaded_ground_truth(predictions):
    info, results = predictions
    ids = sorted({r["image_id"] for r in results})[::2]
    reference = coco_metrics(
        load_gt(info.val_ann, "pycocotools"), results, ids, evaluator="pycocotools"
    )
    # a pycocotools COCO handed to the fast evaluator is rebuilt as its own
    fast = coco_metrics(load_gt(info.val_ann, "pycocotools"), results, ids, evaluator="faster")
    for key in AP_KEYS + RECALL_KEYS:
        assert _same(fast[key], reference[key]), (key, fast[key], reference[key])


def test_unknown_evaluator_is_a_user_error(predictions):
    info, results = predictions
    with pytest.raises(UserError, match="unknown COCO evaluator 'fast'"):
        coco_metrics(info.val_ann, results, evaluator="fast")
