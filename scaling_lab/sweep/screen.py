"""Screening before training: many designs of a search space scored without training.

Each design gets what a trial's profile gives (params, GFLOPs: the analytic counts of the
experiment's form at the spec's size), its predicted latency (the experiment's latency table;
NaN without one), whether it keeps the search's profile constraints, and every training-free
proxy of ``analyze/proxies.py`` computed on the model a trial would train (training form, the
budget's image size, the dataset's classes) over one fixed batch of the experiment's own
training images. ``lab calibrate --proxies`` says which of these columns rank designs like
their trained AP; the search should use only those.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from scaling_lab.atomic import atomic_write_text
from scaling_lab.spec.errors import SpecError
from scaling_lab.sweep.columns import PARAM_PREFIX
from scaling_lab.sweep.experiment_format import Experiment
from scaling_lab.sweep.experiment_graphs import base_graph, training_graph
from scaling_lab.sweep.materialize import Overrides, materialize
from scaling_lab.sweep.trial_keys import params_key

if TYPE_CHECKING:
    from torch import Tensor, nn

    from scaling_lab.analyze.latency_table import LatencyTable

# predictors without training that a profile gives: name (as lab calibrate --proxies and
# ``screen: {by}`` call them) -> screen.csv column
PROFILE_PREDICTORS = {"params": "params", "flops": "gflops", "latency_pred": "latency_pred_ms"}
SCREEN_FILE = "screen.csv"


@dataclass
class ScreenBatch:
    """The fixed batch every design is scored on, and what its loss needs."""

    images: Any  # (B, 3, H, W) float in [0, 1]
    targets: Any  # (N, 6) [image, class, cx, cy, w, h] normalized
    nc: int
    img_size: int
    hyp: dict[str, Any]
    settings: dict[str, Any]


def screen_batch(experiment: Experiment, budget: str | None = None, seed: int = 0) -> ScreenBatch:
    """The first batch (the budget's batch size, letterboxed, no augmentation: the same on
    every call) of the experiment's training split."""
    from scaling_lab.data import build_dataloader, default_hyp, resolve_data

    settings = experiment.train_config(budget)
    info = resolve_data(settings.get("data", "synth"))
    img_size = int(settings.get("img_size") or 640)
    hyp = {**default_hyp("tiny"), **(settings.get("hyp") or {})}
    loader = build_dataloader(
        info,
        "train",
        img_size=img_size,
        batch_size=int(settings.get("batch_size") or 8),
        augment=False,
        hyp=hyp,
        seed=seed,
        shuffle=False,
    )
    images, targets, _ids, _shapes = next(iter(loader))
    return ScreenBatch(images, targets, int(info.nc), img_size, hyp, settings)


def loss_function(batch: ScreenBatch) -> Callable[[nn.Module, Tensor], Tensor]:
    """``loss_fn(model, images)``: the trainer's criterion (recipe gains scaled to the model,
    its assignment) on the batch's targets, built for each model it is given."""
    from scaling_lab.train.loss import YoloV7Loss
    from scaling_lab.train.recipe import default_assign
    from scaling_lab.train.recipe_fit import detect_head, scale_loss_gains

    settings = batch.settings

    def loss_fn(model: nn.Module, images: Tensor) -> Tensor:
        head = detect_head(model)
        levels = int(getattr(head, "n_levels", 3))
        hyp = scale_loss_gains(batch.hyp, n_levels=levels, nc=batch.nc, img_size=batch.img_size)
        criterion = YoloV7Loss(
            model,
            hyp,
            aux_assigner=settings.get("aux_assigner", "coarse_to_fine"),
            aux_constraint=bool(settings.get("aux_constraint", True)),
            aux_weight=float(settings.get("aux_weight", 0.25)),
            assign=settings.get("assign") or default_assign(settings.get("recipe", "ours")),
        )
        loss, _items = criterion(model(images), batch.targets, images)
        return loss

    return loss_fn


