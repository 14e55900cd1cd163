"""Where a dataset lives and what it holds: ``resolve_data`` and the COCO / YOLO-txt parsers.

A dataset is ``synth`` (the synthetic shapes set, made once in a cache folder), or a folder in
one of two layouts::

    COCO:  images/{train,val}/...  annotations/instances_{train,val}.json
           (also images/{train,val}2017 or {train,val}2017/, instances_{train,val}2017.json)
    YOLO:  images/{train,val}/*.jpg  labels/{train,val}/*.txt  data.yaml (names: [...])
           label lines: ``class cx cy w h``, normalized to the image; no .txt = no objects

Both parse to ``ImageRecord``s: xyxy boxes in original-image pixels and contiguous class
indexes ``0 .. nc-1`` (``DatasetInfo.category_ids[i]`` is class ``i``'s COCO category id), and
each object's mask where the files give one: a COCO ``segmentation`` (polygons or RLE), or a
YOLO polygon line ``class x1 y1 x2 y2 ...`` (normalized; its box is the points' extent). Masks
feed the reference's paste-in and copy-paste (``paste.py``).
For a YOLO layout, a COCO file for the val split is written to the cache so pycocotools can
evaluate it (image ids 1..N in file-name order, category ids 1..nc).

Bad data is an error naming the file (``DataError``): a missing or empty annotation file,
invalid JSON, missing keys, an unknown image or category id, a malformed box or label line, a
missing image file. Boxes reaching outside their image are clipped and boxes with no area left
are dropped, each with one counted ``DataWarning`` per file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scaling_lab.atomic import atomic_write_text
from scaling_lab.data.errors import DataError, IssueLog
from scaling_lab.data.masks import polygon_from_normalized, segmentation_problem
from scaling_lab.errors import UserError
from scaling_lab.limits import MAX_ANNOTATION_BYTES, MAX_LABEL_BYTES
from scaling_lab.spec.yaml_lines import check_yaml_size, loads_json, read_text_file

# set to 1 to let COCO ``file_name`` entries point outside the images folder (absolute paths,
# ``..``); by default a dataset reads only files under its own root
ALLOW_OUTSIDE_ENV = "SCALING_LAB_IMAGES_ANYWHERE"

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
SPLITS = ("train", "val")
MIN_BOX_SIDE = 1.0  # px: a box narrower than this after clipping is degenerate


def cache_root() -> Path:
    """``$SCALING_LAB_CACHE`` or ``~/.cache/scaling_lab``."""
    env = os.environ.get("SCALING_LAB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "scaling_lab"


@dataclass
class ImageRecord:
    """One image and its objects: ``boxes`` (n, 4) xyxy pixels, ``classes`` (n,) indexes."""

    id: int
    path: Path
    width: int
    height: int
    boxes: np.ndarray
    classes: np.ndarray
    # per object: its segmentation (``masks.Segmentation``) or None; None: no masks at all
    segments: list | None = None


@dataclass
class DatasetInfo:
    """A resolved dataset. ``train_ann`` is None for a YOLO layout (labels are read from the
    .txt files); ``val_ann`` is always a COCO file (written to the cache for YOLO layouts)."""

    root: Path
    nc: int
    names: list[str]
    train_images: Path | None
    val_images: Path | None
    train_ann: Path | None
    val_ann: Path | None
    format: str  # "coco" | "yolo"
    category_ids: list[int]
    _records: dict[str, list[ImageRecord]] = field(default_factory=dict, repr=False, compare=False)

    def images_dir(self, split: str) -> Path:
        path = {"train": self.train_images, "val": self.val_images}.get(_check_split(split))
        if path is None:
            raise DataError(f"the dataset has no '{split}' split", source=self.root)
        return path

    def records(self, split: str) -> list[ImageRecord]:
        """The split's images and objects (parsed once, then kept)."""
        split = _check_split(split)
        if split not in self._records:
            images = self.images_dir(split)
            if self.format == "coco":
                ann = self.train_ann if split == "train" else self.val_ann
                if ann is None:
                    raise DataError(f"no annotation file for the '{split}' split", source=self.root)
                records, _ = parse_coco(ann, images, expect_categories=self._categories())
            else:
                records = parse_yolo(images, self.root / "labels" / images.name, self.nc)
            self._records[split] = records
        return self._records[split]

    def _categories(self) -> list[tuple[int, str]]:
        return list(zip(self.category_ids, self.names))


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}' (expected train or val)", field="split")
    return split


