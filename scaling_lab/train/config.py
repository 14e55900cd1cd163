"""What a training run depends on besides the code (``TrainConfig``, stored in every
checkpoint), and the recipe's adjustments to the model: default-hyperparameter size and the
loss-gain scaling of the reference's train.py."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, get_args, get_type_hints

from torch import nn

from scaling_lab.data.hyp import default_hyp
from scaling_lab.eval_protocol import CONF_THRES, IOU_THRES
from scaling_lab.limits import MAX_IMG_SIZE, MAX_NC, MAX_WORKERS
from scaling_lab.schema import FieldError, describe, type_ok
from scaling_lab.train.optim import OptimizerKind
from scaling_lab.train.recipe import RECIPES

AuxAssigner = Literal["independent", "lead_guided", "coarse_to_fine"]
AUX_ASSIGNERS = get_args(AuxAssigner)
HYP_KEYS = tuple(default_hyp("p5"))  # the recipe's keys (every size has the same ones)
DEVICE = re.compile(r"cpu|cuda(:\d{1,3})?")


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
    aux_head: bool = True  # False: train without the auxiliary head (dropped from the graph)
    # label assignment: the reference's rule, or each target within its own prior (loss.py);
    # None: the recipe's (``recipe.default_assign``)
    assign: Literal["own_prior", "reference"] | None = None
    device: str | None = None  # default: cuda if available
    seed: int = 0
    workers: int = 0
    deterministic: bool = False  # torch.use_deterministic_algorithms(True, warn_only=True)
    amp: bool | None = None  # default: on for CUDA
    schedule: Literal["cosine", "linear"] = "cosine"
    # the paper's Nesterov SGD, or Adam / AdamW (beta1 = hyp momentum; optim.build_optimizer)
    optimizer: OptimizerKind = "sgd"
    warmup_min_steps: int = 1000  # the reference warms up for at least 1000 steps
    ema_decay: float = 0.9999
    ema_tau: float = 2000.0
    hyp: dict[str, Any] = field(default_factory=dict)  # overrides of default_hyp(model size)
    # "reference": the reference trainer's behaviour; "ours": our deliberate departures
    # (scaling_lab.train.recipe.OURS_DIFFERS)
    recipe: Literal["reference", "ours"] = "reference"
    # refit the anchors to the training labels when they match < 98% of them (autoanchor.py),
    # as the reference trainer does unless --noautoanchor
    autoanchor: bool = True
    eval_every: int = 1  # evaluate every K epochs (0: last epoch only); always the last one
    # 1-based epochs evaluated whatever eval_every says: a sweep adds its early-stopping rungs,
    # whose decision needs the metric there (evaluation draws no training randomness, so the
    # cadence changes no weight)
    eval_epochs: list[int] = field(default_factory=list)
    eval_fused: bool = False  # also evaluate reparameterize(EMA)
    save_every: int = 0  # mid-epoch checkpoint every N steps (0: epoch ends only)
    conf_thres: float = CONF_THRES
    iou_thres: float = IOU_THRES
    tensorboard: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        """Refuse values the types allow (``FieldError``, a ValueError: ``scaling_lab.schema``
        names the experiment file's key when it builds a config)."""
        hints = _hints()
        for f in fields(self):
            value = getattr(self, f.name)
            if not type_ok(value, hints[f.name]):
                raise FieldError(f.name, f"must be {describe(hints[f.name])}, got {value!r}")
        if self.recipe not in RECIPES:
            raise FieldError("recipe", f"must be one of {', '.join(RECIPES)}, got {self.recipe!r}")
        if self.aux_assigner not in AUX_ASSIGNERS:
            raise FieldError(
                "aux_assigner",
                f"aux_assigner must be one of {', '.join(AUX_ASSIGNERS)}, got {self.aux_assigner}",
            )
        for name in ("epochs", "batch_size", "nominal_batch"):
            if getattr(self, name) < 1:
                raise FieldError(name, f"must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_min_steps", "eval_every", "save_every"):
            if getattr(self, name) < 0:
                raise FieldError(name, f"must be >= 0, got {getattr(self, name)}")
        if any(epoch < 1 for epoch in self.eval_epochs):
            raise FieldError("eval_epochs", f"must be epochs >= 1, got {self.eval_epochs}")
        self._check_ranges()
        self._check_hyp()

    def _check_ranges(self) -> None:
        if not self.data:
            raise FieldError("data", "must name a dataset folder or 'synth'")
        if self.img_size is not None and not 1 <= self.img_size <= MAX_IMG_SIZE:
            raise FieldError("img_size", f"must be 1 to {MAX_IMG_SIZE}, got {self.img_size}")
        if self.nc is not None and not 1 <= self.nc <= MAX_NC:
            raise FieldError("nc", f"must be 1 to {MAX_NC}, got {self.nc}")
        if not 0 <= self.workers <= MAX_WORKERS:
            raise FieldError("workers", f"must be 0 to {MAX_WORKERS}, got {self.workers}")
        if self.device is not None and not DEVICE.fullmatch(self.device):
            raise FieldError("device", f"must be cpu, cuda or cuda:N, got {self.device!r}")
        for name, low, high in (
            ("aux_weight", 0.0, math.inf),
            ("ema_decay", 0.0, 1.0),
            ("ema_tau", 0.0, math.inf),
            ("conf_thres", 0.0, 1.0),
            ("iou_thres", 0.0, 1.0),
        ):
            value = getattr(self, name)
            if not (low <= value <= high and math.isfinite(value)):
                raise FieldError(name, f"must be a number from {low:g} to {high:g}, got {value!r}")

    def _check_hyp(self) -> None:
        """Every key a hyper-parameter of the recipe, every value a finite number: a
        misspelt key would otherwise be ignored and the run would train another recipe."""
        for key, value in self.hyp.items():
            if key not in HYP_KEYS:
                raise FieldError(
                    f"hyp.{key}", f"unknown hyper-parameter '{key}' (known: {', '.join(HYP_KEYS)})"
                )
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not number or not math.isfinite(value):
                raise FieldError(f"hyp.{key}", f"must be a finite number, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        if "recipe" not in data:  # written before the switch existed: those runs reshuffled
            data = {**data, "recipe": "ours", "assign": data.get("assign", "own_prior")}
        if "autoanchor" not in data:  # written before autoanchor existed: trained without
            data = {**data, "autoanchor": False}
        return cls(**{k: v for k, v in data.items() if k in known})


def _hints() -> dict[str, Any]:
    return get_type_hints(TrainConfig)


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
