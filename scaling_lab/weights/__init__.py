"""Weights from the public reference implementation (WongKinYiu/yolov7): its checkpoints read
without running their code, mapped onto our models by aligning the two layer graphs."""

from scaling_lab.weights.convert import (
    ConvertedWeights,
    convert_weights,
    map_reference_weights,
    write_checkpoint,
)
from scaling_lab.weights.errors import AlignmentError, ReferenceCheckpointError
from scaling_lab.weights.unpickle import ReferenceWeights, read_reference_checkpoint

__all__ = [
    "AlignmentError",
    "ConvertedWeights",
    "ReferenceCheckpointError",
    "ReferenceWeights",
    "convert_weights",
    "map_reference_weights",
    "read_reference_checkpoint",
    "write_checkpoint",
]
