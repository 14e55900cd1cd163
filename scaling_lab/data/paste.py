"""The reference's mask-based augmentations: paste-in (objects cut from other images pasted
into free space) and copy-paste (objects mirrored left-right within their own image).

Both need object masks (``masks.py``); on a dataset without them they change nothing, as in
the reference (whose ``load_samples`` finds no segments and pastes nothing).

Paste-in (the reference's ``pastein``, probability ``paste_in`` per sample): up to 20 tries at
fractions 0.75 (2 tries), 0.5 (4), 0.25 (4), 0.125 (4), 0.0625 (6) of the image side, each
skipped with probability 0.2. A try draws a region of random size up to that fraction around a
random point; if it covers less than 30% of every box already there (intersection over the
box's area, pasted boxes included) and is over 20 px on both sides, a random object sample is
scaled to fit the region (aspect kept), and if the result is over 10 px on both sides and its
mask over 20 px, its masked pixels are painted at the region's corner and its box (the scaled
sample's extent) is added with its class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

PASTE_FRACTIONS = (0.75,) * 2 + (0.5,) * 4 + (0.25,) * 4 + (0.125,) * 4 + (0.0625,) * 6
PASTE_SKIP = 0.2  # chance a try is skipped
MAX_COVER = 0.3  # a region may cover at most this share of an existing box (and copy-paste too)
MIN_REGION = 20  # px: the region must be wider and taller than this
MIN_PASTE = 10  # px: the scaled sample must be wider and taller than this
MIN_MASK_PIXELS = 20  # the scaled sample's mask must cover more pixels than this
SAMPLE_SHARE = 0.5  # share of a donor image's masked objects cut out as samples
MIN_SAMPLES = 30  # donor images are read until this many samples are collected


@dataclass
class ObjectSample:
    """An object cut out of a donor image: its class, pixels and mask (same height, width)."""

    cls: int
    image: np.ndarray  # (h, w, 3) uint8
    mask: np.ndarray  # (h, w) bool


def cover(region: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection of ``region`` (4,) xyxy with each box, over the box's area."""
    if not len(boxes):
        return np.zeros(0)
    iw = (np.minimum(region[2], boxes[:, 2]) - np.maximum(region[0], boxes[:, 0])).clip(0)
    ih = (np.minimum(region[3], boxes[:, 3]) - np.maximum(region[1], boxes[:, 1])).clip(0)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) + 1e-16
    return iw * ih / area


def object_samples(
    img: np.ndarray,
    boxes: np.ndarray,
    classes: np.ndarray,
    masks: list[np.ndarray | None],
    rng: np.random.Generator,
) -> list[ObjectSample]:
    """Cut ``SAMPLE_SHARE`` of the masked objects (chosen at random) out of a donor image: the
    box (whole pixels, inside the image) of each, its pixels and its mask there."""
    h, w = img.shape[:2]
    masked = [i for i, m in enumerate(masks) if m is not None]
    if not masked:
        return []
    picks = rng.choice(masked, size=round(SAMPLE_SHARE * len(masked)), replace=False)
    samples = []
    for i in picks.tolist():
        x1, y1, x2, y2 = (int(v) for v in boxes[i])
        x1, x2 = min(max(x1, 0), w - 1), min(max(x2, 0), w - 1)
        y1, y2 = min(max(y1, 0), h - 1), min(max(y2, 0), h - 1)
        if x2 <= x1 or y2 <= y1:
            continue
        mask = masks[i][y1:y2, x1:x2]
        crop = np.where(mask[..., None], img[y1:y2, x1:x2], 0).astype(np.uint8)
        samples.append(ObjectSample(int(classes[i]), crop, mask.copy()))
    return samples


def _resize(array: np.ndarray, wh: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(array).resize(wh, Image.Resampling.BILINEAR))


def paste_in(
    img: np.ndarray,
    boxes: np.ndarray,
    classes: np.ndarray,
    samples: list[ObjectSample],
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paste samples into free regions of ``img`` (module docstring); returns the image (a
    copy when anything is pasted) and the boxes and classes with the pasted objects appended."""
    h, w = img.shape[:2]
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    classes = np.asarray(classes).reshape(-1)
    if not samples:
        return img, boxes, classes
    out = img.copy()
    for fraction in PASTE_FRACTIONS:
        if rng.random() < PASTE_SKIP:
            continue
        mh = int(rng.integers(1, max(int(h * fraction), 1) + 1))
        mw = int(rng.integers(1, max(int(w * fraction), 1) + 1))
        x1 = max(0, int(rng.integers(0, w + 1)) - mw // 2)
        y1 = max(0, int(rng.integers(0, h + 1)) - mh // 2)
        x2, y2 = min(w, x1 + mw), min(h, y1 + mh)
        region = np.array([x1, y1, x2, y2], dtype=np.float64)
        if (cover(region, boxes) >= MAX_COVER).any():
            continue
        if x2 <= x1 + MIN_REGION or y2 <= y1 + MIN_REGION:
            continue
        sample = samples[int(rng.integers(0, len(samples)))]
        sh, sw = sample.mask.shape
        scale = min((y2 - y1) / sh, (x2 - x1) / sw)
        pw, ph = int(sw * scale), int(sh * scale)
        if pw <= MIN_PASTE or ph <= MIN_PASTE:
            continue
        mask = _resize(sample.mask.astype(np.uint8) * 255, (pw, ph)) > 0
        if mask.sum() <= MIN_MASK_PIXELS:
            continue
        patch = out[y1 : y1 + ph, x1 : x1 + pw]
        patch[mask] = _resize(sample.image, (pw, ph))[mask]
        boxes = np.concatenate([boxes, [[x1, y1, x1 + pw, y1 + ph]]])
        classes = np.concatenate([classes, [sample.cls]]).astype(classes.dtype)
    return out, boxes, classes


def copy_paste(
    img: np.ndarray,
    boxes: np.ndarray,
    classes: np.ndarray,
    masks: list[np.ndarray | None],
    probability: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reference's ``copy_paste``: ``round(probability * n)`` of the n masked objects,
    chosen at random, are mirrored left-right; a mirror covering less than 30% of every box
    (the added ones included) is painted (its mask's pixels) and its box added."""
    masked = [i for i, m in enumerate(masks) if m is not None]
    k = round(probability * len(masked))
    if not k:
        return img, boxes, classes
    w = img.shape[1]
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    painted = np.zeros(img.shape[:2], dtype=bool)
    for i in rng.choice(masked, size=k, replace=False).tolist():
        x1, y1, x2, y2 = boxes[i]
        mirror = np.array([w - x2, y1, w - x1, y2])
        if (cover(mirror, boxes) < MAX_COVER).all():
            boxes = np.concatenate([boxes, mirror[None]])
            classes = np.concatenate([classes, [classes[i]]])
            painted |= masks[i]
    if not painted.any():
        return img, boxes, classes
    out = img.copy()
    flipped = painted[:, ::-1]
    out[flipped] = img[:, ::-1][flipped]
    return out, boxes, classes
