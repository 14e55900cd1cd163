"""Primitive ops: each declares its shape rule, count, fused form and torch form in one class.

Torch is imported only when an op is built (``scaling_lab.ops.modules``, ``.fusion``).
"""

from scaling_lab.ops.base import (
    FREE,
    REFERENCE_ANCHORS,
    REFERENCE_OWN,
    Op,
    OpCount,
    Port,
    ReferenceNaming,
    Shape,
    TorchCall,
)
from scaling_lab.ops.conv import BatchNormAct, Conv, RepConv
from scaling_lab.ops.head import Detect, Outputs
from scaling_lab.ops.layout import (
    Add,
    Chunk,
    Concat,
    GlobalAvgPool,
    GroupConcat,
    MaxPool,
    Merge,
    Mul,
    Reorg,
    Upsample,
)

__all__ = [
    "FREE",
    "REFERENCE_ANCHORS",
    "REFERENCE_OWN",
    "Add",
    "BatchNormAct",
    "Chunk",
    "Concat",
    "Conv",
    "Detect",
    "GlobalAvgPool",
    "GroupConcat",
    "MaxPool",
    "Merge",
    "Mul",
    "Op",
    "OpCount",
    "Outputs",
    "Port",
    "ReferenceNaming",
    "Reorg",
    "RepConv",
    "Shape",
    "TorchCall",
    "Upsample",
]
