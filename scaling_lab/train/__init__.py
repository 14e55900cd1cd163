"""Training: the run's settings (``config.TrainConfig``, torch-free), the trainer, the loss
and its label assignment, the evaluator. ``ModelEMA`` loads torch on first use only, so the
CLI can read the settings at start-up."""

from __future__ import annotations

from typing import Any

__all__ = ["ModelEMA"]


def __getattr__(name: str) -> Any:
    if name == "ModelEMA":
        from scaling_lab.train.ema import ModelEMA

        return ModelEMA
    raise AttributeError(f"module 'scaling_lab.train' has no attribute '{name}'")