# --------------------------------------------------------------------------- COCO


def _load_json(path: Path) -> dict:
    if not path.exists():
        raise DataError("annotation file not found", source=path)
    text = read_text_file(path, "annotation file", max_bytes=MAX_ANNOTATION_BYTES, error=DataError)
    if not text.strip():
        raise DataError("annotation file is empty", source=path)
    try:
        data = loads_json(text, str(path), DataError)
    except json.JSONDecodeError as exc:
        raise DataError(f"not valid JSON: {exc.msg}", source=path, line=exc.lineno) from None
    except RecursionError:
        raise DataError("not a COCO file: JSON nested too deeply", source=path) from None
    if not isinstance(data, dict):
        raise DataError("expected a JSON object with images, annotations, categories", source=path)
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"missing or non-list '{key}'", source=path)
    return data


def _int_field(obj: dict, key: str, what: str, path: Path) -> int:
    value = obj.get(key) if isinstance(obj, dict) else None
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataError(f"{what}: '{key}' must be an integer, got {value!r}", source=path)
    return value


def coco_categories(data: dict, path: Path) -> list[tuple[int, str]]:
    """(id, name) of each category, sorted by id; ids must be unique integers."""
    cats = []
    for i, cat in enumerate(data["categories"]):
        cid = _int_field(cat, "id", f"category #{i}", path)
        cats.append((cid, str(cat.get("name", cid))))
    if not cats:
        raise DataError("no categories", source=path)
    ids = [c for c, _ in cats]
    if len(set(ids)) != len(ids):
        raise DataError("duplicate category ids", source=path)
    return sorted(cats)


def _check_images_exist(records: list[ImageRecord], ann: Path) -> None:
    """Every image is there and readable, before any work on the split starts (autoanchor
    printed its line before the first batch found a truncated file)."""
    missing = [r.path for r in records if not os.path.isfile(r.path)]  # a name too long: False
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise DataError(
            f"{len(missing)} image file(s) listed here are missing: {missing[0]}{more}", source=ann
        )
    for record in records:
        check_image_file(record.path, (record.width, record.height))


def check_image_file(path: Path, size: tuple[int, int] | None = None) -> tuple[int, int]:
    """The (width, height) of an image file that will read whole, checked when its split is
    read rather than at its first batch: PIL identifies it, it is no decompression bomb, it
    has the annotations' ``size``, and a JPEG or PNG is not cut short. Cheap: the header and
    the last bytes (a JPEG's FF D9, a PNG's IEND chunk); only a file without its end marker
    is decoded, so a whole image with trailing bytes (a motion photo) is kept. Other formats
    are decoded when used."""
    from PIL import Image, UnidentifiedImageError

    errors = (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError)
    try:
        with Image.open(path) as im:
            found, kind = im.size, im.format
        with open(path, "rb") as f:
            f.seek(max(os.fstat(f.fileno()).st_size - 12, 0))
            tail = f.read(12)
    except FileNotFoundError:
        raise DataError("image file not found", source=path) from None
    except errors as exc:
        raise DataError(f"cannot read image: {exc}", source=path) from None
    if size is not None and tuple(found) != tuple(size):
        raise DataError(
            f"image is {found[0]}x{found[1]} but the annotations say {size[0]}x{size[1]}",
            source=path,
        )
    if {"JPEG": tail.endswith(b"\xff\xd9"), "PNG": tail[4:8] == b"IEND"}.get(kind, True):
        return found
    try:
        with Image.open(path) as im:
            im.load()
    except errors as exc:
        raise DataError(f"cannot read image: {exc} (the file is cut short)", source=path) from None
    return found


def _clean_box(
    box: np.ndarray, width: int, height: int, issues: IssueLog, where: str
) -> np.ndarray | None:
    """Clip an xyxy box to its image (counted); None when nothing of it is left."""
    clipped = box.copy()
    clipped[[0, 2]] = clipped[[0, 2]].clip(0, width)
    clipped[[1, 3]] = clipped[[1, 3]].clip(0, height)
    if clipped[2] - clipped[0] < MIN_BOX_SIDE or clipped[3] - clipped[1] < MIN_BOX_SIDE:
        issues.add("degenerate box(es) dropped (no area inside the image)", where)
        return None
    if not np.array_equal(clipped, box):
        issues.add("box(es) reaching outside the image clipped to it", where)
    return clipped


