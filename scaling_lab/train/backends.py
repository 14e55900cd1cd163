"""The data, loss and evaluation functions the trainer calls; the real ones load lazily.

Tests (and experiments) swap any of them for their own by passing a ``Backends`` with that
field set; a field left ``None`` is imported from ``scaling_lab.data``,
``scaling_lab.train.heads`` (the loss of the model's head family) or
``scaling_lab.train.coco_eval`` on first use.

Interfaces:

- ``resolve_data(data) -> info``: ``info.nc`` (classes), optionally ``info.names`` and the
  COCO annotation file of a split (see ``ann_file``);
- ``build_dataloader(info, split, *, img_size, batch_size, augment, hyp, workers, seed,
  shuffle, rank, world_size)``: an iterable with ``len()`` of ``(images (B,3,H,W) float in
  [0, 1], targets (N, 6) [img, cls, cx, cy, w, h] normalized, image_ids, shapes)``;
- ``default_hyp(model_size) -> dict``, ``model_size`` in ``tiny``, ``p5``, ``p6``;
- ``criterion(model, hyp, *, aux_assigner, aux_constraint, aux_weight, assign)`` (left
  ``None``, the trainer takes the loss of the model's head family, ``train/heads``): a callable
  ``(outputs, targets, images) -> (loss, items)``, ``items`` = detached [box, obj, cls,
  total]; ``loss`` is summed over the batch (scaled by the batch size, as the reference);
- ``evaluate(model, loader, ann_file, *, conf_thres, iou_thres, device, half, save_json,
  progress) -> {"AP", "AP50", "AP75", "APs", "APm", "APl", ...}``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class Backends:
    resolve_data: Callable[..., Any] | None = None
    build_dataloader: Callable[..., Any] | None = None
    default_hyp: Callable[[str], dict] | None = None
    criterion: Callable[..., Any] | None = None
    evaluate: Callable[..., dict] | None = None

    def get_resolve_data(self) -> Callable[..., Any]:
        if self.resolve_data is None:
            from scaling_lab.data import resolve_data

            self.resolve_data = resolve_data
        return self.resolve_data

    def get_build_dataloader(self) -> Callable[..., Any]:
        if self.build_dataloader is None:
            from scaling_lab.data import build_dataloader

            self.build_dataloader = build_dataloader
        return self.build_dataloader

    def get_default_hyp(self) -> Callable[[str], dict]:
        if self.default_hyp is None:
            from scaling_lab.data import default_hyp

            self.default_hyp = default_hyp
        return self.default_hyp

    def get_criterion(self) -> Callable[..., Any]:
        if self.criterion is None:
            from scaling_lab.train.heads import build_loss

            self.criterion = build_loss
        return self.criterion

    def get_evaluate(self) -> Callable[..., dict]:
        if self.evaluate is None:
            from scaling_lab.train.coco_eval import evaluate

            self.evaluate = evaluate
        return self.evaluate


_ANN_ATTRS = ("{split}_ann", "{split}_ann_file", "ann_{split}")


def ann_file(info: Any, split: str = "val") -> Any:
    """The COCO annotation file of ``split`` from a dataset info: ``info.ann_file(split)``
    if it is a method, else ``info.ann_files[split]``, ``info.<split>_ann``,
    ``info.<split>_ann_file``, ``info.ann_<split>`` or ``info.ann_file``; None if none."""
    method = getattr(info, "ann_file", None)
    if callable(method):
        return method(split)
    files = getattr(info, "ann_files", None)
    if isinstance(files, dict) and split in files:
        return files[split]
    for pattern in _ANN_ATTRS:
        value = getattr(info, pattern.format(split=split), None)
        if value is not None:
            return value
    return method
