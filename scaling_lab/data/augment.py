"""Image and box transforms: letterbox, 4- and 9-image mosaics, random affine/perspective, HSV,
flips, mixup.

Images are ``uint8`` arrays (H, W, 3), RGB. Boxes are ``float32`` arrays (n, 4) of x1, y1, x2, y2
in continuous pixel coordinates (pixel ``i`` covers ``[i, i + 1)``), so a box drawn over columns
``a .. b-1`` is ``[a, b)``. Pillow's resize and transform sample at pixel centres in the same
convention, so a box mapped with the same matrix as its image stays on the drawn object.

Every random choice comes from the ``numpy.random.Generator`` passed in: a sample is a pure
function of the image, its boxes and the generator's seed.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

PAD_VALUE = 114  # grey of the padding and the affine border (the reference's value)
# The reference draws the affine scale gain from U(1 - scale, 1.1 + scale): a slight bias to
# zooming in, present even with ``scale`` 0.
SCALE_UP = 0.1


def resize_long_side(img: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """Resize so the long side is ``size`` (up or down); returns the image and the ratio.

    The output is ``floor(w * r) x floor(h * r)`` and Pillow scales a source box of exactly
    that size divided by ``r``, so the scale is ``r`` on both axes and ``x' = x * r`` holds
    exactly (at most one source pixel at the right/bottom edge is left out).
    """
    h, w = img.shape[:2]
    r = size / max(h, w)
    if r == 1.0:
        return img, 1.0
    new_w, new_h = max(1, int(w * r + 1e-6)), max(1, int(h * r + 1e-6))
    box = (0.0, 0.0, min(w, new_w / r), min(h, new_h / r))
    out = Image.fromarray(img).resize((new_w, new_h), Image.Resampling.BILINEAR, box=box)
    return np.asarray(out), r


def letterbox(img: np.ndarray, size: int) -> tuple[np.ndarray, float, tuple[float, float]]:
    """Resize (long side = ``size``) and pad to a centred ``size x size`` square.

    Returns ``(image, ratio, (pad_w, pad_h))``: a point maps as ``x' = x * ratio + pad_w``,
    ``y' = y * ratio + pad_h`` (``boxes_to_letterbox``) and back with ``boxes_from_letterbox``.
    """
    resized, r = resize_long_side(img, size)
    h, w = resized.shape[:2]
    left, top = (size - w) // 2, (size - h) // 2
    canvas = np.full((size, size, 3), PAD_VALUE, dtype=np.uint8)
    canvas[top : top + h, left : left + w] = resized
    return canvas, r, (float(left), float(top))


def boxes_to_letterbox(boxes: np.ndarray, ratio: float, pad: tuple[float, float]) -> np.ndarray:
    """Original-image xyxy boxes -> letterboxed-image xyxy boxes."""
    out = np.asarray(boxes, dtype=np.float64) * ratio
    out[:, [0, 2]] += pad[0]
    out[:, [1, 3]] += pad[1]
    return out


def boxes_from_letterbox(
    boxes: np.ndarray, ratio: float, pad: tuple[float, float], shape: tuple[int, int] | None = None
) -> np.ndarray:
    """Letterboxed xyxy boxes -> original-image boxes; clipped to ``shape`` (h, w) if given."""
    out = np.array(boxes, dtype=np.float64, copy=True)
    out[:, [0, 2]] -= pad[0]
    out[:, [1, 3]] -= pad[1]
    out /= ratio
    return out if shape is None else clip_boxes(out, shape[1], shape[0])


def clip_boxes(boxes: np.ndarray, width: float, height: float) -> np.ndarray:
    """Clip xyxy boxes to ``[0, width] x [0, height]`` in place; returns them."""
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    return boxes


def mosaic4(
    images: list[np.ndarray], boxes: list[np.ndarray], size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """Four images (each already resized to long side ``size``) around a random centre of a
    ``2 size x 2 size`` canvas: top-left, top-right, bottom-left, bottom-right.

    Returns the canvas, the boxes (clipped to the canvas), the index of the source image of
    each box and each image's offset (x, y) on the canvas (a pixel ``p`` of image ``i`` lands
    at ``p + offset[i]``). Each image touches the centre; what falls outside is cut off.
    """
    xc, yc = (int(v) for v in rng.uniform(0.5 * size, 1.5 * size, size=2))
    offsets = []
    for i, img in enumerate(images):
        h, w = img.shape[:2]
        # the image's corner at the centre, extending away from it
        offsets.append((xc - w if i in (0, 2) else xc, yc - h if i in (0, 1) else yc))
    return _compose(images, boxes, offsets, (2 * size, 2 * size))


def mosaic9(
    images: list[np.ndarray], boxes: list[np.ndarray], size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """Nine images (each resized to long side ``size``) tiled on a ``3 size`` square, cut to
    a random ``2 size`` window: the first at (size, size), the others around it clockwise from
    the top (top, top-right, right, bottom-right, bottom, bottom-left, left, top-left), each
    aligned to its neighbour's edge, later tiles drawn over earlier ones (the reference's
    layout; boxes hidden by an overlap are kept, as there). Returns as ``mosaic4``.
    """
    s = size
    sizes = [img.shape[:2] for img in images]  # (h, w)
    h0, w0 = sizes[0]
    offsets: list[tuple[int, int]] = []
    for i, (h, w) in enumerate(sizes):
        hp, wp = sizes[i - 1] if i else (h, w)  # the previous tile's size
        offsets.append(
            [
                (s, s),
                (s, s - h),
                (s + wp, s - h),
                (s + w0, s),
                (s + w0, s + hp),
                (s + w0 - w, s + h0),
                (s + w0 - wp - w, s + h0),
                (s - w, s + h0 - h),
                (s - w, s + h0 - hp - h),
            ][i]
        )
    xc, yc = (int(v) for v in rng.uniform(0, s, size=2))  # the window's corner
    shifted = [(x - xc, y - yc) for x, y in offsets]
    return _compose(images, boxes, shifted, (2 * s, 2 * s))


def _compose(
    images: list[np.ndarray],
    boxes: list[np.ndarray],
    offsets: list[tuple[int, int]],
    canvas_wh: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """Paste each image at its offset on a grey canvas (in order, later over earlier; what
    falls outside is cut off); shift its boxes likewise and clip them to the canvas."""
    cw, ch = canvas_wh
    canvas = np.full((ch, cw, 3), PAD_VALUE, dtype=np.uint8)
    out_boxes, owners = [], []
    for i, (img, b) in enumerate(zip(images, boxes)):
        x0, y0 = offsets[i]
        paste_at(canvas, img, (x0, y0))
        if len(b):
            out_boxes.append(np.asarray(b, dtype=np.float64) + np.array([x0, y0, x0, y0]))
            owners.append(np.full(len(b), i))
    all_boxes = np.concatenate(out_boxes) if out_boxes else np.zeros((0, 4))
    all_owners = np.concatenate(owners) if owners else np.zeros(0, dtype=np.int64)
    return canvas, clip_boxes(all_boxes, cw, ch), all_owners, list(offsets)


def paste_at(canvas: np.ndarray, img: np.ndarray, offset: tuple[int, int]) -> None:
    """Copy ``img`` onto ``canvas`` (in place) with its top-left corner at ``offset`` (x, y);
    what falls outside the canvas is cut off."""
    x0, y0 = offset
    h, w = img.shape[:2]
    ch, cw = canvas.shape[:2]
    x1, y1, x2, y2 = max(x0, 0), max(y0, 0), min(x0 + w, cw), min(y0 + h, ch)
    if x2 > x1 and y2 > y1:
        canvas[y1:y2, x1:x2] = img[y1 - y0 : y2 - y0, x1 - x0 : x2 - x0]


def affine_matrix(
    in_size: tuple[int, int],
    out_size: tuple[int, int],
    rng: np.random.Generator,
    *,
    degrees: float = 0.0,
    translate: float = 0.0,
    scale: float = 0.0,
    shear: float = 0.0,
    perspective: float = 0.0,
) -> tuple[np.ndarray, float]:
    """A random 3x3 matrix taking input (w, h) pixels to output pixels: centre the input,
    perspective, rotate + scale, shear, then move the centre to the output's centre
    +/- ``translate``. The scale gain is drawn from U(1 - scale, 1 + SCALE_UP + scale), as the
    reference does. Returns the matrix and the scale gain."""
    in_w, in_h = in_size
    out_w, out_h = out_size
    centre = np.eye(3)
    centre[0, 2], centre[1, 2] = -in_w / 2, -in_h / 2
    persp = np.eye(3)
    persp[2, 0], persp[2, 1] = rng.uniform(-perspective, perspective, size=2)
    angle = math.radians(rng.uniform(-degrees, degrees))
    gain = rng.uniform(1 - scale, 1 + SCALE_UP + scale)
    rot = np.eye(3)
    rot[:2, :2] = gain * np.array(
        [[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]]
    )
    shr = np.eye(3)
    shr[0, 1], shr[1, 0] = (math.tan(math.radians(v)) for v in rng.uniform(-shear, shear, 2))
    move = np.eye(3)
    move[0, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * out_w
    move[1, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * out_h
    return move @ shr @ rot @ persp @ centre, gain


def warp_image(img: np.ndarray, matrix: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
    """Apply a 3x3 matrix (input -> output pixels) with bilinear sampling, grey border."""
    inv = np.linalg.inv(matrix)
    inv = inv / inv[2, 2]
    fill = (PAD_VALUE,) * 3
    pil = Image.fromarray(img)
    if np.allclose(inv[2, :2], 0.0):
        method, data = Image.Transform.AFFINE, tuple(inv[:2].reshape(-1))
    else:
        method, data = Image.Transform.PERSPECTIVE, tuple(inv.reshape(-1)[:8])
    out = pil.transform(out_size, method, data, Image.Resampling.BILINEAR, fillcolor=fill)
    return np.asarray(out)


def warp_boxes(boxes: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The axis-aligned boxes around the four transformed corners of each box."""
    if not len(boxes):
        return np.zeros((0, 4))
    b = np.asarray(boxes, dtype=np.float64)
    corners = np.stack(
        [b[:, [0, 1]], b[:, [2, 1]], b[:, [2, 3]], b[:, [0, 3]]], 1
    )  # (n, 4 corners, 2)
    pts = np.concatenate([corners, np.ones((*corners.shape[:2], 1))], -1) @ matrix.T
    pts = pts[..., :2] / pts[..., 2:3]
    return np.concatenate([pts.min(1), pts.max(1)], 1)


