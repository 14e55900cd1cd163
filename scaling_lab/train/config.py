"""What a training run depends on besides the code (``TrainConfig``, stored in every
checkpoint): the one place a training setting is declared, with its default, its choices, its
range and its help. Settings dicts (an experiment's ``train:``) become a TrainConfig once, at
their boundary, and ``lab train``'s flags are generated from these fields
(``scaling_lab.cli.train_flags``). Torch-free, so the CLI can read it at start-up."""

from __future__ import annotations

import functools
import math
import re
from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from typing import Any, get_type_hints

from scaling_lab.data.hyp import default_hyp, hyp_problem
from scaling_lab.eval_protocol import CONF_THRES, IOU_THRES
from scaling_lab.limits import MAX_IMG_SIZE, MAX_NC, MAX_WORKERS
from scaling_lab.schema import FieldError, describe, type_ok
from scaling_lab.train.choices import AssignMode, AuxAssigner, LrSchedule, OptimizerKind
from scaling_lab.train.recipe import DEFAULT_RECIPE, Recipe

HYP_KEYS = tuple(default_hyp("p5"))  # the recipe's keys (every size has the same ones)
DEVICE = re.compile(r"cpu|cuda(:\d{1,3})?")
MAX_COUNT = 2**31  # steps, epochs and cadences: bounded so that a typo cannot overflow


