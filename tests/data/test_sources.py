"""resolve_data on COCO / YOLO / synth, and every kind of bad data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools.coco import COCO

from scaling_lab.data import DataError, DataWarning, build_dataloader, resolve_data
from scaling_lab.data import synth as synth_mod
from scaling_lab.data.sources import parse_coco
from tests.helpers.data_files import SQUARES, write_coco, write_yolo


def _ann(aid, image_id, category_id, bbox):
    area = bbox[2] * bbox[3] if len(bbox) == 4 else 0
    return {
        "id": aid,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": bbox,
        "area": area,
        "iscrowd": 0,
    }


# ----------------------------------------------------------------------------- YOLO


def test_yolo_layout_writes_a_coco_val_file(tmp_path):
    root = write_yolo(tmp_path / "yolo")
    info = resolve_data(root, cache_dir=tmp_path / "cache")
    assert info.format == "yolo" and info.nc == 2 and info.names == ["cat", "dog"]
    assert info.train_images is None and info.train_ann is None
    assert info.val_ann.is_file() and str(info.val_ann).startswith(str(tmp_path / "cache"))
    gt = COCO(str(info.val_ann))
    assert len(gt.getImgIds()) == 4 and len(gt.getAnnIds()) == 6
    # ids and boxes agree between the json and the loader's records
    by_name = {r.path.name: r for r in info.records("val")}
    for img in gt.dataset["images"]:
        rec = by_name[img["file_name"]]
        assert rec.id == img["id"]
        anns = gt.loadAnns(gt.getAnnIds(imgIds=[img["id"]]))
        want = {name: boxes for name, _, _, boxes, _ in SQUARES}[img["file_name"]]
        want_xywh = [[x1, y1, x2 - x1, y2 - y1] for x1, y1, x2, y2 in want]
        np.testing.assert_allclose([a["bbox"] for a in anns], want_xywh, atol=1e-3)
    batch = next(iter(build_dataloader(info, "val", img_size=64, batch_size=4, augment=False)))
    assert batch[2] == [1, 2, 3, 4]
    # a data.yaml path resolves to its folder
    assert resolve_data(root / "data.yaml", cache_dir=tmp_path / "cache").root == root


def test_yolo_malformed_line_names_file_and_line(tmp_path):
    root = write_yolo(tmp_path / "yolo")
    (root / "labels" / "val" / "b.txt").write_text("0 0.5 0.5 0.2 0.2\n1 0.5 oops 0.1 0.1\n")
    with pytest.raises(DataError, match=r"b\.txt:2: .*5 numbers"):
        resolve_data(root, cache_dir=tmp_path)


def test_yolo_class_out_of_range(tmp_path):
    root = write_yolo(tmp_path / "yolo")
    (root / "labels" / "val" / "a.txt").write_text("2 0.5 0.5 0.2 0.2\n")
    with pytest.raises(DataError, match=r"a\.txt:1: class 2 is not an integer in 0\.\.1"):
        resolve_data(root, cache_dir=tmp_path)


def test_yolo_box_outside_is_clipped_with_a_warning(tmp_path):
    root = write_yolo(tmp_path / "yolo")
    (root / "labels" / "val" / "a.txt").write_text("0 0.95 0.5 0.2 0.2\n1 1.5 0.5 0.2 0.2\n")
    with pytest.warns(DataWarning) as record:
        info = resolve_data(root, cache_dir=tmp_path)
    messages = [str(w.message) for w in record]
    assert any("a.txt: 1 box(es) reaching outside the image clipped" in m for m in messages)
    assert any("a.txt: 1 degenerate box(es) dropped" in m for m in messages)
    rec = next(r for r in info.records("val") if r.path.name == "a.png")
    np.testing.assert_allclose(rec.boxes, [[170, 48, 200, 72]], atol=1e-3)


def test_yolo_needs_names(tmp_path):
    root = write_yolo(tmp_path / "yolo")
    (root / "data.yaml").unlink()
    with pytest.raises(DataError, match=r"data\.yaml"):
        resolve_data(root)


# ----------------------------------------------------------------------------- COCO


def test_missing_image_file(tmp_path):
    write_coco(tmp_path)
    (tmp_path / "images" / "val" / "b.png").unlink()
    with pytest.raises(DataError, match=r"instances_val\.json: 1 image file\(s\).*b\.png"):
        resolve_data(tmp_path)


def test_box_outside_the_image_is_clipped_and_degenerate_dropped(tmp_path):
    anns = [
        _ann(1, 1, 3, [180, 30, 50, 40]),  # reaches past x = 200: clipped
        _ann(2, 1, 7, [-10, -5, 30, 20]),  # past the top-left corner: clipped
        _ann(3, 1, 3, [250, 10, 20, 20]),  # entirely outside: dropped
        _ann(4, 2, 7, [10, 10, 0, 15]),  # zero width: dropped
        _ann(5, 2, 7, [10, 10, 20, 30]),
    ]
    ann = write_coco(tmp_path, annotations=anns)
    with pytest.warns(DataWarning) as record:
        records, _ = parse_coco(ann, tmp_path / "images" / "val")
    messages = " | ".join(str(w.message) for w in record)
    assert "instances_val.json: 2 box(es) reaching outside the image clipped" in messages
    assert "2 degenerate box(es) dropped" in messages and "first: annotation 3" in messages
    np.testing.assert_allclose(records[0].boxes, [[180, 30, 200, 70], [0, 0, 20, 15]])
    assert records[0].classes.tolist() == [0, 1]
    np.testing.assert_allclose(records[1].boxes, [[10, 10, 30, 40]])


def test_unknown_category_id(tmp_path):
    write_coco(tmp_path, annotations=[_ann(1, 1, 3, [1, 1, 5, 5]), _ann(9, 2, 99, [1, 1, 5, 5])])
    with pytest.raises(
        DataError,
        match=r"instances_val\.json: annotation 9 \(image 2\): "
        r"unknown category_id 99",
    ):
        resolve_data(tmp_path)


def test_unknown_image_id(tmp_path):
    write_coco(tmp_path, annotations=[_ann(1, 42, 3, [1, 1, 5, 5])])
    with pytest.raises(DataError, match="annotation 1: unknown image_id 42"):
        resolve_data(tmp_path)


def test_malformed_bbox(tmp_path):
    write_coco(tmp_path, annotations=[_ann(1, 1, 3, [1, 1, 5])])
    with pytest.raises(DataError, match="annotation 1: 'bbox' must be 4 finite numbers"):
        resolve_data(tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "annotation file is empty"),
        ("  \n", "annotation file is empty"),
        ('{"images": [', r"instances_val\.json:1: not valid JSON"),
        ("[]", "expected a JSON object"),
        ('{"images": [], "categories": []}', "missing or non-list 'annotations'"),
        ('{"images": [], "annotations": [], "categories": []}', "no categories"),
    ],
)
def test_empty_or_malformed_annotation_file(tmp_path, text, message):
    write_coco(tmp_path)
    (tmp_path / "annotations" / "instances_val.json").write_text(text)
    with pytest.raises(DataError, match=message):
        resolve_data(tmp_path)


def test_train_categories_must_match_val(tmp_path):
    write_coco(tmp_path, split="val")
    write_coco(tmp_path, split="train", category_ids=(3, 8))
    info = resolve_data(tmp_path)
    with pytest.raises(DataError, match=r"instances_train\.json: categories differ"):
        info.records("train")


def test_crowd_annotations_are_skipped(tmp_path):
    crowd = {**_ann(2, 1, 3, [1, 1, 5, 5]), "iscrowd": 1}
    write_coco(tmp_path, annotations=[_ann(1, 1, 3, [10, 10, 20, 20]), crowd])
    assert len(resolve_data(tmp_path).records("val")[0].boxes) == 1


def test_unreadable_image_names_the_file_when_loading(tmp_path):
    write_coco(tmp_path)
    image = tmp_path / "images" / "val" / "c.png"
    whole = image.read_bytes()
    image.write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"c\.png.*cannot read image"):  # when the split is read
        build_dataloader(resolve_data(tmp_path), "val", img_size=64, batch_size=1, augment=False)
    image.write_bytes(whole)
    info = resolve_data(tmp_path)
    for workers in (0, 1):
        loader = build_dataloader(
            info, "val", img_size=64, batch_size=1, augment=False, workers=workers
        )
        image.write_bytes(b"not a png")  # spoilt after the split was read: found at load time
        with pytest.raises(DataError, match=r"c\.png.*cannot read image"):
            list(loader)
        image.write_bytes(whole)


def test_image_size_mismatch_names_the_file(tmp_path):
    ann = write_coco(tmp_path)
    coco = json.loads(ann.read_text())
    coco["images"][0]["width"] = 300
    ann.write_text(json.dumps(coco))
    with pytest.raises(DataError, match=r"a\.png: image is 200x120 but the annotations say 300"):
        info = resolve_data(tmp_path)  # found when the split is read, before any batch
        info_loader = build_dataloader(info, "val", img_size=64, batch_size=2, augment=False)
        next(iter(info_loader))


def test_not_a_dataset(tmp_path):
    with pytest.raises(DataError, match="no such dataset"):
        resolve_data(tmp_path / "nowhere")
    with pytest.raises(DataError, match="not a dataset"):
        resolve_data(tmp_path)
    (tmp_path / "annotations").mkdir()
    with pytest.raises(DataError, match=r"instances_val\.json"):
        resolve_data(tmp_path)


# ----------------------------------------------------------------------------- synth


def test_synth_is_made_once_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALING_LAB_CACHE", str(tmp_path / "env-cache"))
    info = resolve_data("synth:images=4,size=96,seed=2")
    assert info.root.parent == tmp_path / "env-cache"
    assert info.root.name == "synth-v2-n4-s96-seed2-val0.2"
    assert info.nc == 6 and info.format == "coco" and info.category_ids == [1, 2, 3, 4, 5, 6]

    def fail(*args, **kwargs):
        raise AssertionError("regenerated")

    monkeypatch.setattr(synth_mod, "make_synth", fail)
    assert resolve_data("synth:images=4,size=96,seed=2").root == info.root
    # an explicit cache_dir wins over the environment
    with pytest.raises(AssertionError, match="regenerated"):
        resolve_data("synth:images=4,size=96,seed=2", cache_dir=tmp_path / "other")


def test_bad_synth_parameters():
    with pytest.raises(DataError, match="bad synth parameter 'colour=red'"):
        resolve_data("synth:colour=red")
    with pytest.raises(DataError, match="bad value for 'images'"):
        resolve_data("synth:images=many")


# --------------------------------------------------------------------------- object masks


def _with_segmentations(root, segs):
    """SQUARES as COCO val with the given segmentation per annotation (None: key left out)."""
    path = write_coco(root)
    coco = json.loads(path.read_text())
    for ann, seg in zip(coco["annotations"], segs):
        if seg is not None:
            ann["segmentation"] = seg
    path.write_text(json.dumps(coco))
    return path


def test_coco_polygons_and_rle_decode_to_the_objects_masks(tmp_path):
    from pycocotools import mask as mask_utils

    from scaling_lab.data.masks import decode

    square = np.zeros((120, 200), dtype=np.uint8, order="F")
    square[50:95, 130:170] = 1  # SQUARES a.png's second box
    rle = mask_utils.encode(np.asfortranarray(square))
    rle = {"size": [120, 200], "counts": rle["counts"].decode()}
    polygon = [[40, 30, 90, 30, 90, 70, 40, 70]]  # its first box
    path = _with_segmentations(tmp_path, [polygon, rle, None, None, None, None])
    records, _ = parse_coco(path, tmp_path / "images" / "val")
    first = records[0]
    assert first.segments is not None and len(first.segments) == len(first.boxes) == 2
    m0 = decode(first.segments[0], first.height, first.width)
    ys, xs = np.nonzero(m0)
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (40, 30, 90, 70)
    assert np.array_equal(decode(first.segments[1], 120, 200), square.astype(bool))
    assert records[1].segments is None  # no masks in that image


@pytest.mark.parametrize(
    ("seg", "message"),
    [
        ([[1, 2, 3, 4]], "at least 3 x, y pairs"),
        ([[1, 2, 3, 4, 5]], "at least 3 x, y pairs"),
        ({"counts": "abc"}, r"RLE 'size' must be \[height, width\]"),
        ("polygon", "a list of polygons or an RLE dict"),
        ([[1, 2, 3, 4, 5, "x"]], "finite numbers"),
    ],
)
def test_malformed_segmentation_names_the_annotation(tmp_path, seg, message):
    path = _with_segmentations(tmp_path, [None, seg])
    with pytest.raises(
        DataError, match=rf"instances_val\.json: annotation 2: 'segmentation' .*{message}"
    ):
        parse_coco(path, tmp_path / "images" / "val")


def test_yolo_polygon_lines_give_the_extent_as_box_and_keep_the_polygon(tmp_path):
    root = write_yolo(tmp_path / "yolo")
    # a.png is 200 x 120: a triangle (normalized) and a plain box line
    (root / "labels" / "val" / "a.txt").write_text(
        "1 0.2 0.25 0.45 0.25 0.3 0.75\n0 0.5 0.5 0.2 0.2\n"
    )
    info = resolve_data(root, cache_dir=tmp_path)
    rec = next(r for r in info.records("val") if r.path.name == "a.png")
    np.testing.assert_allclose(rec.boxes[0], [40, 30, 90, 90], atol=1e-4)
    assert rec.classes.tolist() == [1, 0]
    np.testing.assert_allclose(rec.segments[0][0], [40, 30, 90, 30, 60, 90], atol=1e-6)
    assert rec.segments[1] is None
    (root / "labels" / "val" / "a.txt").write_text("1 0.2 0.25 0.45 0.25 0.3\n")
    with pytest.raises(DataError, match=r"a\.txt:1: expected .*or a polygon"):
        resolve_data(root, cache_dir=tmp_path / "other")
