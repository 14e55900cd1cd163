"""The names a training run chooses between, declared once and torch-free: TrainConfig's field
types, the loss's and optimizer's checks and ``lab train``'s flag choices all read them here."""

from __future__ import annotations

from typing import Literal, get_args

OptimizerKind = Literal["sgd", "adam", "adamw"]  # the paper's Nesterov SGD, or Adam / AdamW
OPTIMIZERS: tuple[str, ...] = get_args(OptimizerKind)

AuxAssigner = Literal["independent", "lead_guided", "coarse_to_fine"]  # paper §4.2
AUX_ASSIGNERS: tuple[str, ...] = get_args(AuxAssigner)

# the reference's pooled assignment, or each target within its own prior (loss.py)
AssignMode = Literal["own_prior", "reference"]
ASSIGN_MODES: tuple[str, ...] = get_args(AssignMode)

LrSchedule = Literal["cosine", "linear"]
LR_SCHEDULES: tuple[str, ...] = get_args(LrSchedule)
