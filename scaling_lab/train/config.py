"""What a training run depends on besides the code (``TrainConfig``, stored in every
checkpoint), and the recipe's adjustments to the model: default-hyperparameter size and the
loss-gain scaling of the reference's train.py."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, get_args

from torch import nn

from scaling_lab.eval_protocol import CONF_THRES, IOU_THRES
from scaling_lab.schema import FieldError

AuxAssigner = Literal["independent", "lead_guided", "coarse_to_fine"]
AUX_ASSIGNERS = get_args(AuxAssigner)


@dataclass
class TrainConfig:
    """Everything a run depends on besides the code; stored in its checkpoints."""

    model: str  # zoo name or spec path
    data: str  # dataset directory or "synth"
    out: str = "runs/train/exp"
    img_size: int | None = None  # default: the spec's
    nc: int | None = None  # default: the dataset's
    epochs: int = 300
    batch_size: int = 16  # total over all ranks
    nominal_batch: int = 64  # gradients accumulate to this many images per optimizer step
    aux_assigner: AuxAssigner = "coarse_to_fine"
    aux_constraint: bool = True
    aux_weight: float = 0.25
    device: str | None = None  # default: cuda if available
    seed: int = 0
    workers: int = 0
    deterministic: bool = False  # torch.use_deterministic_algorithms(True, warn_only=True)
    amp: bool | None = None  # default: on for CUDA
    schedule: Literal["cosine", "linear"] = "cosine"
    warmup_min_steps: int = 1000  # the reference warms up for at least 1000 steps
    ema_decay: float = 0.9999
    ema_tau: float = 2000.0
    hyp: dict[str, Any] = field(default_factory=dict)  # overrides of default_hyp(model size)
    eval_every: int = 1  # evaluate every K epochs (0: last epoch only); always the last one
    eval_fused: bool = False  # also evaluate reparameterize(EMA)
    save_every: int = 0  # mid-epoch checkpoint every N steps (0: epoch ends only)
    conf_thres: float = CONF_THRES
    iou_thres: float = IOU_THRES
    tensorboard: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        """Refuse values the types allow (``FieldError``, a ValueError: ``scaling_lab.schema``
        names the experiment file's key when it builds a config)."""
        if self.aux_assigner not in AUX_ASSIGNERS:
            raise FieldError(
                "aux_assigner",
                f"aux_assigner must be one of {', '.join(AUX_ASSIGNERS)}, got {self.aux_assigner}",
            )
        for name in ("epochs", "batch_size", "nominal_batch"):
            if getattr(self, name) < 1:
                raise FieldError(name, f"must be >= 1, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def scale_loss_gains(hyp: dict, *, n_levels: int, nc: int, img_size: int) -> dict:
    """The reference's loss-gain scaling (train.py): box by 3 / levels, cls by classes / 80
    and 3 / levels, obj by (img / 640)^2 and 3 / levels. The criterion gets the scaled copy."""
    out = dict(hyp)
    if "box" in out:
        out["box"] = out["box"] * 3.0 / n_levels
    if "cls" in out:
        out["cls"] = out["cls"] * nc / 80.0 * 3.0 / n_levels
    if "obj" in out:
        out["obj"] = out["obj"] * (img_size / 640) ** 2 * 3.0 / n_levels
    return out


def detect_head(model: nn.Module) -> nn.Module | None:
    from scaling_lab.ops.modules import Detect

    return next((m for m in model.modules() if isinstance(m, Detect)), None)


def model_size(model: nn.Module) -> str:
    """``tiny``, ``p5`` or ``p6``: which default hyperparameters fit the model."""
    name = model.layer_graph.name.lower()
    if "tiny" in name:
        return "tiny"
    head = detect_head(model)
    return "p6" if head is not None and float(head.stride.max()) >= 64 else "p5"
