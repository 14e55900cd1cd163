"""Object masks: COCO ``segmentation`` entries (polygons or RLE) checked when a dataset is read
and decoded only when an augmentation needs the pixels (paste-in, copy-paste).

A record keeps each object's segmentation as read (a few numbers per object); decoding to a
full-image mask happens per sample, for the images an augmentation cuts objects from.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image

Segmentation = list[list[float]] | dict[str, Any]  # polygons (pixels) or RLE


def segmentation_problem(seg: Any) -> str | None:
    """Why ``seg`` is not a usable COCO segmentation (None when it is): a list of polygons,
    each at least 3 (x, y) points of finite numbers, or an RLE dict with ``size`` and
    ``counts``."""
    if isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and all(type(v) is int for v in size)):
            return "RLE 'size' must be [height, width]"
        if not isinstance(counts, str | list):
            return "RLE 'counts' must be a string or a list of run lengths"
        return None
    if not isinstance(seg, list) or not seg:
        return "must be a list of polygons or an RLE dict"
    for poly in seg:
        if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
            return "each polygon must be a list of at least 3 x, y pairs"
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in poly):
            return "polygon coordinates must be finite numbers"
    return None


def decode(seg: Segmentation, height: int, width: int) -> np.ndarray:
    """A boolean (height, width) mask of the object (all its polygons, or its RLE)."""
    from pycocotools import mask as mask_utils

    if isinstance(seg, dict):
        rle = seg
        if isinstance(seg["counts"], list):  # uncompressed RLE
            rle = mask_utils.frPyObjects(seg, height, width)
        elif isinstance(seg["counts"], str):
            rle = {"size": seg["size"], "counts": seg["counts"].encode("ascii")}
        mask = mask_utils.decode(rle)
    else:
        rles = mask_utils.frPyObjects([list(map(float, p)) for p in seg], height, width)
        mask = mask_utils.decode(mask_utils.merge(rles))
    if mask.shape != (height, width):  # an RLE of another size than the image's
        mask = np.asarray(Image.fromarray(mask * 255).resize((width, height), Image.NEAREST)) > 0
    return mask.astype(bool)


def resize_mask(mask: np.ndarray, shape: tuple[int, int], ratio: float) -> np.ndarray:
    """A mask resized as ``transforms.resize_long_side`` resizes its image: to ``shape``
    (h, w), sampling the source box of that size divided by ``ratio`` (nearest)."""
    h, w = shape
    if mask.shape == (h, w):
        return mask
    src_h, src_w = mask.shape
    box = (0.0, 0.0, min(src_w, w / ratio), min(src_h, h / ratio))
    img = Image.fromarray(mask.astype(np.uint8) * 255)
    return np.asarray(img.resize((w, h), Image.Resampling.NEAREST, box=box)) > 127


def polygon_from_normalized(values: list[float], width: int, height: int) -> list[list[float]]:
    """A YOLO polygon label's normalized ``x1 y1 x2 y2 ...`` as one pixel polygon."""
    pts = np.asarray(values, dtype=np.float64).reshape(-1, 2) * [width, height]
    return [pts.reshape(-1).tolist()]
