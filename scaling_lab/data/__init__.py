"""Datasets for training and evaluation: resolve a dataset, build its loaders, the recipe.

``resolve_data("synth" | folder)`` -> ``DatasetInfo``; ``build_dataloader(info, split, ...)``
-> a DataLoader of ``(images, targets, image_ids, shapes)``; ``default_hyp("tiny"|"p5"|"p6")``
-> the reference recipe; ``make_synth`` / ``synth_stats`` for the synthetic shapes set.

``build_dataloader`` (and the dataset module) import torch on first use only, so resolving a
dataset or writing the synthetic set does not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scaling_lab.data.errors import DataError, DataWarning
from scaling_lab.data.hyp import default_hyp
from scaling_lab.data.sources import DatasetInfo, ImageRecord, cache_root, resolve_data
from scaling_lab.data.synth import make_synth, synth_stats

if TYPE_CHECKING:
    from scaling_lab.data.dataset import DetectionDataset, build_dataloader

__all__ = [
    "DataError",
    "DataWarning",
    "DatasetInfo",
    "DetectionDataset",
    "ImageRecord",
    "build_dataloader",
    "cache_root",
    "default_hyp",
    "make_synth",
    "resolve_data",
    "synth_stats",
]


def __getattr__(name: str):
    if name in ("build_dataloader", "DetectionDataset"):
        from scaling_lab.data import dataset

        return getattr(dataset, name)
    raise AttributeError(f"module 'scaling_lab.data' has no attribute '{name}'")
