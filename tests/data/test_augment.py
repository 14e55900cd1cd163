"""Letterbox, mosaic and random affine keep boxes on the drawn objects."""

from __future__ import annotations

import numpy as np
import pytest

from scaling_lab.data import augment as tf
from tests.helpers.data_files import bright_box, draw_image
from tests.helpers.squares_dataset import HYP, InMemory, check_sample, square_records


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


@pytest.mark.parametrize("mosaic", [1.0, 0.0])
def test_augmented_boxes_follow_the_objects(mosaic):
    size = 160
    ds = InMemory(square_records(), size, augment=True, hyp={**HYP, "mosaic": mosaic})
    n_boxes = 0
    for seed in range(12):
        image, labels, image_id, _ = ds[(seed % len(ds), seed)]
        img = image.permute(1, 2, 0).numpy()
        assert img.shape == (size, size, 3) and image_id == seed % len(ds) + 1
        n_boxes += check_sample(img, labels.numpy(), size)
    assert n_boxes >= 12


def test_mixup_keeps_both_label_sets():
    ds = InMemory(square_records(), 160, augment=True, hyp={**HYP, "mixup": 1.0})
    _, labels, _, _ = ds[(0, 3)]
    single = InMemory(square_records(), 160, augment=True, hyp=HYP)
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
