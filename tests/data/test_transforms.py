"""Letterbox, mosaic and random affine keep boxes on the drawn objects."""

from __future__ import annotations

import numpy as np
import pytest

from scaling_lab.data import transforms as tf
from scaling_lab.data.dataset import DetectionDataset
from scaling_lab.data.sources import ImageRecord
from tests.data.helpers import SQUARES, bright_box, draw_image


@pytest.mark.parametrize(
    ("w", "h", "box", "ratio", "pad", "expected"),
    [
        (200, 120, [40, 30, 90, 70], 1.6, (0.0, 64.0), [64, 112, 144, 176]),
        (120, 200, [25, 40, 95, 110], 1.6, (64.0, 0.0), [104, 64, 216, 176]),
        (640, 480, [100, 50, 300, 250], 0.5, (0.0, 40.0), [50, 65, 150, 165]),
    ],
)
def test_letterbox_maps_boxes_exactly_and_back(w, h, box, ratio, pad, expected):
    img = draw_image(w, h, [box], [1])
    out, r, p = tf.letterbox(img, 320)
    assert out.shape == (320, 320, 3)
    assert r == pytest.approx(ratio) and p == pad
    mapped = tf.boxes_to_letterbox(np.array([box], dtype=np.float64), r, p)
    np.testing.assert_allclose(mapped[0], expected, atol=1e-9)
    back = tf.boxes_from_letterbox(mapped, r, p, shape=(h, w))
    np.testing.assert_allclose(back[0], box, atol=1e-9)
    # the drawn rectangle sits where the mapped box says (bilinear edges: within a pixel)
    np.testing.assert_allclose(bright_box(out, mapped[0], cls=1), expected, atol=1.0)
    # padding is the reference grey
    assert (out[: int(p[1]), : int(p[0]) or 320] == tf.PAD_VALUE).all()


def test_boxes_from_letterbox_clips_to_the_image():
    back = tf.boxes_from_letterbox(
        np.array([[-10.0, 50.0, 330.0, 200.0]]), 2.0, (0, 40), (100, 160)
    )
    np.testing.assert_allclose(back[0], [0, 5, 160, 80])


def _records():
    return [
        ImageRecord(i + 1, None, w, h, np.array(b, np.float32), np.array(c))
        for i, (_, w, h, b, c) in enumerate(SQUARES)
    ]


class InMemory(DetectionDataset):
    """The SQUARES images without files."""

    def _load(self, index):
        rec = self.records[index]
        _, w, h, boxes, classes = SQUARES[index]
        return draw_image(w, h, boxes, classes), rec


HYP = {
    "mosaic": 1.0,
    "mixup": 0.0,
    "degrees": 10.0,
    "translate": 0.1,
    "scale": 0.5,
    "shear": 3.0,
    "perspective": 0.0,
    "flipud": 0.5,
    "fliplr": 0.5,
    "hsv_h": 0.0,
    "hsv_s": 0.0,
    "hsv_v": 0.0,
}


def _check_sample(img: np.ndarray, labels: np.ndarray, size: int) -> int:
    """Every label box is tight around a rectangle of its class's colour (rotated ones too: the
    box around the warped corners is the warped rectangle's extent). A rotated rectangle cut
    by the image border only needs to lie inside its box (the clipped corner box is looser)."""
    for cls, cx, cy, w, h in labels.tolist():
        box = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]) * size
        found = bright_box(img, box, margin=3, cls=int(cls))
        assert found is not None, f"no object under box {box}"
        if min(box) > 0.5 and max(box) < size - 0.5:
            np.testing.assert_allclose(found, box, atol=1.6)
        else:
            assert (np.array(found[:2]) >= box[:2] - 1.6).all(), (found, box)
            assert (np.array(found[2:]) <= box[2:] + 1.6).all(), (found, box)
    return len(labels)


@pytest.mark.parametrize("mosaic", [1.0, 0.0])
def test_augmented_boxes_follow_the_objects(mosaic):
    size = 160
    ds = InMemory(_records(), size, augment=True, hyp={**HYP, "mosaic": mosaic})
    n_boxes = 0
    for seed in range(12):
        image, labels, image_id, _ = ds[(seed % len(ds), seed)]
        img = image.permute(1, 2, 0).numpy()
        assert img.shape == (size, size, 3) and image_id == seed % len(ds) + 1
        n_boxes += _check_sample(img, labels.numpy(), size)
    assert n_boxes >= 12


def test_mixup_keeps_both_label_sets():
    ds = InMemory(_records(), 160, augment=True, hyp={**HYP, "mixup": 1.0})
    _, labels, _, _ = ds[(0, 3)]
    single = InMemory(_records(), 160, augment=True, hyp=HYP)
    _, labels1, _, _ = single[(0, 3)]
    assert len(labels) > len(labels1)


def test_hsv_changes_colours_only():
    rng = np.random.default_rng(0)
    img = (rng.random((32, 48, 3)) * 255).astype(np.uint8)
    out = tf.augment_hsv(img, rng, 0.015, 0.7, 0.4)
    assert out.shape == img.shape and out.dtype == np.uint8 and not np.array_equal(out, img)
    assert tf.augment_hsv(img, rng, 0, 0, 0) is img


def test_flips_are_involutions():
    img = draw_image(50, 30, [[5, 6, 20, 25]])
    boxes = np.array([[5.0, 6.0, 20.0, 25.0]])
    f_img, f_boxes = tf.flip_lr(img, boxes)
    np.testing.assert_allclose(f_boxes[0], [30, 6, 45, 25])
    assert bright_box(f_img, f_boxes[0]) == [30, 6, 45, 25]
    u_img, u_boxes = tf.flip_ud(img, boxes)
    np.testing.assert_allclose(u_boxes[0], [5, 5, 20, 24])
    assert bright_box(u_img, u_boxes[0]) == [5, 5, 20, 24]


def test_box_candidates_drop_slivers_and_keep_whole_boxes():
    before = np.array([[0, 0, 50, 50], [0, 0, 50, 50], [0, 0, 50, 50]], dtype=np.float64)
    after = np.array([[0, 0, 50, 50], [0, 0, 50, 2], [0, 0, 10, 10]], dtype=np.float64)
    keep = tf.box_candidates(before, after, gain=1.0)
    assert keep.tolist() == [True, False, False]