def setting(
    default: Any = MISSING,
    help: str = "",
    *,
    low: float | None = None,
    high: float | None = None,
    flag: str | None = None,
    cli: bool = True,
    factory: Any = MISSING,
    metavar: str | None = None,
    shown_default: str | None = None,
) -> Any:
    """A TrainConfig field with what its flag and its check need: ``help`` (the flag's text),
    the inclusive range ``low``..``high``, the flag's name when it is not ``--field-name``
    (``--no-x`` for a switch that turns a default-on setting off), ``cli=False`` for a
    setting only files and code set; ``shown_default``: the flag's default when the CLI
    fills it in itself."""
    meta = {
        "help": help,
        "low": low,
        "high": high,
        "flag": flag,
        "cli": cli,
        "metavar": metavar,
        "shown_default": shown_default,
    }
    if factory is not MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Everything a run depends on besides the code; stored in its checkpoints."""

    model: str = setting(help="zoo name or spec path")
    data: str = setting(help="dataset folder (COCO or YOLO layout) or 'synth'")
    out: str = setting(
        "runs/train/exp", "run folder", metavar="RUN_DIR", shown_default="runs/train/MODEL"
    )
    img_size: int | None = setting(
        None,
        "train/val image size (default: the spec's)",
        low=1,
        high=MAX_IMG_SIZE,
        flag="--img",
        metavar="SIZE",
    )
    nc: int | None = setting(None, "classes (default: the dataset's)", low=1, high=MAX_NC)
    epochs: int = setting(300, "epochs (with --resume: extend to)", low=1, high=MAX_COUNT)
    batch_size: int = setting(16, "total batch size over all ranks", low=1, flag="--batch")
    nominal_batch: int = setting(
        64, "accumulate gradients to this many images per step (the paper's)", low=1
    )
    aux_assigner: AuxAssigner = setting(
        "coarse_to_fine", "label assignment of the auxiliary heads (paper §4.2)"
    )
    aux_constraint: bool = setting(True, "the coarse labels' upper bound (paper §4.2)")
    aux_weight: float = setting(0.25, "weight of the auxiliary head's loss", low=0.0)
    aux_head: bool = setting(
        True,
        "train without the auxiliary head: it (and what only it reads) leaves the training "
        "graph (the base rows of the paper's Tables 6-8)",
        flag="--no-aux-head",
    )
    assign: AssignMode | None = setting(
        None,
        "label assignment: 'reference' = YOLOv7's ComputeLossOTA / ComputeLossAuxOTA "
        "(no explicit aux-constraint bound); 'own_prior' = each target within its own "
        "prior, one target per prediction (default: the recipe's, recipe.default_assign)",
    )
    device: str | None = setting(None, "cpu | cuda | cuda:N (default: cuda if available)")
    seed: int = setting(0, "random seed", low=0, high=2**63 - 1)
    workers: int = setting(0, "data loader processes", low=0, high=MAX_WORKERS)
    deterministic: bool = setting(
        False, "deterministic kernels (torch.use_deterministic_algorithms, warn only)"
    )
    amp: bool | None = setting(
        None,
        "mixed precision: fp16 autocast with loss scaling on CUDA, bf16 autocast on the CPU "
        "(the loss stays fp32; default: on for CUDA). Changes the trained numerics: a "
        "calibration holds only for runs with the same setting",
        cli=False,
    )
    schedule: LrSchedule = setting("cosine", "learning-rate schedule")
    optimizer: OptimizerKind = setting(
        "sgd",
        "Nesterov SGD (the paper's) or Adam / AdamW with beta1 = the recipe's momentum; "
        "Adam wants a smaller lr: --hyp lr0=0.001 --hyp warmup_bias_lr=0.01",
    )
    fused_optimizer: bool = setting(
        False,
        "the optimizer's fused kernel (Adam's step ~3.5x faster on the CPU). Rounds otherwise "
        "than the default foreach step: a calibration holds only for runs with the same setting",
    )
    warmup_min_steps: int = setting(
        1000, "warm-up lasts at least this many steps (the reference's)", low=0, high=MAX_COUNT
    )
    ema_decay: float = setting(0.9999, "EMA decay", low=0.0, high=1.0, cli=False)
    ema_tau: float = setting(2000.0, "EMA warm-up ramp (steps)", low=0.0, cli=False)
    hyp: dict[str, Any] = setting(
        help="override a hyper-parameter of the recipe (repeatable), e.g. lr0=0.02",
        factory=dict,
    )
    recipe: Recipe = setting(
        DEFAULT_RECIPE,
        "'reference': the reference trainer's behaviour piece for piece; 'ours': our "
        "deliberate departures (data reshuffled every epoch, own_prior label assignment; "
        "docs/recipe.md)",
    )
    autoanchor: bool = setting(
        True,
        "keep the model's anchors even when they fit < 98%% of the training labels (by "
        "default they are refit to the labels first, as the reference trainer does)",
        flag="--no-autoanchor",
    )
    eval_every: int = setting(
        1, "evaluate every K epochs (0: the last only)", low=0, high=MAX_COUNT
    )
    # 1-based epochs evaluated whatever eval_every says: a sweep adds its early-stopping rungs,
    # whose decision needs the metric there (evaluation draws no training randomness, so the
    # cadence changes no weight)
    eval_epochs: list[int] = setting(help="epochs always evaluated", factory=list, cli=False)
    eval_fused: bool = setting(False, "also evaluate the fused (deploy) model")
    save_every: int = setting(
        0, "also checkpoint every N steps (0: epoch ends only)", low=0, high=MAX_COUNT
    )
    conf_thres: float = setting(
        CONF_THRES, "evaluation confidence threshold", low=0.0, high=1.0, cli=False
    )
    iou_thres: float = setting(IOU_THRES, "evaluation NMS IoU", low=0.0, high=1.0, cli=False)
    tensorboard: bool = setting(True, "CSV logs only", flag="--no-tensorboard")
    progress: bool = setting(True, "progress bars", cli=False)

    def __post_init__(self) -> None:
        """Refuse values the types allow (``FieldError``, a ValueError: ``scaling_lab.schema``
        names the experiment file's key when it builds a config)."""
        hints = field_types()
        for f in fields(self):
            value = getattr(self, f.name)
            if not type_ok(value, hints[f.name]):
                raise FieldError(f.name, f"must be {describe(hints[f.name])}, got {value!r}")
            _check_range(f, value)
        if any(epoch < 1 for epoch in self.eval_epochs):
            raise FieldError("eval_epochs", f"must be epochs >= 1, got {self.eval_epochs}")
        if not self.data:
            raise FieldError("data", "must name a dataset folder or 'synth'")
        if self.device is not None and not DEVICE.fullmatch(self.device):
            raise FieldError("device", f"must be cpu, cuda or cuda:N, got {self.device!r}")
        self._check_hyp()

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
            problem = hyp_problem(key, value)  # a negative lr: torch's traceback otherwise
            if problem:
                raise FieldError(f"hyp.{key}", problem)

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


def _check_range(f: Field, value: Any) -> None:
    """The field's declared range (its metadata), for numbers; NaN is never in range."""
    low, high = f.metadata.get("low"), f.metadata.get("high")
    if value is None or (low is None and high is None) or isinstance(value, bool):
        return
    low = -math.inf if low is None else low
    high = math.inf if high is None else high
    if isinstance(value, int):
        if value < low:
            raise FieldError(f.name, f"must be >= {low:.0f}, got {value}")
        if value > high:
            raise FieldError(f.name, f"must be at most {high:.0f}, got {value}")
    elif not (low <= value <= high and math.isfinite(value)):
        raise FieldError(f.name, f"must be a number from {low:g} to {high:g}, got {value!r}")


def train_default(name: str) -> Any:
    """A TrainConfig field's default (``train_default("epochs")`` -> 300): what a settings
    dict that omits the key trains with."""
    f = next((f for f in fields(TrainConfig) if f.name == name), None)
    if f is None:
        raise KeyError(f"TrainConfig has no setting '{name}'")
    if f.default_factory is not MISSING:
        return f.default_factory()
    if f.default is MISSING:
        raise KeyError(f"TrainConfig's '{name}' has no default")
    return f.default


@functools.cache
def field_types() -> dict[str, Any]:
    """TrainConfig's field types, resolved once (its annotations are strings)."""
    return get_type_hints(TrainConfig)