def parse_coco(
    ann_file: str | Path,
    images_dir: str | Path,
    *,
    expect_categories: list[tuple[int, str]] | None = None,
    check_files: bool = True,
) -> tuple[list[ImageRecord], list[tuple[int, str]]]:
    """Parse a COCO instances file. Crowd annotations are skipped (as the reference does).

    Returns the records (in the file's image order) and the categories. ``expect_categories``
    (from the other split) must match the file's.
    """
    ann_file, images_dir = Path(ann_file), Path(images_dir)
    data = _load_json(ann_file)
    cats = coco_categories(data, ann_file)
    _check_same_categories(cats, expect_categories, ann_file)
    images = _coco_images(data, ann_file)
    issues = IssueLog(ann_file)
    boxes, classes, segs, sizes = _coco_objects(data, images, cats, images_dir, issues, ann_file)
    records = []
    for iid, img in images.items():
        width, height = sizes[iid] if iid in sizes else _image_wh(img, images_dir)
        path = images_dir / img["file_name"]
        records.append(_record(iid, path, width, height, boxes[iid], classes[iid], segs[iid]))
    if check_files:
        _check_images_exist(records, ann_file)
    issues.emit()
    return records, cats


def _check_same_categories(
    cats: list[tuple[int, str]], expect: list[tuple[int, str]] | None, path: Path
) -> None:
    """The two splits of a dataset must share their category ids (class indexes follow them)."""
    if expect is not None and [c for c, _ in cats] != [c for c, _ in expect]:
        raise DataError(
            f"categories differ from the other split's ({len(cats)} vs {len(expect)} categories)",
            source=path,
        )


def _coco_images(data: dict, path: Path) -> dict[int, dict]:
    """The image entries by id (file order); ids unique, each with a ``file_name`` that
    stays inside the images folder (unless ``$SCALING_LAB_IMAGES_ANYWHERE=1``)."""
    images: dict[int, dict] = {}
    anywhere = os.environ.get(ALLOW_OUTSIDE_ENV) == "1"
    for i, img in enumerate(data["images"]):
        iid = _int_field(img, "id", f"image #{i}", path)
        if iid in images:
            raise DataError(f"duplicate image id {iid}", source=path)
        name = img.get("file_name")
        if not isinstance(name, str) or not name or "\0" in name:
            raise DataError(f"image {iid}: missing 'file_name'", source=path)
        if not anywhere and not _stays_inside(name):
            raise DataError(
                f"image {iid}: file_name {name!r} points outside the images folder (set "
                f"{ALLOW_OUTSIDE_ENV}=1 to allow it)",
                source=path,
            )
        images[iid] = img
    return images


def _stays_inside(name: str) -> bool:
    """A relative path that does not climb out with ``..`` (links inside the dataset, e.g.
    an images folder linked to shared storage, are the user's own choice)."""
    norm = os.path.normpath(name)
    return not os.path.isabs(name) and norm != ".." and not norm.startswith(".." + os.sep)


def _image_wh(img: dict, images_dir: Path) -> tuple[int, int]:
    """(width, height) of an image entry: its own fields, else read from the image file."""
    if isinstance(img.get("width"), int) and isinstance(img.get("height"), int):
        return img["width"], img["height"]
    return check_image_file(images_dir / img["file_name"])


def _coco_objects(
    data: dict,
    images: dict[int, dict],
    cats: list[tuple[int, str]],
    images_dir: Path,
    issues: IssueLog,
    path: Path,
) -> tuple[dict, dict, dict, dict[int, tuple[int, int]]]:
    """Clipped xyxy boxes, class indexes and segmentations (or None) per image id, and the
    sizes looked up for them (an image is read only when its entry has no size and it has an
    object)."""
    cat_index = {cid: i for i, (cid, _) in enumerate(cats)}
    boxes: dict[int, list[np.ndarray]] = {iid: [] for iid in images}
    classes: dict[int, list[int]] = {iid: [] for iid in images}
    segs: dict[int, list] = {iid: [] for iid in images}
    sizes: dict[int, tuple[int, int]] = {}
    for i, ann in enumerate(data["annotations"]):
        found = _coco_annotation(ann, i, images, cats, cat_index, path)
        if found is None:
            continue
        iid, cls, (x, y, w, h), where = found
        if iid not in sizes:
            sizes[iid] = _image_wh(images[iid], images_dir)
        box = _clean_box(np.array([x, y, x + w, y + h]), *sizes[iid], issues, where)
        if box is not None:
            boxes[iid].append(box)
            classes[iid].append(cls)
            segs[iid].append(_coco_segmentation(ann, where, path))
    return boxes, classes, segs, sizes


