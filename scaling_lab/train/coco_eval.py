"""COCO evaluation: non-maximum suppression, mapping boxes back to the original images,
COCO-format predictions and pycocotools' COCOeval (AP at IoU .50:.95, .50, .75, per size).

The reference protocol (its test.py): confidence threshold 0.001, NMS IoU 0.65, at most 300
boxes per image, one box per (anchor, class) above the threshold (multi-label), score =
objectness x class probability; boxes are mapped from the letterboxed input back to the
original image and clipped to it.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import batched_nms

METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
RECALL_KEYS = ("AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def xywh_to_xyxy(x: torch.Tensor) -> torch.Tensor:
    half = x[..., 2:4] / 2
    return torch.cat([x[..., :2] - half, x[..., :2] + half], -1)


def non_max_suppression(
    pred: torch.Tensor,
    conf_thres: float = 0.001,
    iou_thres: float = 0.65,
    max_det: int = 300,
    multi_label: bool = True,
    max_candidates: int = 30000,
) -> list[torch.Tensor]:
    """Per-class NMS on decoded predictions.

    ``pred``: (B, N, 5 + nc) with cx, cy, w, h (pixels), objectness and class probabilities
    (after sigmoid), as the Detect head gives in eval mode. Returns one (n, 6) tensor per
    image: x1, y1, x2, y2, score, class, sorted by score. The score is obj x cls; with one
    class it is the objectness alone (the reference trains no class term then).
    ``multi_label`` keeps every class above ``conf_thres`` for a box, else only the best.
    At most ``max_candidates`` boxes (the highest scores) enter NMS, as in the reference.
    """
    if pred.dim() != 3 or pred.shape[-1] < 6:
        raise ValueError(f"expected predictions (B, N, 5 + nc), got {tuple(pred.shape)}")
    nc = pred.shape[-1] - 5
    out = []
    for x in pred:
        x = x[x[:, 4] > conf_thres].float()
        if not len(x):
            out.append(x.new_zeros((0, 6)))
            continue
        scores = x[:, 4:5] if nc == 1 else x[:, 5:] * x[:, 4:5]
        boxes = xywh_to_xyxy(x[:, :4])
        if multi_label and nc > 1:
            i, j = (scores > conf_thres).nonzero(as_tuple=True)
            det = torch.cat([boxes[i], scores[i, j, None], j[:, None].float()], 1)
        else:
            conf, j = scores.max(1, keepdim=True)
            det = torch.cat([boxes, conf, j.float()], 1)[conf.view(-1) > conf_thres]
        det = det[det[:, 4].argsort(descending=True)[:max_candidates]]
        out.append(_nms_top(det, iou_thres, max_det))
    return out


def _nms_top(det: torch.Tensor, iou_thres: float, max_det: int) -> torch.Tensor:
    """The ``max_det`` best boxes that survive per-class greedy NMS, found on a growing prefix
    of the score-sorted ``det``.

    Greedy NMS keeps a box iff no kept higher-scoring box of its class overlaps it, so NMS of
    the best ``k`` boxes equals full NMS restricted to them; once that keeps ``max_det`` boxes
    the answer is final. This is exact, and it spares an untrained model's tens of thousands
    of candidates (seconds per image on a CPU).
    """
    k = max(10 * max_det, 1000)
    while True:
        head = det[:k]
        keep = batched_nms(head[:, :4], head[:, 4], head[:, 5].long(), iou_thres)
        if len(keep) >= max_det or k >= len(det):
            return head[keep[:max_det]]
        k *= 4


def scale_to_original(det: torch.Tensor, shape: tuple[int, int, float, float, float]) -> np.ndarray:
    """Letterboxed xyxy (n, 4+) -> original-image xyxy (n, 4), clipped to the image."""
    h0, w0, ratio, pad_w, pad_h = shape
    boxes = det[:, :4].detach().cpu().double().numpy().copy()
    boxes[:, [0, 2]] = ((boxes[:, [0, 2]] - pad_w) / ratio).clip(0, w0)
    boxes[:, [1, 3]] = ((boxes[:, [1, 3]] - pad_h) / ratio).clip(0, h0)
    return boxes


def to_coco_json(
    dets: list[torch.Tensor], image_ids: list[int], shapes: list, class_ids: list[int]
) -> list[dict]:
    """Per-image NMS outputs -> COCO result dicts (bbox x, y, w, h in original pixels)."""
    results = []
    for det, image_id, shape in zip(dets, image_ids, shapes):
        if not len(det):
            continue
        boxes = scale_to_original(det, shape)
        scores = det[:, 4].tolist()
        classes = det[:, 5].long().tolist()
        for (x1, y1, x2, y2), score, cls in zip(boxes.tolist(), scores, classes):
            results.append(
                {
                    "image_id": int(image_id),
                    "category_id": int(class_ids[cls]),
                    "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
                    "score": round(score, 5),
                }
            )
    return results


def coco_metrics(
    ann_file: str | Path | object,
    results: list[dict],
    image_ids: list[int] | None = None,
    *,
    verbose: bool = False,
) -> dict:
    """COCOeval (bbox) of ``results`` against the ground truth.

    ``ann_file``: a COCO instances file or a loaded ``pycocotools.coco.COCO``. Only
    ``image_ids`` are scored (default: every image in the file). Returns ``METRIC_KEYS`` and
    ``RECALL_KEYS`` as fractions; a size range without ground truth gives NaN (COCOeval's -1);
    no predictions give zeros.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    quiet = contextlib.redirect_stdout(io.StringIO())
    if isinstance(ann_file, COCO):
        gt = ann_file
    else:
        with quiet:
            gt = COCO(str(ann_file))
    if image_ids is None:
        image_ids = gt.getImgIds()
    if not results or not image_ids:
        return dict.fromkeys(METRIC_KEYS + RECALL_KEYS, 0.0)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        dt = gt.loadRes([dict(r) for r in results])  # loadRes adds keys to its input
        ev = COCOeval(gt, dt, "bbox")
        ev.params.imgIds = sorted(set(image_ids))
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    if verbose:
        print(out.getvalue().split("DONE", 1)[-1].split("\n", 1)[-1], end="")
    stats = [float(v) if v >= 0 else float("nan") for v in ev.stats]
    return dict(zip(METRIC_KEYS + RECALL_KEYS, stats))


def _class_ids(loader, gt) -> list[int]:
    ids = getattr(getattr(loader, "dataset", None), "category_ids", None)
    return list(ids) if ids is not None else sorted(gt.getCatIds())


def evaluate(
    model: torch.nn.Module,
    loader,
    ann_file: str | Path,
    *,
    conf_thres: float = 0.001,
    iou_thres: float = 0.65,
    device: str | torch.device = "cpu",
    half: bool = False,
    class_ids: list[int] | None = None,
    save_json: Path | None = None,
    progress: bool = True,
    max_det: int = 300,
) -> dict:
    """COCO AP of ``model`` on the images of ``loader`` (a val loader: letterbox, no shuffle).

    The model must already be on ``device``; it runs in eval mode (its mode is restored after)
    and must return decoded (B, N, 5 + nc) predictions (a tuple's first element is taken).
    ``half`` runs under fp16 autocast on CUDA. ``class_ids[i]`` is the COCO category id of
    class index ``i`` (default: the loader's dataset's ``category_ids``, else the file's
    sorted category ids). ``save_json`` writes the COCO-format predictions.

    Returns ``{"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", ..., "n_images",
    "n_predictions"}``; AP values are fractions (0..1).
    """
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_file))
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

        batches = tqdm(loader, desc="eval", leave=False)
    try:
        with torch.inference_mode(), torch.autocast(device.type, enabled=use_amp):
            for images, _targets, image_ids, shapes in batches:
                pred = model(images.to(device, non_blocking=True))
                if isinstance(pred, list | tuple):
                    pred = pred[0]
                nc = pred.shape[-1] - 5
                if nc != len(class_ids):
                    raise ValueError(
                        f"the model predicts {nc} classes but the dataset has {len(class_ids)}"
                    )
                dets = non_max_suppression(
                    pred.float(), conf_thres=conf_thres, iou_thres=iou_thres, max_det=max_det
                )
                results += to_coco_json(dets, image_ids, shapes, class_ids)
                seen += [int(i) for i in image_ids]
    finally:
        model.train(was_training)
    if save_json is not None:
        Path(save_json).parent.mkdir(parents=True, exist_ok=True)
        Path(save_json).write_text(json.dumps(results))
    metrics = coco_metrics(gt, results, seen, verbose=progress)
    metrics.update(n_images=len(seen), n_predictions=len(results))
    return metrics
