"""Training checkpoints and reproducibility: atomic writes, ``weights_only`` loads, RNG state
capture and restore (global and data loader generators), seeding, deterministic mode.

A checkpoint is a dict of plain Python values and tensors (state_dicts, never module
objects), so ``torch.load(path, weights_only=True)`` reads it. The model is rebuilt from the
spec text stored under ``"spec"`` (``dump_spec`` of the trained BlockGraph), then its weights
are loaded. Keys written by the trainer:

``format``, ``kind`` ("last" or "best"), ``spec``, ``config`` (the TrainConfig as a dict),
``hyp``, ``nc``, ``model``, ``ema``, ``optimizer``, ``scaler``, ``epoch`` (the epoch in
progress, or the next one at an epoch boundary), ``step_in_epoch`` (batches of ``epoch`` done;
0 at a boundary), ``global_step``, ``last_opt_step``, ``best_fitness``, ``metrics``, ``rng``
(per rank), ``rng_epoch_start`` (per rank, mid-epoch checkpoints only), ``loader_rng``.
"""

from __future__ import annotations

import os
import pickle
import random
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scaling_lab.atomic import atomic_write
from scaling_lab.errors import UserError

FORMAT = "scaling_lab.train/1"


class CheckpointError(UserError):
    """A file that is not a readable scaling_lab training checkpoint (or is missing)."""


def save_atomic(obj: dict[str, Any], path: str | Path) -> Path:
    """``torch.save`` through ``atomic_write``: a run killed mid-write leaves the old file."""
    return atomic_write(path, lambda f: torch.save(obj, f))


# what every checkpoint holds (evaluation needs these), and what resuming needs besides
_KEYS: dict[str, type | tuple[type, ...]] = {
    "spec": str,
    "config": dict,
    "hyp": dict,
    "model": dict,
    "ema": (dict, type(None)),
}
_RESUME_KEYS: dict[str, type | tuple[type, ...]] = {
    "optimizer": dict,
    "scaler": (dict, type(None)),
    "epoch": int,
    "step_in_epoch": int,
    "global_step": int,
    "last_opt_step": int,
    "epoch_loss_sum": list,
    "best_fitness": (int, float),
    "steps_per_epoch": int,
    "ranks": list,
}


def _why_unreadable(exc: BaseException) -> str:
    """torch's reason in a few words: for a weights-only refusal the unpickler's own line,
    never its multi-line advice to load with ``weights_only=False``."""
    text = str(exc).strip()
    if text.startswith("Weights only load failed"):
        body = text.split("Check the documentation")[0]
        if "WeightsUnpickler error:" in body:
            detail = body.split("WeightsUnpickler error:", 1)[1]
        else:  # the advice is numbered "(1)", "(2)" or starts "In PyTorch" / "Please"
            advice = re.compile(r"\s*(\(\d\)|Please|In PyTorch)")
            detail = " ".join(ln for ln in body.splitlines()[1:] if not advice.match(ln))
        detail = re.sub(r"\x1b\[[0-9;]*m", "", " ".join(detail.split()))
        detail = detail.split(" Please use")[0][:200] or "no detail"
        return f"the weights-only loader refused it ({detail}); no code from it was run"
    first = text.splitlines()[0] if text else type(exc).__name__
    return first if len(first) <= 200 else first[:197] + "..."


def _check_zip_size(path: Path) -> None:
    """A zip checkpoint whose members would not fit in memory is refused before loading."""
    import zipfile

    from scaling_lab.nn.memory import memory_left

    try:
        with zipfile.ZipFile(path) as archive:
            size = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # torch.load reports it
    left = memory_left()
    if left is not None and size > left:
        raise CheckpointError(
            f"holds {size / 2**30:.1f} GB, more than the {left / 2**30:.1f} GB of memory left",
            source=str(path),
        )


