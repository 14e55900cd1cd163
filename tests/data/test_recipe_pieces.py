"""The reference's data recipe piece by piece: 9-image mosaic layout, paste-in, copy-paste, the
affine scale range, sampling frequencies over many draws, and the training order per recipe."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from scaling_lab.data import augment as tf
from scaling_lab.data import paste
from scaling_lab.data.dataset import DetectionDataset, EpochBatchSampler
from scaling_lab.train.recipe import shuffles_training_order
from tests.helpers.data_files import COLOURS, draw_image
from tests.helpers.squares_dataset import (
    HYP,
    InMemory,
    check_sample,
    masked_square_records,
    square_records,
)

# ----------------------------------------------------------------------------- 9-image mosaic


def _solid(h: int, w: int, value: int) -> np.ndarray:
    return np.full((h, w, 3), value, dtype=np.uint8)


def test_mosaic9_lays_tiles_as_the_reference_and_boxes_follow_them():
    """Nine solid tiles of different sizes: each tile's box (its whole extent) maps to its
    offset, the offsets follow the reference's clockwise layout, and every visible pixel of
    the last-drawn tile carries its value."""
    s = 100
    sizes = [(100, 80), (60, 70), (90, 50), (70, 100), (50, 60), (80, 90), (100, 40), (40, 30)]
    sizes = [(80, 90), *sizes]  # tile 0 (h0, w0) = (80, 90)
    images = [_solid(h, w, 10 + 20 * i) for i, (h, w) in enumerate(sizes)]
    boxes = [np.array([[0.0, 0.0, w, h]]) for h, w in sizes]
    rng = np.random.default_rng(3)
    canvas, out, owners, offsets = tf.mosaic9(images, boxes, s, rng)
    assert canvas.shape == (2 * s, 2 * s, 3) and owners.tolist() == list(range(9))
    # the window's corner: the generator's first two draws, as the function makes them
    xc, yc = (int(v) for v in np.random.default_rng(3).uniform(0, s, size=2))
    hs, ws = [h for h, _ in sizes], [w for _, w in sizes]
    h0, w0 = hs[0], ws[0]
    # the reference's table: each tile aligned to the centre tile or to the previous tile
    expected = [
        (s, s),  # centre
        (s, s - hs[1]),  # top
        (s + ws[1], s - hs[2]),  # top right: right of the top tile
        (s + w0, s),  # right
        (s + w0, s + hs[3]),  # bottom right: below the right tile
        (s + w0 - ws[5], s + h0),  # bottom
        (s + w0 - ws[5] - ws[6], s + h0),  # bottom left: left of the bottom tile
        (s - ws[7], s + h0 - hs[7]),  # left
        (s - ws[8], s + h0 - hs[7] - hs[8]),  # top left: above the left tile
    ]
    assert offsets == [(x - xc, y - yc) for x, y in expected]
    for (h, w), (x0, y0), box in zip(sizes, offsets, out):
        want = np.clip([x0, y0, x0 + w, y0 + h], 0, 2 * s)
        np.testing.assert_allclose(box, want)
    # the tile drawn last: nothing covers it. Its window on the canvas comes from the
    # reference's table (not from the returned offsets), and must not be empty: a tile pushed
    # off the canvas would leave nothing to check
    (x, y), (h, w) = expected[8], sizes[8]
    left, top = max(x - xc, 0), max(y - yc, 0)
    right, bottom = min(x - xc + w, 2 * s), min(y - yc + h, 2 * s)
    assert right > left and bottom > top, "the last tile is off the canvas: nothing to check"
    visible = canvas[top:bottom, left:right]
    assert (visible == 10 + 20 * 8).all()


@pytest.mark.parametrize("share", [1.0])
def test_nine_image_mosaic_samples_keep_boxes_on_the_objects(share):
    ds = InMemory(square_records(), 160, augment=True, hyp={**HYP, "mosaic9": share})
    n_boxes = 0
    for seed in range(12):
        image, labels, _, _ = ds[(seed % len(ds), seed)]
        n_boxes += check_sample(image.permute(1, 2, 0).numpy(), labels.numpy(), 160)
    assert n_boxes >= 12


# ----------------------------------------------------------------------------- frequencies


def test_mosaic_shares_and_paste_in_rate_over_many_draws(monkeypatch):
    """Over 400 samples: mosaics with probability ``mosaic``, 9-image ones ``mosaic9`` of
    those (mixup partners included), paste-in with probability ``paste_in`` (binomial tests
    at the 0.1% level: a wrong rate fails, chance alone almost never does)."""
    canvases: list[int] = []  # tiles of each sample's own mosaic (donor mosaics left out)
    real_canvas = DetectionDataset._canvas

    def spy_canvas(self, index, n, rng, masks):
        if not masks:  # paste-in donors are the only mosaics built with masks here
            canvases.append(n)
        return real_canvas(self, index, n, rng, masks)

    monkeypatch.setattr(DetectionDataset, "_canvas", spy_canvas)
    pasted = [0]
    real_paste = DetectionDataset._paste_in

    def spy_paste(self, *args):
        pasted[0] += 1
        return real_paste(self, *args)

    monkeypatch.setattr(DetectionDataset, "_paste_in", spy_paste)
    hyp = {**HYP, "mosaic": 0.7, "mosaic9": 0.2, "mixup": 0.0, "paste_in": 0.3, "degrees": 0.0}
    ds = InMemory(masked_square_records(), 64, augment=True, hyp=hyp)
    n = 400
    for seed in range(n):
        ds[(seed % len(ds), seed)]
    mosaics = len(canvases)
    assert stats.binomtest(canvases.count(9), mosaics, 0.2).pvalue > 1e-3
    assert stats.binomtest(mosaics, n, 0.7).pvalue > 1e-3
    assert stats.binomtest(pasted[0], n, 0.3).pvalue > 1e-3


def test_affine_scale_gain_is_uniform_on_the_reference_range():
    """U(1 - s, 1.1 + s): a Kolmogorov-Smirnov test against that law, and the old symmetric
    range U(1 - s, 1 + s) rejected."""
    rng = np.random.default_rng(0)
    gains = [tf.affine_matrix((64, 64), (64, 64), rng, scale=0.5)[1] for _ in range(4000)]
    assert min(gains) >= 0.5 and max(gains) <= 1.6
    assert stats.kstest(gains, stats.uniform(0.5, 1.1).cdf).pvalue > 1e-3
    assert stats.kstest(gains, stats.uniform(0.5, 1.0).cdf).pvalue < 1e-6
    zero = [tf.affine_matrix((64, 64), (64, 64), rng, scale=0.0)[1] for _ in range(200)]
    assert min(zero) >= 1.0 and max(zero) <= 1.1 and max(zero) > 1.05  # the reference's bias


# ----------------------------------------------------------------------------- paste-in


def _disc_sample(cls: int, size: int, colour: int) -> paste.ObjectSample:
    yy, xx = np.mgrid[0:size, 0:size]
    mask = (xx - size / 2 + 0.5) ** 2 + (yy - size / 2 + 0.5) ** 2 <= (size / 2) ** 2
    image = np.broadcast_to(np.where(mask, colour, 0)[..., None], (size, size, 3)).astype(np.uint8)
    return paste.ObjectSample(cls, image, mask)


def test_paste_in_boxes_follow_the_pasted_pixels_and_respect_existing_boxes():
    h, w = 256, 256
    base = np.zeros((h, w, 3), dtype=np.uint8)
    boxes = np.array([[20.0, 20.0, 120.0, 100.0]])
    classes = np.array([0])
    base[20:100, 20:120] = 50
    samples = [_disc_sample(1, 40, 200), _disc_sample(2, 60, 230)]
    colour_of = {1: 200, 2: 230}
    total_added = 0
    for seed in range(30):
        img, out_boxes, out_classes = paste.paste_in(
            base, boxes, classes, samples, np.random.default_rng(seed)
        )
        assert np.array_equal(out_boxes[:1], boxes) and out_classes[0] == 0
        added = out_boxes[1:]
        total_added += len(added)
        assert len(out_classes) == len(out_boxes)
        for i, (box, cls) in enumerate(zip(added, out_classes[1:])):
            x1, y1, x2, y2 = box.astype(int)
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
            assert x2 - x1 > paste.MIN_PASTE and y2 - y1 > paste.MIN_PASTE
            # pasted pixels of the sample's colour lie inside its box (later pastes may cover
            # part of it, never add the colour outside some box)
            inside = img[y1:y2, x1:x2, 0] == colour_of[int(cls)]
            assert inside.any()
            # when it was placed, it covered < 30% of every box placed before it
            assert (paste.cover(box, out_boxes[: 1 + i]) < paste.MAX_COVER).all()
        for value in colour_of.values():
            ys, xs = np.nonzero(img[..., 0] == value)
            for x, y in zip(xs, ys):
                assert any(b[0] <= x < b[2] and b[1] <= y < b[3] for b in added)
    assert total_added >= 30  # about 20 * 0.8 tries per call, many fit


def test_paste_in_without_samples_changes_nothing():
    img = np.zeros((64, 64, 3), dtype=np.uint8)
    out, boxes, classes = paste.paste_in(
        img, np.zeros((0, 4)), np.zeros(0), [], np.random.default_rng(0)
    )
    assert out is img and len(boxes) == 0 and len(classes) == 0


def test_object_samples_cut_masked_pixels_inside_the_box():
    boxes = [[10, 20, 50, 60], [70, 10, 90, 40]]
    img = draw_image(120, 100, boxes, [1, 0])
    masks = []
    for x1, y1, x2, y2 in boxes:
        mask = np.zeros((100, 120), dtype=bool)
        mask[y1:y2, x1:x2] = True
        masks.append(mask)
    arr = np.array(boxes, dtype=np.float64)
    rng = np.random.default_rng(0)
    one = paste.object_samples(img, arr, np.array([1, 0]), [masks[0], None], rng)
    assert len(one) == 0  # round(0.5 * 1 masked object) = 0, as the reference rounds
    picked = set()
    for seed in range(20):
        (sample,) = paste.object_samples(
            img, arr, np.array([1, 0]), masks, np.random.default_rng(seed)
        )
        x1, y1, x2, y2 = boxes[1 - sample.cls]
        assert sample.mask.shape == (y2 - y1, x2 - x1) and sample.mask.all()
        colour = (255, 255, 0) if sample.cls == 1 else (255, 255, 255)
        assert (sample.image == colour).all()
        picked.add(sample.cls)
    assert picked == {0, 1}


def test_copy_paste_mirrors_the_object_pixels_and_box():
    img = np.zeros((80, 200, 3), dtype=np.uint8)
    img[10:40, 20:50] = (10, 200, 30)
    mask = np.zeros((80, 200), dtype=bool)
    mask[10:40, 20:50] = True
    boxes = np.array([[20.0, 10.0, 50.0, 40.0]])
    out, out_boxes, classes = paste.copy_paste(
        img, boxes, np.array([4]), [mask], 1.0, np.random.default_rng(0)
    )
    np.testing.assert_allclose(out_boxes[1], [150, 10, 180, 40])
    assert classes.tolist() == [4, 4]
    assert (out[10:40, 150:180] == (10, 200, 30)).all() and (
        out[10:40, 20:50] == img[10:40, 20:50]
    ).all()
    assert out.sum() == 2 * img.sum()  # nothing else painted


def test_copy_paste_refuses_a_mirror_over_an_object():
    img = np.zeros((80, 100, 3), dtype=np.uint8)
    mask = np.zeros((80, 100), dtype=bool)
    mask[10:40, 40:55] = True  # centred: its mirror overlaps it
    out, boxes, _ = paste.copy_paste(
        img,
        np.array([[40.0, 10.0, 55.0, 40.0]]),
        np.array([0]),
        [mask],
        1.0,
        np.random.default_rng(0),
    )
    assert len(boxes) == 1 and out is img


# ----------------------------------------------------------------------------- masks in a dataset


def _colour_mask(img: np.ndarray, cls: int) -> np.ndarray:
    return np.abs(img.astype(int) - COLOURS[cls]).max(-1) < 40


def test_paste_in_on_a_dataset_adds_objects_whose_boxes_follow_the_pixels():
    """Every pixel of a class's colour lies in a box of that class (2 px margin: bilinear
    edges), and every box is mostly its class's colour (pasted ones may be partly covered by
    later pastes, each covering under 30% of it)."""
    size = 160
    hyp = {**HYP, "degrees": 0.0, "shear": 0.0, "paste_in": 1.0, "mosaic9": 0.0}
    ds = InMemory(masked_square_records(), size, augment=True, hyp=hyp)
    plain = InMemory(square_records(), size, augment=True, hyp=hyp)  # no masks: no paste-in
    more = 0
    for seed in range(8):
        image, labels, _, _ = ds[(seed % len(ds), seed)]
        img = image.permute(1, 2, 0).numpy()
        boxes = labels[:, 1:].numpy() * size
        xyxy = np.concatenate([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], 1)
        for cls in (0, 1):
            mine = xyxy[labels[:, 0].numpy() == cls]
            ys, xs = np.nonzero(_colour_mask(img, cls))
            inside = np.zeros(len(xs), dtype=bool)
            for x1, y1, x2, y2 in mine:
                inside |= (xs >= x1 - 2) & (xs < x2 + 2) & (ys >= y1 - 2) & (ys < y2 + 2)
            assert inside.all(), f"class {cls} pixels outside its boxes (seed {seed})"
            for x1, y1, x2, y2 in mine.round().astype(int):
                patch = _colour_mask(img[y1:y2, x1:x2], cls)
                assert patch.mean() > 0.3, f"box {x1, y1, x2, y2} of class {cls} is not on it"
        more += len(labels) - len(plain[(seed % len(ds), seed)][1])
    assert more > 0


# ----------------------------------------------------------------------------- data order


def test_reference_recipe_keeps_the_file_order_ours_reshuffles():
    assert not shuffles_training_order("reference", distributed=False)
    assert shuffles_training_order("reference", distributed=True)  # its DDP sampler shuffles
    assert shuffles_training_order("ours", distributed=False)
    fixed = EpochBatchSampler(
        10, 4, shuffle=shuffles_training_order("reference", distributed=False)
    )
    orders = [[i for i, _ in fixed.epoch_items(e)] for e in range(3)]
    assert orders == [list(range(10))] * 3
    seeds = [[s for _, s in fixed.epoch_items(e)] for e in range(2)]
    assert seeds[0] != seeds[1]  # each epoch still draws new augmentations
    moved = EpochBatchSampler(10, 4, shuffle=shuffles_training_order("ours", distributed=False))
    orders = [[i for i, _ in moved.epoch_items(e)] for e in range(3)]
    assert len({tuple(o) for o in orders}) == 3 and all(
        sorted(o) == list(range(10)) for o in orders
    )
    with pytest.raises(ValueError, match="recipe must be one of"):
        shuffles_training_order("mine", distributed=False)
