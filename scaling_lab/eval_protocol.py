"""The evaluation protocol's numbers, declared once (plain Python, importable from anywhere).

The NMS settings are those of the reference's COCO mAP protocol; the metric names are
COCOeval's summary figures in its order. Evaluation, ``lab bench --nms``, training logs,
sweep rows and report tables all read them from here.
"""

from __future__ import annotations

CONF_THRES = 0.001  # the mAP protocol's confidence threshold
IOU_THRES = 0.65  # the mAP protocol's NMS IoU threshold
MAX_DET = 300  # boxes kept per image
MAX_CANDIDATES = 30000  # best candidates per image that enter NMS

AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")  # COCOeval's AP figures, in its order
RECALL_KEYS = ("AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
