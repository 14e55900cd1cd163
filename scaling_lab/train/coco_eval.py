"""COCO evaluation: NMS'd boxes mapped back to the original images, COCO-format predictions
and COCOeval (AP at IoU .50:.95, .50, .75, per size).

COCOeval runs through faster-coco-eval (``evaluator="faster"``, the default: pycocotools'
algorithm with its per-image matching and accumulation in C++, several times faster) or
pycocotools itself (``evaluator="pycocotools"``, the reference). Both give identical AP on the
project's predictions (tests/train/test_coco_eval_faster.py); benchmarks/coco_eval_speed.py
times them side by side.

The reference protocol (its test.py): ``nn.postprocess.non_max_suppression`` at its defaults
(confidence 0.001, IoU 0.65, at most 300 boxes per image, multi-label, score = objectness x
class probability), the NMS ``lab bench --nms`` times; boxes are mapped from the letterboxed
input back to the original image and clipped to it.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import torch

from scaling_lab.data.augment import boxes_from_letterbox
from scaling_lab.errors import UserError
from scaling_lab.eval_protocol import AP_KEYS, CONF_THRES, IOU_THRES, MAX_DET, RECALL_KEYS
from scaling_lab.nn import postprocess


def scale_to_original(det: torch.Tensor, shape: tuple[int, int, float, float, float]) -> np.ndarray:
    """Letterboxed xyxy (n, 4+) -> original-image xyxy (n, 4), clipped to the image."""
    h0, w0, ratio, pad_w, pad_h = shape
    boxes = det[:, :4].detach().cpu().double().numpy()
    return boxes_from_letterbox(boxes, ratio, (pad_w, pad_h), shape=(h0, w0))


def round_like_python(values: np.ndarray, digits: int) -> np.ndarray:
    """``round(v, digits)`` of each value, as Python rounds a float (the decimal nearest to
    the float's exact value, ties to even), vectorized: a COCO result file holds tens of
    thousands of boxes, and rounding them one by one was a fifth of an evaluation.

    numpy's ``rint(v * 10**digits) / 10**digits`` gives the same float except where the
    product's own rounding error could carry it across a half; those few values (a scaled
    value within 1e-9 relative of a half) are rounded by ``round`` itself."""
    scale = 10.0**digits
    scaled = values * scale
    rounded = np.rint(scaled) / scale
    distance_to_half = np.abs(np.abs(scaled - np.trunc(scaled)) - 0.5)
    near_half = distance_to_half <= 1e-9 * np.maximum(1.0, np.abs(scaled))
    for index in zip(*np.nonzero(near_half), strict=True):
        rounded[index] = round(float(values[index]), digits)
    return rounded


def to_coco_json(
    dets: list[torch.Tensor], image_ids: list[int], shapes: list, class_ids: list[int]
) -> list[dict]:
    """Per-image NMS outputs -> COCO result dicts (bbox x, y, w, h in original pixels,
    rounded to 3 decimals, scores to 5, as the reference writes them)."""
    results = []
    for det, image_id, shape in zip(dets, image_ids, shapes):
        if not len(det):
            continue
        boxes = scale_to_original(det, shape)
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:4] - boxes[:, :2]], axis=1)
        bboxes = round_like_python(xywh, 3).tolist()
        scores = round_like_python(det[:, 4].detach().cpu().double().numpy(), 5).tolist()
        categories = [int(class_ids[c]) for c in det[:, 5].long().tolist()]
        image = int(image_id)
        results += [
            {"image_id": image, "category_id": category, "bbox": bbox, "score": score}
            for bbox, score, category in zip(bboxes, scores, categories, strict=True)
        ]
    return results


EVALUATORS = ("faster", "pycocotools")
DEFAULT_EVALUATOR = "faster"


def _api(evaluator: str) -> tuple[type, type]:
    """(COCO, COCOeval) classes of an evaluator."""
    if evaluator == "faster":
        import faster_coco_eval

        return faster_coco_eval.COCO, faster_coco_eval.COCOeval_faster
    if evaluator == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return COCO, COCOeval
    raise UserError(
        f"unknown COCO evaluator '{evaluator}' (known: {', '.join(EVALUATORS)})",
        field="evaluator",
    )


def load_gt(ann_file: str | Path | object, evaluator: str = DEFAULT_EVALUATOR) -> object:
    """The ground truth as the evaluator's COCO object: read from a file, or taken from a
    loaded COCO of either library (the other library's is rebuilt from its ``dataset``)."""
    coco_cls, _ = _api(evaluator)
    if isinstance(ann_file, coco_cls):
        return ann_file
    source = getattr(ann_file, "dataset", None)
    with contextlib.redirect_stdout(io.StringIO()):
        if isinstance(source, dict):
            gt = coco_cls()
            gt.dataset = copy.deepcopy(source)
            gt.createIndex()
            return gt
        return coco_cls(str(ann_file))


def coco_metrics(
    ann_file: str | Path | object,
    results: list[dict],
    image_ids: list[int] | None = None,
    *,
    verbose: bool = False,
    evaluator: str = DEFAULT_EVALUATOR,
) -> dict:
    """COCOeval (bbox) of ``results`` against the ground truth.

    ``ann_file``: a COCO instances file or a loaded COCO object (pycocotools' or
    faster-coco-eval's). Only ``image_ids`` are scored (default: every image in the file).
    ``evaluator``: ``faster`` (faster-coco-eval) or ``pycocotools``. Returns ``AP_KEYS`` and
    ``RECALL_KEYS`` as fractions; a size range without ground truth gives NaN (COCOeval's -1);
    no predictions give zeros.
    """
    _, cocoeval_cls = _api(evaluator)
    gt = load_gt(ann_file, evaluator)
    if image_ids is None:
        image_ids = gt.getImgIds()
    if not results or not image_ids:
        return dict.fromkeys(AP_KEYS + RECALL_KEYS, 0.0)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        dt = gt.loadRes([dict(r) for r in results])  # loadRes adds keys to its input
        # faster-coco-eval logs through print_function: to stdout, as pycocotools prints
        extra = {"print_function": print} if evaluator == "faster" else {}
        ev = cocoeval_cls(gt, dt, "bbox", **extra)
        ev.params.imgIds = sorted(set(image_ids))
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    if verbose:
        print(out.getvalue().split("DONE", 1)[-1].split("\n", 1)[-1], end="")
    keys = AP_KEYS + RECALL_KEYS  # faster-coco-eval may append more stats: not used
    stats = [float(v) if v >= 0 else float("nan") for v in ev.stats[: len(keys)]]
    return dict(zip(keys, stats))


def _class_ids(loader, gt) -> list[int]:
    ids = getattr(getattr(loader, "dataset", None), "category_ids", None)
    return list(ids) if ids is not None else sorted(gt.getCatIds())


def _predict(model: torch.nn.Module, images: torch.Tensor, n_classes: int) -> torch.Tensor:
    """The decoded (B, N, 5 + nc) float32 predictions of a batch (a tuple's first element);
    a class count other than the dataset's is refused."""
    pred = model(images)
    if isinstance(pred, list | tuple):
        pred = pred[0]
    nc = pred.shape[-1] - 5
    if nc != n_classes:
        raise UserError(f"the model predicts {nc} classes but the dataset has {n_classes}")
    return pred.float()


def evaluate(
    model: torch.nn.Module,
    loader,
    ann_file: str | Path,
    *,
    conf_thres: float = CONF_THRES,
    iou_thres: float = IOU_THRES,
    device: str | torch.device = "cpu",
    half: bool = False,
    class_ids: list[int] | None = None,
    save_json: Path | None = None,
    progress: bool = True,
    max_det: int = MAX_DET,
    evaluator: str = DEFAULT_EVALUATOR,
) -> dict:
    """COCO AP of ``model`` on the images of ``loader`` (a val loader: letterbox, no shuffle).

    The model must already be on ``device``; it runs in eval mode (its mode is restored after)
    and must return decoded (B, N, 5 + nc) predictions (a tuple's first element is taken).
    ``half`` runs under fp16 autocast on CUDA. ``class_ids[i]`` is the COCO category id of
    class index ``i`` (default: the loader's dataset's ``category_ids``, else the file's
    sorted category ids). ``save_json`` writes the COCO-format predictions. ``evaluator``:
    ``faster`` (faster-coco-eval, the default) or ``pycocotools`` (the reference).

    Returns ``AP_KEYS``, ``RECALL_KEYS``, ``n_images`` and ``n_predictions``; AP values are
    fractions (0..1).
    """
    gt = load_gt(ann_file, evaluator)
    class_ids = list(class_ids) if class_ids is not None else _class_ids(loader, gt)
    device = torch.device(device)
    use_amp = half and device.type == "cuda"
    results: list[dict] = []
    seen: list[int] = []
    was_training = model.training
    model.eval()
    batches = loader
    if progress:
        from tqdm import tqdm

        batches = tqdm(loader, desc="eval", leave=False, disable=None)  # terminals only
    try:
        with torch.inference_mode(), torch.autocast(device.type, enabled=use_amp):
            for images, _targets, image_ids, shapes in batches:
                pred = _predict(model, images.to(device, non_blocking=True), len(class_ids))
                dets = postprocess.non_max_suppression(
                    pred, conf_thres=conf_thres, iou_thres=iou_thres, max_det=max_det
                )
                results += to_coco_json(dets, image_ids, shapes, class_ids)
                seen += [int(i) for i in image_ids]
    finally:
        model.train(was_training)
    if save_json is not None:
        Path(save_json).parent.mkdir(parents=True, exist_ok=True)
        Path(save_json).write_text(json.dumps(results))
    metrics = coco_metrics(gt, results, seen, verbose=progress, evaluator=evaluator)
    metrics.update(n_images=len(seen), n_predictions=len(results))
    return metrics