@contextmanager
def torch_threads(experiment: Experiment) -> Iterator[None]:
    """Torch's intra-op threads set to the CPUs a trial gets (``resources.cpu``), restored
    after: on a shared machine more threads than cores make a proxy 10x slower, not faster."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(experiment.resources.cpu)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def latency_table(experiment: Experiment, path: str | Path | None = None) -> LatencyTable | None:
    """The latency table at ``path`` (its errors raised), else the experiment's
    ``latency.table``, else None (none named, or not built yet: ``latency_pred_ms`` is NaN)."""
    from scaling_lab.analyze.latency_table import TableError, cached_table

    if path is not None:
        return cached_table(path)
    if experiment.latency.table is None:
        return None
    try:
        return cached_table(experiment.latency.table)
    except (TableError, OSError):
        return None


def score_design(
    experiment: Experiment,
    changes: dict[str, Any],
    batch: ScreenBatch,
    *,
    table: Any = None,
    seed: int = 0,
    proxies: bool | Sequence[str] = True,
    force: bool = False,
) -> dict[str, Any]:
    """One design (override paths laid over the experiment's base): params, gflops,
    latency_pred_ms, constraint_ok and every proxy (NaN for a design that breaks a
    constraint, which is never trained, unless ``force``; ``proxies=False``: the counts
    only; a list of names: those proxies only)."""
    import torch

    from scaling_lab.analyze.profile import profile
    from scaling_lab.analyze.proxies import LOSS_PROXIES, PROXIES, all_proxies
    from scaling_lab.models import create_model, get_block_graph, get_layer_graph, model_ref

    graph = materialize(
        base_graph(experiment), Overrides.from_paths(changes), source=experiment.path
    )
    counted = profile(model_ref(graph, form=experiment.form))
    row: dict[str, Any] = {
        "params": counted.params,
        "gmacs": round(counted.gmacs, 4),
        "gflops": round(counted.gflops, 4),
        "latency_pred_ms": math.nan,
    }
    if table is not None:
        from scaling_lab.analyze.latency_predict import predict_latency

        deploy = get_layer_graph(model_ref(graph, form="deploy"))
        row["latency_pred_ms"] = round(predict_latency(deploy, table).total_ms, 4)
    # a constraint on a value the screen has not got (latency_pred without a table, a
    # measured latency) is left to the trial
    row["constraint_ok"] = all(
        c.holds(row[c.metric])
        for c in experiment.constraints
        if c.metric in row and not _missing(row[c.metric])
    )
    names = list(PROXIES) if proxies is True else list(proxies or [])
    if names and not (row["constraint_ok"] or force):
        row.update(dict.fromkeys(names, math.nan))
    elif names:
        trained = training_graph(experiment, graph)
        if not batch.settings.get("aux_head", True):
            from scaling_lab.transforms.deploy import drop_aux_heads

            trained = drop_aux_heads(trained)
        torch.manual_seed(seed)
        model = create_model(get_block_graph(trained, nc=batch.nc, img_size=batch.img_size))
        loss_fn = loss_function(batch) if set(names) & set(LOSS_PROXIES) else None
        row.update(all_proxies(model, batch.images, loss_fn, seed=seed, names=names))
    return row


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def draw_designs(experiment: Experiment, designs: int) -> list[dict[str, Any]]:
    """``designs`` distinct designs of the search space, the same on every call: the whole
    grid (sorted path order) when it has at most that many, else a ``search.seed`` sample
    (``designs.sample_params``) with repeats skipped."""
    from scaling_lab.sweep.designs import enumerate_params, grid_size, sample_params

    search = experiment.search
    if search is None:
        raise SpecError("screening needs a search space", source=experiment.path, field="search")
    space = search.space
    assert isinstance(space, dict)  # load_experiment has read a space file into its params
    size = grid_size(space)
    if size is not None and size <= designs:
        return list(enumerate_params(space))
    out: dict[str, dict[str, Any]] = {}
    for params in sample_params(space, 50 * designs, search.seed):
        out.setdefault(params_key(params), params)
        if len(out) == designs:
            break
    return list(out.values())


def screen_designs(
    experiment: Experiment,
    designs: int,
    *,
    budget: str | None = None,
    reports: str | Path | None = "reports",
    seed: int = 0,
    proxies: bool | Sequence[str] = True,
    progress: bool = True,
    table: str | Path | None = None,
) -> pd.DataFrame:
    """Score ``designs`` designs of the experiment's search space without training; one row
    each (key, ``param:PATH`` values, params, gmacs, gflops, latency_pred_ms, constraint_ok,
    each proxy, screen_s), written to ``reports/EXPERIMENT/screen.csv`` (``reports`` None:
    not written). Designs breaking a constraint get no proxies (NaN). ``proxies``: all,
    none (False: counts only, milliseconds a design) or the names to compute (a screen uses
    only those its calibration supports). ``table``: the latency table to predict from
    (default: the experiment's)."""
    from tqdm import tqdm

    chosen = draw_designs(experiment, designs)
    batch = screen_batch(experiment, budget, seed)
    lookup = latency_table(experiment, table)
    rows = []
    bar = tqdm(chosen, desc="screen", disable=not progress or None, leave=False)
    with torch_threads(experiment):
        for params in bar:
            started = time.perf_counter()
            row = {
                "key": params_key(params),
                **{f"{PARAM_PREFIX}{p}": v for p, v in params.items()},
            }
            row.update(
                score_design(experiment, params, batch, table=lookup, seed=seed, proxies=proxies)
            )
            row["screen_s"] = round(time.perf_counter() - started, 3)
            rows.append(row)
    frame = pd.DataFrame(rows)
    if reports is not None:
        write_screen(frame, Path(reports) / experiment.name)
    return frame


def write_screen(frame: pd.DataFrame, out_dir: Path) -> Path:
    """``screen.csv`` in ``out_dir``, written atomically."""
    return atomic_write_text(out_dir / SCREEN_FILE, frame.to_csv(index=False))
