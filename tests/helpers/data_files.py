"""Small hand-made datasets for the data and evaluation tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

BACKGROUND = 60  # dark grey; objects are filled rectangles: class 0 white, class 1 yellow
COLOURS = {0: (255, 255, 255), 1: (255, 255, 0)}


def draw_image(
    w: int, h: int, boxes: list[list[float]], classes: list[int] | None = None
) -> np.ndarray:
    """A dark image with a filled rectangle per integer xyxy box, coloured by class."""
    img = np.full((h, w, 3), BACKGROUND, dtype=np.uint8)
    for (x1, y1, x2, y2), cls in zip(boxes, classes or [0] * len(boxes)):
        img[int(y1) : int(y2), int(x1) : int(x2)] = COLOURS[cls]
    return img


# (file name, width, height, xyxy boxes, class indexes); squares stay >= 20 px from the edges
SQUARES = [
    ("a.png", 200, 120, [[40, 30, 90, 70], [130, 50, 170, 95]], [0, 1]),
    ("b.png", 120, 200, [[25, 40, 95, 110]], [1]),
    ("c.png", 160, 160, [[20, 20, 60, 60], [100, 90, 140, 140]], [0, 0]),
    ("d.png", 240, 160, [[60, 40, 180, 120]], [1]),
]


def write_coco(
    root: Path,
    images=SQUARES,
    *,
    category_ids=(3, 7),
    split: str = "val",
    annotations: list[dict] | None = None,
) -> Path:
    """A COCO layout under ``root`` (one split); image ids 1..N, non-contiguous category ids.
    ``annotations`` replaces the generated ones (for bad-data tests)."""
    folder = root / "images" / split
    folder.mkdir(parents=True, exist_ok=True)
    coco = {"images": [], "annotations": [], "categories": []}
    coco["categories"] = [{"id": c, "name": f"class{c}"} for c in category_ids]
    for iid, (name, w, h, boxes, classes) in enumerate(images, start=1):
        Image.fromarray(draw_image(w, h, boxes, classes)).save(folder / name)
        coco["images"].append({"id": iid, "file_name": name, "width": w, "height": h})
        for (x1, y1, x2, y2), cls in zip(boxes, classes):
            coco["annotations"].append(
                {
                    "id": len(coco["annotations"]) + 1,
                    "image_id": iid,
                    "category_id": category_ids[cls],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    if annotations is not None:
        coco["annotations"] = annotations
    (root / "annotations").mkdir(exist_ok=True)
    path = root / "annotations" / f"instances_{split}.json"
    path.write_text(json.dumps(coco))
    return path


def write_coco_both(root: Path, images=SQUARES, **kwargs) -> Path:
    """The same images as train and val."""
    write_coco(root, images, split="train", **kwargs)
    write_coco(root, images, split="val", **kwargs)
    return root


def write_yolo(root: Path, images=SQUARES, names=("cat", "dog"), split: str = "val") -> Path:
    """A YOLO txt layout with data.yaml (labels normalized cx cy w h)."""
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "labels" / split).mkdir(parents=True, exist_ok=True)
    for name, w, h, boxes, classes in images:
        Image.fromarray(draw_image(w, h, boxes, classes)).save(root / "images" / split / name)
        lines = [
            f"{c} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} "
            f"{(y2 - y1) / h:.6f}"
            for (x1, y1, x2, y2), c in zip(boxes, classes)
        ]
        (root / "labels" / split / f"{Path(name).stem}.txt").write_text("\n".join(lines) + "\n")
    (root / "data.yaml").write_text("names: [" + ", ".join(names) + "]\n")
    return root


def bright_box(
    img: np.ndarray, window: list[float], margin: int = 3, cls: int = 0
) -> list[int] | None:
    """The xyxy extent of class ``cls``'s colour (0 white, 1 yellow) inside ``window`` grown by
    ``margin`` (None if there is none)."""
    h, w = img.shape[:2]
    x1, y1 = max(int(window[0]) - margin, 0), max(int(window[1]) - margin, 0)
    x2, y2 = min(int(np.ceil(window[2])) + margin, w), min(int(np.ceil(window[3])) + margin, h)
    crop = img[y1:y2, x1:x2].astype(np.int64)
    thr = (BACKGROUND + 255) / 2
    if cls == 0:
        mask = crop.min(-1) > thr
    else:
        mask = (crop[..., 0] > thr) & (crop[..., 1] > thr) & (crop[..., 2] < thr)
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return None
    return [x1 + xs.min(), y1 + ys.min(), x1 + xs.max() + 1, y1 + ys.max() + 1]