def _coco_segmentation(ann: dict, where: str, path: Path):
    """The annotation's segmentation, checked; None when it has none (an empty list too)."""
    seg = ann.get("segmentation")
    if seg is None or seg == []:
        return None
    problem = segmentation_problem(seg)
    if problem:
        raise DataError(f"{where}: 'segmentation' {problem}", source=path)
    return seg


def _coco_annotation(
    ann: dict,
    i: int,
    images: dict[int, dict],
    cats: list[tuple[int, str]],
    cat_index: dict[int, int],
    path: Path,
) -> tuple[int, int, tuple[float, ...], str] | None:
    """A checked annotation: (image id, class index, bbox x y w h, where); None for a crowd."""
    aid = ann.get("id", f"#{i}") if isinstance(ann, dict) else f"#{i}"
    where = f"annotation {aid}"
    iid = _int_field(ann, "image_id", where, path)
    if iid not in images:
        raise DataError(f"{where}: unknown image_id {iid}", source=path)
    cid = _int_field(ann, "category_id", where, path)
    if cid not in cat_index:
        known = ", ".join(str(c) for c, _ in cats[:10]) + (" ..." if len(cats) > 10 else "")
        raise DataError(
            f"{where} (image {iid}): unknown category_id {cid} (known: {known})", source=path
        )
    if ann.get("iscrowd", 0):
        return None
    bbox = ann.get("bbox")
    if (
        not isinstance(bbox, list)
        or len(bbox) != 4
        or not all(isinstance(v, int | float) and math.isfinite(v) for v in bbox)
    ):
        raise DataError(f"{where}: 'bbox' must be 4 finite numbers, got {bbox!r}", source=path)
    return iid, cat_index[cid], tuple(float(v) for v in bbox), where


def _record(iid, path, width, height, boxes, classes, segments=None) -> ImageRecord:
    return ImageRecord(
        id=iid,
        path=Path(path),
        width=int(width),
        height=int(height),
        boxes=np.array(boxes, dtype=np.float32).reshape(-1, 4),
        classes=np.array(classes, dtype=np.int64).reshape(-1),
        segments=list(segments) if segments and any(s is not None for s in segments) else None,
    )


# --------------------------------------------------------------------------- YOLO txt


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def parse_yolo(images_dir: str | Path, labels_dir: str | Path, nc: int) -> list[ImageRecord]:
    """Parse a YOLO txt split: one ``labels/<split>/<stem>.txt`` per image (none = empty)."""
    images_dir, labels_dir = Path(images_dir), Path(labels_dir)
    files = list_images(images_dir)
    if not files:
        raise DataError("no images found", source=images_dir)
    records = []
    for iid, path in enumerate(files, start=1):
        width, height = check_image_file(path)
        label = labels_dir / path.relative_to(images_dir).with_suffix(".txt")
        issues = IssueLog(label)
        boxes, classes, segs = [], [], []
        if label.exists():
            text = read_text_file(label, "label file", max_bytes=MAX_LABEL_BYTES, error=DataError)
            for lineno, line in enumerate(text.splitlines(), start=1):
                if not line.strip():
                    continue
                cls, box, seg = _yolo_line(line, label, lineno, nc, width, height)
                box = _clean_box(box, width, height, issues, f"line {lineno}")
                if box is not None:
                    boxes.append(box)
                    classes.append(cls)
                    segs.append(seg)
        issues.emit()
        records.append(_record(iid, path, width, height, boxes, classes, segs))
    return records


