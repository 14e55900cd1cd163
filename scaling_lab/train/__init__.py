"""Training utilities (weight averaging, ...)."""

from scaling_lab.train.ema import ModelEMA

__all__ = ["ModelEMA"]