def check_checkpoint(ckpt: dict[str, Any], path: str | Path, *, resume: bool = False) -> None:
    """Refuse a partial or damaged checkpoint with the key that is missing or wrong."""
    wanted = {**_KEYS, **(_RESUME_KEYS if resume else {})}
    for key, kind in wanted.items():
        if key not in ckpt:
            raise CheckpointError("incomplete checkpoint: no entry", source=str(path), field=key)
        if not isinstance(ckpt[key], kind) or isinstance(ckpt[key], bool):
            raise CheckpointError(
                f"damaged checkpoint: unexpected {type(ckpt[key]).__name__}",
                source=str(path),
                field=key,
            )
    if ckpt["ema"] is not None and not isinstance(ckpt["ema"].get("module"), dict):
        raise CheckpointError("damaged checkpoint: no EMA weights", source=str(path), field="ema")
    for key in ("epoch", "step_in_epoch", "global_step", "steps_per_epoch", "last_opt_step"):
        low = -1 if key == "last_opt_step" else 0
        if key in wanted and ckpt[key] < low:
            raise CheckpointError(f"damaged checkpoint: {ckpt[key]}", source=str(path), field=key)
    if resume and (ckpt.get("kind") != "last" or ckpt["optimizer"] is None):
        raise CheckpointError(
            "not resumable (only weights/last.pt holds the optimizer state)", source=str(path)
        )


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (no code runs while loading)."""
    path = Path(path)
    if os.path.isdir(path):  # os.path: False, not OSError, for a name too long
        path = path / "weights" / "last.pt"
    if not os.path.isfile(path):
        raise CheckpointError("no checkpoint here", source=str(path))
    _check_zip_size(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise CheckpointError(
            f"cannot be read as a checkpoint: {_why_unreadable(exc)}", source=str(path)
        ) from None
    except Exception as exc:  # any other way a file that is not a checkpoint fails to parse
        raise CheckpointError(
            f"cannot be read as a checkpoint: {type(exc).__name__}: {_why_unreadable(exc)}",
            source=str(path),
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"not a scaling_lab training checkpoint ({FORMAT})", source=str(path))
    return ckpt


# --- RNG state ------------------------------------------------------------------------------


def _numpy_state() -> dict[str, Any]:
    """numpy's legacy global RNG state with the key array as a tensor (weights_only safe)."""
    state = np.random.get_state(legacy=False)
    inner = state["state"]
    return {
        "bit_generator": state["bit_generator"],
        "key": torch.from_numpy(np.asarray(inner["key"], dtype=np.int64)),
        "pos": int(inner["pos"]),
        "has_gauss": int(state["has_gauss"]),
        "gauss": float(state["gauss"]),
    }


def _set_numpy_state(state: dict[str, Any]) -> None:
    key = state["key"].numpy().astype(np.uint32)
    np.random.set_state(
        (state["bit_generator"], key, state["pos"], state["has_gauss"], state["gauss"])
    )


def _python_state() -> list[Any]:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _set_python_state(state: list[Any]) -> None:
    version, internal, gauss = state
    random.setstate((version, tuple(internal), gauss))


def capture_rng() -> dict[str, Any]:
    """The global RNG states of this process: python, numpy, torch and (once CUDA is in use)
    the current CUDA device's, the one device a training process drives."""
    state = {"python": _python_state(), "numpy": _numpy_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Undo ``capture_rng``: the next random number drawn equals the one drawn after it."""
    _set_python_state(state["python"])
    _set_numpy_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu())


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (every device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextmanager
def deterministic_mode(enabled: bool) -> Iterator[None]:
    """Deterministic kernels for the run (warn where an op has none); restored afterwards."""
    if not enabled:
        yield
        return
    cudnn = torch.backends.cudnn
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        cudnn.benchmark,
        cudnn.deterministic,
    )
    torch.use_deterministic_algorithms(True, warn_only=True)
    cudnn.benchmark, cudnn.deterministic = False, True
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        cudnn.benchmark, cudnn.deterministic = before[2], before[3]


@contextmanager
def rng_fork() -> Iterator[None]:
    """Random draws inside (evaluation, plotting) do not move the training RNG streams."""
    state = capture_rng()
    try:
        yield
    finally:
        restore_rng(state)


# --- data loader generators ---------------------------------------------------------------

_GENERATOR_PATHS = (
    "generator",
    "sampler.generator",
    "batch_sampler.generator",
    "batch_sampler.sampler.generator",
    "dataset.generator",
)


def _loader_generators(loader: Any) -> dict[str, torch.Generator]:
    """The torch Generators a data loader draws its order and worker seeds from."""
    found: dict[str, torch.Generator] = {}
    ids: set[int] = set()
    for path in _GENERATOR_PATHS:
        obj = loader
        for attr in path.split("."):
            obj = getattr(obj, attr, None)
            if obj is None:
                break
        if isinstance(obj, torch.Generator) and id(obj) not in ids:
            ids.add(id(obj))
            found[path] = obj
    return found


def capture_loader_rng(loader: Any) -> dict[str, Any]:
    """States of the loader's own generators (shuffle order, worker base seeds) and of its
    ``rng_state()`` hook if it has one."""
    state: dict[str, Any] = {
        path: gen.get_state() for path, gen in _loader_generators(loader).items()
    }
    hook = getattr(loader, "rng_state", None)
    if callable(hook):
        state["hook"] = hook()
    return state


def restore_loader_rng(loader: Any, state: dict[str, Any]) -> None:
    for path, gen in _loader_generators(loader).items():
        if path in state:
            gen.set_state(state[path])
    hook = getattr(loader, "set_rng_state", None)
    if "hook" in state and callable(hook):
        hook(state["hook"])


def set_loader_epoch(loader: Any, epoch: int) -> None:
    """Tell the loader (or its distributed sampler) which epoch starts, for its shuffle."""
    for obj in (loader, getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
        set_epoch = getattr(obj, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)
            return