def _yolo_line(
    line: str, label: Path, lineno: int, nc: int, width: int, height: int
) -> tuple[int, np.ndarray, list | None]:
    """One label line: ``class cx cy w h`` or a polygon ``class x1 y1 x2 y2 x3 y3 ...`` (at
    least 3 points, as the reference's segment labels), normalized. Returns the class, the
    xyxy box in pixels (a polygon's extent) and the polygon in pixels (None for a box)."""
    parts = line.split()
    try:
        values = [float(v) for v in parts]
    except ValueError:
        values = []
    polygon = len(values) >= 7 and len(values) % 2 == 1
    if (len(values) != 5 and not polygon) or not all(map(math.isfinite, values)):
        raise DataError(
            "expected 'class cx cy w h' (5 numbers) or a polygon 'class x1 y1 x2 y2 x3 y3 ...', "
            f"got {line.strip()[:80]!r}",
            source=label,
            line=lineno,
        )
    cls = values[0]
    if cls != int(cls) or not 0 <= cls < nc:
        raise DataError(
            f"class {parts[0]} is not an integer in 0..{nc - 1}", source=label, line=lineno
        )
    if polygon:
        seg = polygon_from_normalized(values[1:], width, height)
        pts = np.asarray(seg[0]).reshape(-1, 2)
        return int(cls), np.concatenate([pts.min(0), pts.max(0)]), seg
    cx, cy, w, h = values[1:]
    box = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    return int(cls), box * [width, height, width, height], None


def records_to_coco(
    records: list[ImageRecord], names: list[str], category_ids: list[int], images_dir: Path
) -> dict:
    """A COCO instances dict for the records (bbox area as the area)."""
    images, anns = [], []
    for rec in records:
        images.append(
            {
                "id": rec.id,
                "file_name": rec.path.relative_to(images_dir).as_posix(),
                "width": rec.width,
                "height": rec.height,
            }
        )
        for box, cls in zip(rec.boxes.tolist(), rec.classes.tolist()):
            w, h = box[2] - box[0], box[3] - box[1]
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": rec.id,
                    "category_id": category_ids[cls],
                    "bbox": [round(box[0], 3), round(box[1], 3), round(w, 3), round(h, 3)],
                    "area": round(w * h, 3),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": c, "name": n} for c, n in zip(category_ids, names)]
    return {
        "info": {"description": "converted from YOLO txt labels by scaling_lab"},
        "licenses": [],
        "images": images,
        "annotations": anns,
        "categories": categories,
    }


def write_json_atomic(path: Path, obj) -> None:
    """Write JSON atomically (safe with concurrent writers)."""
    atomic_write_text(path, json.dumps(obj))


def _yolo_names(yaml_file: Path) -> tuple[list[str], dict]:
    import yaml

    text = read_text_file(yaml_file, "dataset file", error=DataError)
    try:
        check_yaml_size(text, str(yaml_file))
        cfg = yaml.safe_load(text) or {}
    except UserError as exc:
        raise DataError(exc.reason, source=yaml_file, line=exc.line, field=exc.field) from None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise DataError(f"not valid YAML: {problem}", source=yaml_file) from None
    if not isinstance(cfg, dict):
        raise DataError("expected a mapping with 'names'", source=yaml_file)
    names = cfg.get("names")
    if isinstance(names, dict):
        keys = sorted(names)
        if keys != list(range(len(keys))):
            raise DataError("'names' keys must be 0..nc-1", source=yaml_file, field="names")
        names = [names[k] for k in keys]
    if not isinstance(names, list) or not names:
        raise DataError("'names' must be a non-empty list", source=yaml_file, field="names")
    if "nc" in cfg and cfg["nc"] != len(names):
        raise DataError(f"nc {cfg['nc']} but {len(names)} names", source=yaml_file, field="nc")
    return [str(n) for n in names], cfg


# --------------------------------------------------------------------------- resolve


def _first_existing(root: Path, candidates: list[str]) -> Path | None:
    for rel in candidates:
        if (root / rel).exists():
            return root / rel
    return None


