"""A synthetic COCO-format detection set: coloured shapes on cluttered backgrounds.

Six classes, each a distinct shape with its own saturated colour family (so a small detector
learns them quickly): circle (red), square (green), triangle (blue), cross (yellow), ring
(magenta), star (cyan). Objects vary in size (drawn side: 25% 14-28 px, 45% 36-90 px, 30%
100-160 px at ``size`` 320, at most two of the largest per image; sizes scale with ``size``),
so the recorded boxes spread over COCO's small / medium / large area ranges; and in aspect
(0.8-1.25), rotation, brightness and texture (solid, stripes, gradient).

Backgrounds are a two-colour gradient of low-saturation colours with clutter that is not an
object: random lines, irregular blobs and speckles in muted colours (greys, browns, olives,
never the saturated object colours), and Gaussian pixel noise over everything.

Occlusion: objects are drawn in order, each on top of the earlier ones. A placement is refused
(and retried elsewhere) when it would hide more than 40% of an earlier object's pixels, so every
drawn object keeps at least 60% of its area visible; an object that finds no such place is not
drawn. Every drawn object is annotated with its **visible** box (the bounding box of its
visible pixels) and ``area`` = that box's area (COCO's small / medium / large ranges apply to
it). Objects never extend past the image border.

Each annotation's ``segmentation`` is the object's visible mask as COCO RLE (``iscrowd`` 0), so
mask-based augmentations (the reference's paste-in and copy-paste) have masks to cut from.

Images are ``size`` x ``size``, ``size`` x 0.75 ``size`` or 0.75 ``size`` x ``size`` (to exercise
the letterbox), written as JPEG (quality 95). Image ``i`` depends only on ``(seed, i, size)``;
the last ``round(images * val_fraction)`` images form the val split. Same arguments, same
bytes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from scaling_lab.data.errors import DataError
from scaling_lab.limits import MAX_IMG_SIZE, MAX_SYNTH_IMAGES

GENERATOR_VERSION = 2  # v2: each annotation carries its visible mask (RLE ``segmentation``)
IMAGE_STREAM = 1  # the pixels' random stream, unchanged since v1: v2 sets draw v1's images
CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "ring", "star")
COLOURS: dict[str, tuple[int, int, int]] = {
    "circle": (225, 40, 40),  # red
    "square": (40, 180, 70),  # green
    "triangle": (45, 90, 235),  # blue
    "cross": (240, 205, 30),  # yellow
    "ring": (205, 55, 215),  # magenta
    "star": (30, 200, 215),  # cyan
}
SIZE_BUCKETS = (  # (name, probability, side range in px at size 320)
    ("small", 0.25, (14.0, 28.0)),
    ("medium", 0.45, (36.0, 90.0)),
    ("large", 0.30, (100.0, 160.0)),
)
MAX_LARGE = 2  # large objects per image
MIN_VISIBLE = 0.6  # fraction of an object's pixels that must stay visible
TRIES = 25  # placements tried per object
SMALL_AREA, LARGE_AREA = 32**2, 96**2  # COCO area ranges


# --------------------------------------------------------------------------- shapes


def _rotate(points: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return points @ np.array([[c, s], [-s, c]])


def _polygon(kind: str, rx: float, ry: float) -> np.ndarray | None:
    """The shape's outline centred on 0 (before rotation); None for the elliptic shapes."""
    if kind in ("circle", "ring"):
        return None
    if kind == "square":
        pts = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    elif kind == "triangle":  # equilateral, bounding box centred
        a = np.radians([-90.0, 30.0, 150.0])
        pts = np.stack([np.cos(a), np.sin(a) + 0.25], 1)
    elif kind == "cross":  # a plus sign: one arm's outline turned four times
        t = 0.34
        arm = np.array([[-t, -1.0], [t, -1.0], [t, -t]])
        pts = np.concatenate([_rotate(arm, k * math.pi / 2) for k in range(4)])
    elif kind == "star":  # five points, inner radius 0.45
        a = np.radians(np.arange(10) * 36.0 - 90.0)
        radius = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        pts = np.stack([np.cos(a) * radius, np.sin(a) * radius], 1)
    else:  # pragma: no cover - CLASSES is fixed
        raise ValueError(kind)
    return pts * [rx, ry]


def _reach(kind: str, rx: float, ry: float) -> float:
    """The shape's largest distance from its centre, at any rotation."""
    pts = _polygon(kind, rx, ry)
    return max(rx, ry) if pts is None else float(np.hypot(pts[:, 0], pts[:, 1]).max())