def box_candidates(
    before: np.ndarray,
    after: np.ndarray,
    gain: float,
    *,
    min_side: float = 2.0,
    min_area_ratio: float = 0.1,
    max_aspect: float = 20.0,
) -> np.ndarray:
    """Boxes worth keeping after a warp: both sides above ``min_side`` px, at least
    ``min_area_ratio`` of the area the box would have with no cropping, aspect below
    ``max_aspect``."""
    w0, h0 = before[:, 2] - before[:, 0], before[:, 3] - before[:, 1]
    w1, h1 = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
    aspect = np.maximum(w1 / (h1 + 1e-16), h1 / (w1 + 1e-16))
    area_ratio = (w1 * h1) / (w0 * h0 * gain * gain + 1e-16)
    return (w1 > min_side) & (h1 > min_side) & (area_ratio > min_area_ratio) & (aspect < max_aspect)


def random_affine(
    img: np.ndarray,
    boxes: np.ndarray,
    out_size: int,
    rng: np.random.Generator,
    hyp: dict,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Warp the image to ``out_size x out_size`` with a random affine/perspective matrix; map,
    clip and filter the boxes. Returns the image, the kept boxes and the keep mask."""
    h, w = img.shape[:2]
    matrix, gain = affine_matrix(
        (w, h),
        (out_size, out_size),
        rng,
        degrees=hyp.get("degrees", 0.0),
        translate=hyp.get("translate", 0.0),
        scale=hyp.get("scale", 0.0),
        shear=hyp.get("shear", 0.0),
        perspective=hyp.get("perspective", 0.0),
    )
    out = warp_image(img, matrix, (out_size, out_size))
    new = clip_boxes(warp_boxes(boxes, matrix), out_size, out_size)
    keep = box_candidates(np.asarray(boxes, dtype=np.float64), new, gain)
    return out, new[keep], keep


def augment_hsv(
    img: np.ndarray, rng: np.random.Generator, hgain: float, sgain: float, vgain: float
) -> np.ndarray:
    """Random multiplicative gains on hue (wrapping), saturation and value (clipped)."""
    if not (hgain or sgain or vgain):
        return img
    gains = rng.uniform(-1, 1, 3) * [hgain, sgain, vgain] + 1
    hsv = np.asarray(Image.fromarray(img).convert("HSV"))
    x = np.arange(256, dtype=np.float64)
    luts = [
        (x * gains[0]).astype(np.int64) % 256,
        (x * gains[1]).clip(0, 255),
        (x * gains[2]).clip(0, 255),
    ]
    out = np.stack([lut.astype(np.uint8)[hsv[..., c]] for c, lut in enumerate(luts)], -1)
    return np.asarray(Image.fromarray(out, mode="HSV").convert("RGB"))


def flip_lr(img: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w = img.shape[1]
    out = boxes.copy()
    out[:, 0], out[:, 2] = w - boxes[:, 2], w - boxes[:, 0]
    return np.ascontiguousarray(img[:, ::-1]), out


def flip_ud(img: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h = img.shape[0]
    out = boxes.copy()
    out[:, 1], out[:, 3] = h - boxes[:, 3], h - boxes[:, 1]
    return np.ascontiguousarray(img[::-1]), out


def mixup(img1: np.ndarray, img2: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blend two images with a Beta(8, 8) ratio (the boxes of both are kept)."""
    r = rng.beta(8.0, 8.0)
    return (img1.astype(np.float32) * r + img2.astype(np.float32) * (1 - r)).astype(np.uint8)


def xyxy_to_cxcywh_norm(boxes: np.ndarray, size: int) -> np.ndarray:
    """Pixel xyxy on a ``size`` square -> normalized cx, cy, w, h."""
    b = np.asarray(boxes, dtype=np.float64)
    out = np.stack(
        [(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]],
        1,
    )
    return out / size