def _resolve_coco(root: Path) -> DatasetInfo:
    found: dict[str, tuple[Path | None, Path | None]] = {}
    for split in SPLITS:
        ann = _first_existing(
            root, [f"annotations/instances_{split}.json", f"annotations/instances_{split}2017.json"]
        )
        images = _first_existing(
            root, [f"images/{split}", f"images/{split}2017", f"{split}2017", split]
        )
        found[split] = (ann, images)
    val_ann, val_images = found["val"]
    if val_ann is None or val_images is None:
        raise DataError(
            "COCO layout needs annotations/instances_val.json and images/val/", source=root
        )
    val_records, cats = parse_coco(val_ann, val_images)
    train_ann, train_images = found["train"]
    info = DatasetInfo(
        root=root,
        nc=len(cats),
        names=[n for _, n in cats],
        train_images=train_images if train_ann else None,
        val_images=val_images,
        train_ann=train_ann if train_images else None,
        val_ann=val_ann,
        format="coco",
        category_ids=[c for c, _ in cats],
    )
    info._records["val"] = val_records
    return info


def _resolve_yolo(root: Path, yaml_file: Path, cache_dir: Path | None) -> DatasetInfo:
    names, _cfg = _yolo_names(yaml_file)
    split_dirs = {s: root / "images" / s for s in SPLITS}
    if not split_dirs["val"].is_dir():
        raise DataError("YOLO layout needs images/val/ (and labels/val/)", source=root)
    category_ids = list(range(1, len(names) + 1))
    info = DatasetInfo(
        root=root,
        nc=len(names),
        names=names,
        train_images=split_dirs["train"] if split_dirs["train"].is_dir() else None,
        val_images=split_dirs["val"],
        train_ann=None,
        val_ann=None,
        format="yolo",
        category_ids=category_ids,
    )
    records = info.records("val")
    key = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]
    val_ann = (
        (cache_dir or cache_root()) / "yolo-coco" / f"{root.name}-{key}" / "instances_val.json"
    )
    write_json_atomic(val_ann, records_to_coco(records, names, category_ids, split_dirs["val"]))
    info.val_ann = val_ann
    return info


def check_data_ref(data: str | Path) -> None:
    """What ``resolve_data`` refuses first, without parsing any annotations: synth
    parameters in range, or an existing folder / data.yaml in a known layout (a sweep checks
    this before any trial starts)."""
    text = str(data)
    if text == "synth" or text.startswith("synth:"):
        from scaling_lab.data.synth import check_synth_params, parse_synth_params

        check_synth_params(**parse_synth_params(text))
        return
    path = Path(text).expanduser()
    # os.path: False, not OSError, for a name too long
    if os.path.isfile(path) and path.suffix in (".yaml", ".yml"):
        return
    if not os.path.isdir(path):
        raise DataError("no such dataset folder (or 'synth')", source=path)
    if not os.path.isdir(path / "annotations") and not os.path.isdir(path / "labels"):
        raise DataError(
            "not a dataset: expected annotations/ (COCO layout) or labels/ + data.yaml (YOLO)",
            source=path,
        )


def resolve_data(data: str | Path, *, cache_dir: Path | None = None) -> DatasetInfo:
    """A dataset name or folder -> DatasetInfo.

    ``synth`` (or ``synth:images=300,size=320,seed=1,val_fraction=0.2``): the synthetic shapes
    set, made on first use under ``cache_dir`` (default ``$SCALING_LAB_CACHE`` or
    ``~/.cache/scaling_lab``) in a folder named by the generator version and the parameters.
    A folder: COCO layout (``annotations/``) or YOLO txt layout (``labels/`` + ``data.yaml``);
    a ``data.yaml`` path means its folder.
    """
    text = str(data)
    if text == "synth" or text.startswith("synth:"):
        from scaling_lab.data.synth import ensure_synth, parse_synth_params

        root = ensure_synth(cache_dir or cache_root(), **parse_synth_params(text))
        return _resolve_coco(root)
    path = Path(text).expanduser()
    if os.path.isfile(path) and path.suffix in (".yaml", ".yml"):
        return _resolve_yolo(path.parent, path, cache_dir)
    if not os.path.isdir(path):
        raise DataError("no such dataset folder (or 'synth')", source=path)
    if os.path.isdir(path / "annotations"):
        return _resolve_coco(path)
    if os.path.isdir(path / "labels"):
        for name in ("data.yaml", "data.yml", "dataset.yaml"):
            if os.path.isfile(path / name):
                return _resolve_yolo(path, path / name, cache_dir)
        raise DataError("YOLO layout needs a data.yaml with the class names", source=path)
    raise DataError(
        "not a dataset: expected annotations/ (COCO layout) or labels/ + data.yaml (YOLO)",
        source=path,
    )