def _shape_mask(
    kind: str, centre: tuple[float, float], rx: float, ry: float, angle: float, wh: tuple[int, int]
) -> np.ndarray:
    """A boolean (H, W) mask of one shape."""
    im = Image.new("L", wh, 0)
    draw = ImageDraw.Draw(im)
    cx, cy = centre
    pts = _polygon(kind, rx, ry)
    if pts is None:
        draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=255)
        if kind == "ring":
            ix, iy = 0.55 * rx, 0.55 * ry
            draw.ellipse((cx - ix, cy - iy, cx + ix, cy + iy), fill=0)
    else:
        pts = _rotate(pts, angle) + np.array([cx, cy])
        draw.polygon([tuple(p) for p in pts.tolist()], fill=255)
    return np.asarray(im) > 127


def _angle(kind: str, rng: np.random.Generator) -> float:
    limit = 20.0 if kind in ("square", "cross") else 180.0
    return math.radians(rng.uniform(-limit, limit))


def _object_fill(kind: str, wh: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """An (H, W, 3) float fill: the class colour, jittered, solid / stripes / gradient."""
    w, h = wh
    base = np.array(COLOURS[kind], dtype=np.float64) * rng.uniform(0.8, 1.1)
    base = (base + rng.uniform(-15, 15, 3)).clip(0, 255)
    texture = rng.choice(3, p=[0.6, 0.2, 0.2])
    yy, xx = np.mgrid[0:h, 0:w]
    theta = rng.uniform(0, math.pi)
    along = xx * math.cos(theta) + yy * math.sin(theta)
    if texture == 1:  # stripes of a darker shade
        period = rng.uniform(4, 9)
        gain = np.where((along // (period / 2)) % 2 == 0, 1.0, 0.65)
    elif texture == 2:  # brightness gradient
        gain = 0.75 + 0.35 * (along - along.min()) / max(float(np.ptp(along)), 1.0)
    else:
        gain = np.ones((h, w))
    return (base[None, None, :] * gain[..., None]).clip(0, 255)


# --------------------------------------------------------------------------- background


def _muted(rng: np.random.Generator, lo: float = 30, hi: float = 230) -> tuple[int, ...]:
    grey = rng.uniform(lo, hi)
    return tuple(int(v) for v in np.clip(grey + rng.uniform(-25, 25, 3), 0, 255))


def _background(wh: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    w, h = wh
    c0 = np.array(_muted(rng, 70, 190), dtype=np.float64)
    c1 = np.array(_muted(rng, 70, 190), dtype=np.float64)
    yy, xx = np.mgrid[0:h, 0:w]
    theta = rng.uniform(0, 2 * math.pi)
    t = xx * math.cos(theta) + yy * math.sin(theta)
    t = (t - t.min()) / max(float(np.ptp(t)), 1.0)
    img = Image.fromarray((c0 + (c1 - c0) * t[..., None]).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(4, 13))):
        kind = rng.choice(3, p=[0.45, 0.4, 0.15])
        colour = _muted(rng)
        if kind == 0:  # line
            p = rng.uniform([0, 0, 0, 0], [w, h, w, h]).tolist()
            draw.line(p, fill=colour, width=int(rng.integers(1, 4)))
        elif kind == 1:  # irregular blob
            cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(4, 30)
            k = int(rng.integers(5, 10))
            a = np.sort(rng.uniform(0, 2 * math.pi, k))
            rad = r * rng.uniform(0.5, 1.3, k)
            pts = np.stack([cx + rad * np.cos(a), cy + rad * np.sin(a)], 1)
            draw.polygon([tuple(q) for q in pts.tolist()], fill=colour)
        else:  # speckles
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            for dx, dy in rng.normal(0, 10, (int(rng.integers(8, 30)), 2)).tolist():
                x, y = cx + dx, cy + dy
                draw.rectangle((x, y, x + 1, y + 1), fill=colour)
    return np.asarray(img).astype(np.float64)


# --------------------------------------------------------------------------- one image


def _image_wh(size: int, rng: np.random.Generator) -> tuple[int, int]:
    short = round(size * 0.75)
    return [(size, size), (size, short), (short, size)][int(rng.choice(3, p=[0.5, 0.25, 0.25]))]


def render_image(
    index: int, size: int, seed: int
) -> tuple[np.ndarray, list[tuple[int, list[float]]]]:
    """Image ``index`` of the set: uint8 (H, W, 3) and [(class index, [x, y, w, h])]."""
    img, objects, _ = render_image_masks(index, size, seed)
    return img, objects


def render_image_masks(
    index: int, size: int, seed: int
) -> tuple[np.ndarray, list[tuple[int, list[float]]], list[np.ndarray]]:
    """``render_image`` plus each object's visible pixels as a boolean (H, W) mask."""
    rng = np.random.default_rng([seed, index, size, IMAGE_STREAM])
    w, h = _image_wh(size, rng)
    img = _background((w, h), rng)
    owner = np.full((h, w), -1, dtype=np.int64)
    full_area: list[int] = []
    kinds: list[int] = []
    scale = size / 320.0
    n_large = 0
    for _ in range(int(rng.integers(2, 8))):
        cls = int(rng.integers(len(CLASSES)))
        kind = CLASSES[cls]
        bucket = int(rng.choice(3, p=[b[1] for b in SIZE_BUCKETS]))
        if bucket == 2 and n_large >= MAX_LARGE:
            bucket = 1
        lo, hi = SIZE_BUCKETS[bucket][2]
        side = rng.uniform(lo, hi) * scale
        aspect = rng.uniform(0.8, 1.25) if kind != "ring" else rng.uniform(0.9, 1.1)
        rx, ry = side / 2, side / 2 * aspect
        reach = min(_reach(kind, rx, ry) + 1, (min(w, h) - 2) / 2)
        angle = _angle(kind, rng)
        placed = None
        for _ in range(TRIES):
            centre = (rng.uniform(reach, w - reach), rng.uniform(reach, h - reach))
            mask = _shape_mask(kind, centre, rx, ry, angle, (w, h))
            if not mask.any():
                break
            hidden = np.bincount(owner[mask] + 1, minlength=len(full_area) + 1)[1:]
            visible = np.bincount(owner.ravel() + 1, minlength=len(full_area) + 1)[1:]
            if all(
                visible[j] - hidden[j] >= MIN_VISIBLE * full_area[j] for j in range(len(full_area))
            ):
                placed = mask
                break
        if placed is None:
            continue
        fill = _object_fill(kind, (w, h), rng)
        img[placed] = fill[placed]
        owner[placed] = len(full_area)
        full_area.append(int(placed.sum()))
        kinds.append(cls)
        n_large += bucket == 2
    img += rng.normal(0, rng.uniform(3, 10), img.shape)
    objects, masks = [], []
    for j, cls in enumerate(kinds):
        visible = owner == j
        ys, xs = np.nonzero(visible)
        x1, y1, x2, y2 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
        objects.append((cls, [float(x1), float(y1), float(x2 - x1), float(y2 - y1)]))
        masks.append(visible)
    return img.clip(0, 255).round().astype(np.uint8), objects, masks


def mask_to_rle(mask: np.ndarray) -> dict:
    """A boolean (H, W) mask as COCO compressed RLE (``counts`` a str, JSON-ready)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


# --------------------------------------------------------------------------- the set


def check_synth_params(
    *, images: int = 600, size: int = 320, seed: int = 0, val_fraction: float = 0.2
) -> None:
    """The parameters' ranges (``scaling_lab.limits``), checked before anything is drawn."""
    if images < 2:
        raise DataError(f"need at least 2 images, got {images}", field="images")
    if images > MAX_SYNTH_IMAGES:
        raise DataError(
            f"at most {MAX_SYNTH_IMAGES} images (MAX_SYNTH_IMAGES), got {images}", field="images"
        )
    if size < 64:
        raise DataError(f"size must be >= 64, got {size}", field="size")
    if size > MAX_IMG_SIZE:
        raise DataError(
            f"size must be at most {MAX_IMG_SIZE} (MAX_IMG_SIZE), got {size}", field="size"
        )
    if not 0 <= seed < 2**63:
        raise DataError(f"seed must be a non-negative integer, got {seed}", field="seed")
    if not 0 < val_fraction < 1:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}", field="val_fraction")


def make_synth(
    out: Path, *, images: int = 600, size: int = 320, seed: int = 0, val_fraction: float = 0.2
) -> Path:
    """Write the set to ``out``: ``images/{train,val}/NNNNNN.jpg``,
    ``annotations/instances_{train,val}.json`` and ``synth.json`` (parameters, statistics;
    written last). Returns ``out``."""
    check_synth_params(images=images, size=size, seed=seed, val_fraction=val_fraction)
    out = Path(out)
    n_val = min(images - 1, max(1, round(images * val_fraction)))
    categories = [
        {"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(CLASSES)
    ]
    info = {
        "description": "scaling_lab synthetic shapes",
        "version": str(GENERATOR_VERSION),
        "params": {"images": images, "size": size, "seed": seed, "val_fraction": val_fraction},
    }
    splits = {
        s: {"info": info, "licenses": [], "images": [], "annotations": [], "categories": categories}
        for s in ("train", "val")
    }
    ann_id = 0
    for i in range(images):
        split = "val" if i >= images - n_val else "train"
        img, objects, masks = render_image_masks(i, size, seed)
        folder = out / "images" / split
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{i + 1:06d}.jpg"
        Image.fromarray(img).save(folder / name, quality=95)
        coco = splits[split]
        coco["images"].append(
            {"id": i + 1, "file_name": name, "width": img.shape[1], "height": img.shape[0]}
        )
        for (cls, bbox), mask in zip(objects, masks):
            ann_id += 1
            coco["annotations"].append(
                {
                    "id": ann_id,
                    "image_id": i + 1,
                    "category_id": cls + 1,
                    "bbox": bbox,
                    "area": bbox[2] * bbox[3],
                    "segmentation": mask_to_rle(mask),
                    "iscrowd": 0,
                }
            )
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    for split, coco in splits.items():
        (out / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
    meta = {"generator_version": GENERATOR_VERSION, **info["params"], "stats": synth_stats(out)}
    (out / "synth.json").write_text(json.dumps(meta, indent=2))
    return out


def synth_name(images: int, size: int, seed: int, val_fraction: float) -> str:
    return f"synth-v{GENERATOR_VERSION}-n{images}-s{size}-seed{seed}-val{val_fraction:g}"


def ensure_synth(
    base: Path, *, images: int = 600, size: int = 320, seed: int = 0, val_fraction: float = 0.2
) -> Path:
    """The cached set for these parameters under ``base``, made first if missing. It is built
    in a temporary folder and renamed into place, so concurrent callers (DDP ranks) are safe."""
    check_synth_params(images=images, size=size, seed=seed, val_fraction=val_fraction)
    final = Path(base) / synth_name(images, size, seed, val_fraction)
    if (final / "synth.json").is_file():
        return final
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    make_synth(tmp, images=images, size=size, seed=seed, val_fraction=val_fraction)
    if final.exists() and not (final / "synth.json").is_file():
        shutil.rmtree(final, ignore_errors=True)  # an incomplete earlier attempt
    try:
        os.rename(tmp, final)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
        if not (final / "synth.json").is_file():
            raise
    return final


_PARAM_TYPES = {"images": int, "size": int, "seed": int, "val_fraction": float}


def parse_synth_params(text: str) -> dict:
    """``synth`` or ``synth:images=300,size=320,seed=1,val_fraction=0.2`` -> keyword dict."""
    _, _, rest = text.partition(":")
    params: dict = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq or key not in _PARAM_TYPES:
            raise DataError(
                f"bad synth parameter '{part}' (expected {', '.join(_PARAM_TYPES)}=VALUE)",
                source=text,
            )
        try:
            params[key] = _PARAM_TYPES[key](value)
        except ValueError:
            raise DataError(f"bad value for '{key}': '{value}'", source=text) from None
    return params


def size_range(area: float) -> str:
    """COCO's area range of a box area: small < 32^2 <= medium < 96^2 <= large."""
    if area < SMALL_AREA:
        return "small"
    return "medium" if area < LARGE_AREA else "large"


def synth_stats(root: str | Path) -> dict:
    """Objects per class and per COCO size range, per split and in total.

    ``{"train": {...}, "val": {...}, "all": {...}}``, each ``{"images", "objects",
    "per_class": {name: n}, "per_size": {"small": n, "medium": n, "large": n}}``. Works on any
    COCO-layout folder whose files are ``annotations/instances_{split}.json``.
    """
    root = Path(root)
    result: dict = {}
    total = {"images": 0, "objects": 0, "per_class": {}, "per_size": {}}
    for split in ("train", "val"):
        path = root / "annotations" / f"instances_{split}.json"
        if not path.is_file():
            continue
        coco = json.loads(path.read_text())
        names = {c["id"]: c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"])}
        per_class = dict.fromkeys(names.values(), 0)
        per_size = {"small": 0, "medium": 0, "large": 0}
        for ann in coco["annotations"]:
            per_class[names[ann["category_id"]]] += 1
            area = ann.get("area", ann["bbox"][2] * ann["bbox"][3])
            per_size[size_range(area)] += 1
        n_obj = len(coco["annotations"])
        result[split] = {
            "images": len(coco["images"]),
            "objects": n_obj,
            "per_class": per_class,
            "per_size": per_size,
        }
        total["images"] += len(coco["images"])
        total["objects"] += n_obj
        for key in ("per_class", "per_size"):
            for k, v in result[split][key].items():
                total[key][k] = total[key].get(k, 0) + v
    result["all"] = total
    return result
