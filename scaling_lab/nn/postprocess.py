"""Post-processing of decoded YOLO output: the one NMS, its default thresholds, box helpers.

Evaluation (``train.coco_eval``) and the latency benchmark (``lab bench --nms``) both call
``non_max_suppression`` here, so the NMS that is timed is the NMS that is scored. The rule is
the reference's evaluation (its test.py): boxes with objectness above ``conf_thres`` enter;
every (box, class) pair whose score (objectness x class probability; with one class the
objectness alone) is above ``conf_thres`` is a candidate (multi-label); at most
``MAX_CANDIDATES`` of the best candidates go through per-class greedy NMS at ``iou_thres``
(``torchvision.ops.batched_nms``); at most ``max_det`` boxes are kept per image.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from scaling_lab.eval_protocol import CONF_THRES, IOU_THRES, MAX_CANDIDATES, MAX_DET


def xywh_corners(boxes: Tensor) -> tuple[Tensor, Tensor]:
    """Top-left and bottom-right corners of (..., 4) centre/size boxes (cx, cy, w, h)."""
    xy, half = boxes[..., :2], boxes[..., 2:4] / 2
    return xy - half, xy + half


def xywh_to_xyxy(boxes: Tensor) -> Tensor:
    """(..., 4) centre/size (cx, cy, w, h) -> corners (x1, y1, x2, y2)."""
    return torch.cat(xywh_corners(boxes), -1)


def _check_pred(pred: Tensor) -> None:
    if pred.dim() != 3 or pred.shape[-1] < 6:
        raise ValueError(f"expected predictions (B, N, 5 + nc), got {tuple(pred.shape)}")


def candidates(x: Tensor, conf_thres: float, multi_label: bool = True) -> Tensor:
    """One image's NMS candidates (n, 6): x1, y1, x2, y2, score, class, in anchor order.

    ``x``: (N, 5 + nc) decoded rows. ``multi_label`` makes one candidate per class above
    ``conf_thres``; otherwise a box's best class only.
    """
    nc = x.shape[1] - 5
    x = x[x[:, 4] > conf_thres].float()
    scores = x[:, 4:5] if nc == 1 else x[:, 5:] * x[:, 4:5]
    boxes = xywh_to_xyxy(x[:, :4])
    if multi_label and nc > 1:
        i, j = (scores > conf_thres).nonzero(as_tuple=True)
        return torch.cat([boxes[i], scores[i, j, None], j[:, None].float()], 1)
    conf, j = scores.max(1, keepdim=True)
    return torch.cat([boxes, conf, j.float()], 1)[conf.view(-1) > conf_thres]


def count_candidates(pred: Tensor, conf_thres: float = CONF_THRES) -> int:
    """How many candidates of the batch ``pred`` (B, N, 5 + nc) enter NMS (before the
    ``MAX_CANDIDATES`` cap), under the same rule as ``non_max_suppression``."""
    _check_pred(pred)
    return sum(len(candidates(x, conf_thres)) for x in pred)


def non_max_suppression(
    pred: Tensor,
    conf_thres: float = CONF_THRES,
    iou_thres: float = IOU_THRES,
    max_det: int = MAX_DET,
    multi_label: bool = True,
    max_candidates: int = MAX_CANDIDATES,
) -> list[Tensor]:
    """Per-class NMS on decoded predictions.

    ``pred``: (B, N, 5 + nc) with cx, cy, w, h (pixels), objectness and class probabilities
    (after sigmoid), as the Detect head gives in eval mode. Returns one (n, 6) tensor per
    image: x1, y1, x2, y2, score, class, sorted by score (rule: the module docstring).
    """
    _check_pred(pred)
    out = []
    for x in pred:
        det = candidates(x, conf_thres, multi_label)
        if not len(det):
            out.append(det.new_zeros((0, 6)))
            continue
        det = det[det[:, 4].argsort(descending=True)[:max_candidates]]
        out.append(nms_top(det, iou_thres, max_det))
    return out


def nms_top(det: Tensor, iou_thres: float, max_det: int) -> Tensor:
    """The ``max_det`` best boxes that survive per-class greedy NMS, found on a growing prefix
    of the score-sorted ``det`` (n, 6).

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
