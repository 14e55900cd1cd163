"""The synthetic shapes set: valid COCO, every size range, deterministic, labels on objects."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from scaling_lab.cli import main
from scaling_lab.data import DataError, default_hyp, make_synth, synth_stats
from scaling_lab.data.synth import CLASSES, COLOURS, render_image


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_synth(tmp_path_factory.mktemp("synth") / "set", images=24, size=320, seed=0)


def test_writes_a_valid_coco_set_with_every_size_range(synth):
    stats = synth_stats(synth)
    for split, n_images in (("train", 19), ("val", 5)):
        gt = COCO(str(synth / "annotations" / f"instances_{split}.json"))
        assert len(gt.getImgIds()) == n_images == stats[split]["images"]
        assert sorted(gt.getCatIds()) == [1, 2, 3, 4, 5, 6]
        assert [c["name"] for c in gt.loadCats(gt.getCatIds())] == list(CLASSES)
        for ann in gt.dataset["annotations"]:
            img = gt.imgs[ann["image_id"]]
            x, y, w, h = ann["bbox"]
            assert ann["iscrowd"] == 0 and ann["area"] == w * h > 0
            assert x >= 0 and y >= 0 and x + w <= img["width"] and y + h <= img["height"]
            assert (synth / "images" / split / img["file_name"]).is_file()
    total = stats["all"]
    assert total["images"] == 24 and total["objects"] == sum(total["per_class"].values())
    assert all(n > 0 for n in total["per_size"].values()), total["per_size"]
    assert sum(total["per_size"].values()) == total["objects"]
    assert json.loads((synth / "synth.json").read_text())["stats"] == stats


def test_same_seed_same_bytes(synth, tmp_path):
    one = make_synth(tmp_path / "one", images=3, size=320, seed=0)
    two = make_synth(tmp_path / "two", images=3, size=320, seed=0)
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert len(files) == 6
    for rel in files:
        assert (one / rel).read_bytes() == (two / rel).read_bytes(), rel
    # image i depends on (seed, i, size) only, not on the set's length
    train = Path("images") / "train"
    for rel in (train / "000001.jpg", train / "000002.jpg"):
        assert (synth / rel).read_bytes() == (one / rel).read_bytes()
    _, objects = render_image(0, 320, seed=1)
    assert objects != render_image(0, 320, seed=0)[1]


def test_boxes_sit_on_objects_of_their_class(synth):
    """Inside each visible box, a good share of the pixels have the class's hue."""
    gt = json.loads((synth / "annotations" / "instances_train.json").read_text())
    files = {i["id"]: i["file_name"] for i in gt["images"]}
    hues = {
        i + 1: np.asarray(Image.new("RGB", (1, 1), COLOURS[n]).convert("HSV"))[0, 0, 0]
        for i, n in enumerate(CLASSES)
    }
    for ann in gt["annotations"][:60]:
        hsv = np.asarray(
            Image.open(synth / "images" / "train" / files[ann["image_id"]]).convert("HSV")
        ).astype(np.int64)
        x, y, w, h = (int(v) for v in ann["bbox"])
        crop = hsv[y : y + h, x : x + w]
        dh = np.abs(crop[..., 0] - hues[ann["category_id"]])
        near = (np.minimum(dh, 256 - dh) < 14) & (crop[..., 1] > 90)
        assert near.mean() > 0.15, ann


def test_bad_parameters():
    with pytest.raises(DataError, match="size must be >= 64"):
        make_synth("unused", size=32)
    with pytest.raises(DataError, match="val_fraction"):
        make_synth("unused", val_fraction=1.0)


def test_cli_data_synth(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["data", "synth", "--out", str(out), "--images", "6", "--size", "96"]) == 0
    text = capsys.readouterr().out
    assert "circle" in text and "large" in text and f"wrote {out}" in text
    assert (out / "annotations" / "instances_val.json").is_file()
    assert main(["data", "synth", "--out", str(out), "--size", "32"]) == 2
    assert "size must be >= 64" in capsys.readouterr().err


def test_default_hyp_per_size():
    tiny, p5, p6 = default_hyp("tiny"), default_hyp("p5"), default_hyp("P6")
    pick = ("lrf", "cls", "obj", "translate", "scale", "mixup")
    assert {k: tiny[k] for k in pick} == dict(zip(pick, (0.01, 0.5, 1.0, 0.1, 0.5, 0.05)))
    assert {k: p5[k] for k in pick} == dict(zip(pick, (0.1, 0.3, 0.7, 0.2, 0.9, 0.15)))
    assert p6 == {**p5, "lrf": 0.2}
    keys = [
        "lr0",
        "momentum",
        "weight_decay",
        "warmup_epochs",
        "warmup_momentum",
        "warmup_bias_lr",
        "box",
        "cls_pw",
        "obj_pw",
        "iou_t",
        "anchor_t",
        "fl_gamma",
        "hsv_h",
        "hsv_s",
        "hsv_v",
        "degrees",
        "shear",
        "perspective",
        "flipud",
        "fliplr",
        "mosaic",
        "loss_ota",
        "mosaic9",
    ]
    assert set(keys) <= set(tiny) and set(tiny) == set(p5)
    tiny["lr0"] = 1.0
    assert default_hyp("tiny")["lr0"] == 0.01  # a fresh dict each time
    with pytest.raises(DataError, match="unknown model size 'huge'"):
        default_hyp("huge")
