"""The training loop: spec -> trained weights, with exact resume (``lab train``).

One run lives in a directory: ``spec.yaml`` (the model as trained), ``train.yaml`` (config and
hyperparameters), ``steps.csv`` (per-step losses and lrs), ``results.csv`` (per-epoch means and
AP), ``tb/`` (TensorBoard), ``weights/last.pt`` and ``best.pt``, ``metrics.json`` and
``loss.png`` when it ends.

Exact resume. A checkpoint is written at every epoch end and, with ``save_every=N``, after the
first optimizer step at least N steps after the previous one (so gradients are zero: nothing
in flight is lost). It stores the global RNG states at the moment of saving *and* at the start
of its epoch, plus the data loader's generator states at the start of its epoch. Resuming
restores the epoch-start states, starts the epoch's loader iterator, replays (loads and
discards) the batches the checkpoint had done, then restores the saving-time RNG states: the
data order, the augmentations and every random draw after that are those of the
uninterrupted run, and so are the per-step losses. Logs written after the checkpoint are cut
away and written again. Learning rate, momentum and accumulation are functions of the step
counters (``optim.Schedule``), so there is no scheduler state to restore.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml
from torch import nn

from scaling_lab.data.errors import DataError
from scaling_lab.device import check_device, default_device
from scaling_lab.errors import UserError
from scaling_lab.eval_protocol import AP_KEYS
from scaling_lab.machine import machine_card
from scaling_lab.nn.memory import check_fits
from scaling_lab.schema import FieldError
from scaling_lab.train import ddp
from scaling_lab.train.autoanchor import AnchorFit, check_anchors
from scaling_lab.train.backends import Backends, ann_file
from scaling_lab.train.checkpoint import (
    FORMAT,
    CheckpointError,
    capture_loader_rng,
    capture_rng,
    check_checkpoint,
    deterministic_mode,
    load_checkpoint,
    restore_loader_rng,
    restore_rng,
    rng_fork,
    save_atomic,
    seed_everything,
    set_loader_epoch,
)
from scaling_lab.train.config import TrainConfig
from scaling_lab.train.ema import ModelEMA
from scaling_lab.train.evaluation import evaluate_model, fitness, model_from_spec
from scaling_lab.train.heads import PLAIN_IMAGES, head_family
from scaling_lab.train.optim import Schedule, build_optimizer
from scaling_lab.train.precision import autocast_dtype, to_float32
from scaling_lab.train.recipe import default_assign, shuffles_training_order
from scaling_lab.train.recipe_fit import detect_head, model_size
from scaling_lab.train.run_log import RunLog, plot_losses

if TYPE_CHECKING:
    from scaling_lab.graph.block_graph import BlockGraph

LOSS_KEYS = ("box", "obj", "cls", "total")
MAX_NONFINITE_AMP = 10  # consecutive non-finite losses tolerated under AMP
LATER_HYP_KEYS = ("mosaic9",)  # recipe keys added after checkpoints were first written


class Trainer:
    """One training run. ``checkpoint``: a loaded ``last.pt`` to continue from; ``graph``: the
    model as a BlockGraph (a sweep's trial), else ``cfg.model`` names it (zoo name or path).

    ``callbacks`` are called as ``cb(trainer, row)`` after every step (``row`` is the logged
    step); an exception raised there stops the run like a crash would (tests use this).
    ``epoch_callbacks`` are called the same way after every epoch's checkpoint is written
    (``row`` holds the epoch's mean losses and, when evaluated, AP): sweeps report from there.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        backends: Backends | None = None,
        callbacks: Sequence[Callable[[Trainer, dict], None]] = (),
        epoch_callbacks: Sequence[Callable[[Trainer, dict], None]] = (),
        checkpoint: dict[str, Any] | None = None,
        graph: BlockGraph | None = None,
    ) -> None:
        self.cfg = cfg
        self.graph = graph
        self.backends = backends or Backends()
        self.callbacks = list(callbacks)
        self.epoch_callbacks = list(epoch_callbacks)
        self.ckpt = checkpoint
        self.run_dir = Path(cfg.out)
        self.epoch = 0  # the epoch in progress (or the next to run)
        self.step_in_epoch = 0  # batches of self.epoch done
        self.global_step = 0  # batches done since the start of the run
        self.last_opt_step = -1  # global step of the last optimizer step
        self.last_ckpt_step = 0
        self.best_fitness = 0.0
        self.best_epoch: int | None = None
        self.metrics: dict[str, Any] = {}
        self.anchor_fit: AnchorFit | None = None  # set when the anchors were checked
        self.fused_metrics: dict[str, Any] = {}
        self.epoch_loss_sum = [0.0] * len(LOSS_KEYS)
        self._val_loader: Any = None
        self._nonfinite = 0  # consecutive non-finite losses

    # --- setup --------------------------------------------------------------------------

    def _setup(self) -> None:
        cfg, backends = self.cfg, self.backends
        self.dist = ddp.dist_info_from_env()
        self.is_main = self.dist.is_main
        device = cfg.device or default_device()
        if not self.dist.enabled:  # under torchrun each rank takes its local GPU
            check_device(device)
        self.device = ddp.setup(self.dist, device)
        seed_everything(cfg.seed + max(self.dist.rank, 0))
        self.info = backends.get_resolve_data()(cfg.data)
        self.model = self._build_model().to(self.device)
        check_fits(
            self.model.layer_graph,
            batch=max(1, cfg.batch_size // self.dist.world_size),
            grad=True,
            device=str(self.device),
            what="training",
        )
        self.img_size = self.model.layer_graph.input_shape.h
        self.nc = int(self.model.layer_graph.meta["nc"])
        self.family = head_family(self.model)  # the head's loss, decoder and recipe
        if not self.ckpt and self.family.init is not None:
            self.family.init(self.model)  # e.g. the anchor-free heads' prior-probability biases
        recipe = {**backends.get_default_hyp()(model_size(self.model)), **self.family.recipe}
        if self.ckpt:
            self.hyp = dict(self.ckpt["hyp"])
            self._check_stored_hyp(recipe)
        else:
            self.hyp = {**recipe, **cfg.hyp}
        head = detect_head(self.model)
        if not self.ckpt and cfg.autoanchor and head is not None:
            self._fit_anchors(head)
        n_levels = head.n_levels if head is not None else 3
        loss_hyp = dict(self.hyp)
        if self.family.fit_gains is not None:
            loss_hyp = self.family.fit_gains(
                self.hyp, n_levels=n_levels, nc=self.nc, img_size=self.img_size
            )
        self.criterion = backends.get_criterion()(  # by default the head family's loss
            self.model,
            loss_hyp,
            aux_assigner=cfg.aux_assigner,
            aux_constraint=cfg.aux_constraint,
            aux_weight=cfg.aux_weight,
            assign=cfg.assign or default_assign(cfg.recipe),
        )
        self.optimizer = build_optimizer(
            self.model,
            self.hyp,
            kind=cfg.optimizer,
            batch_size=cfg.batch_size,
            nominal_batch=cfg.nominal_batch,
            fused=cfg.fused_optimizer,
        )
        self.ema = ModelEMA(self.model, cfg.ema_decay, cfg.ema_tau) if self.is_main else None
        self.amp = cfg.amp if cfg.amp is not None else self.device.type == "cuda"
        self.amp_dtype = autocast_dtype(self.device)
        # bf16 keeps fp32's exponent range: no loss scaling, no skipped steps
        scale_loss = self.amp and self.amp_dtype == torch.float16
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=scale_loss)
        self.loader = self._train_loader()
        self._plain_images = False  # the loader serves plain images (``_close_augmentation``)
        self.steps_per_epoch = len(self.loader)
        if self.steps_per_epoch < 1:
            raise DataError("the train split has no batches", source=cfg.data)
        self.schedule = Schedule(
            self.hyp,
            epochs=cfg.epochs,
            steps_per_epoch=self.steps_per_epoch,
            batch_size=cfg.batch_size,
            nominal_batch=cfg.nominal_batch,
            schedule=cfg.schedule,
            warmup_min_steps=cfg.warmup_min_steps,
        )
        if self.ckpt:
            try:
                self._load_state(self.ckpt)
            except CheckpointError as exc:
                raise exc.located(str(self.run_dir / "weights" / "last.pt")) from None
            except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                raise CheckpointError(
                    f"damaged checkpoint: {type(exc).__name__}: {reason[:200]}",
                    source=str(self.run_dir / "weights" / "last.pt"),
                ) from None
        self.train_model: nn.Module = self.model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if self.is_main:
            self._write_run_files()

    def _check_stored_hyp(self, recipe: dict[str, Any]) -> None:
        """A checkpoint's recipe is numeric (the loss reads every gain); a key the recipe
        gained after the checkpoint was written (``mosaic9``) takes the recipe's value."""
        for key in LATER_HYP_KEYS:
            if key in recipe:
                self.hyp.setdefault(key, recipe[key])
        for key in recipe:
            value = self.hyp.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise CheckpointError(
                    f"damaged checkpoint: hyper-parameter '{key}' is {value!r}",
                    source=str(self.run_dir / "weights" / "last.pt"),
                    field="hyp",
                )

    def _build_model(self) -> nn.Module:
        """The model, and ``spec_text``: what run folder and checkpoints store, so that a
        checkpoint rebuilds its model on its own. Resuming builds it from that text."""
        from scaling_lab.graph.block_graph import dump_spec
        from scaling_lab.models import create_model, get_block_graph

        if self.ckpt:
            self.spec_text = self.ckpt["spec"]
            return model_from_spec(self.spec_text)
        nc = self.cfg.nc or int(self.info.nc)
        model = self.graph if self.graph is not None else self.cfg.model
        graph = get_block_graph(model, nc=nc, img_size=self.cfg.img_size)
        if not self.cfg.aux_head:  # the auxiliary head and what only it reads: not trained
            from scaling_lab.transforms.deploy import drop_aux_heads

            graph = drop_aux_heads(graph)
        self.spec_text = dump_spec(graph)
        self._graph = graph
        return create_model(graph)

    def _fit_anchors(self, head: nn.Module) -> None:
        """Refit the head's anchors to the training labels when they match too few of them
        (``autoanchor.py``); the run's spec then carries the fitted anchors."""
        from scaling_lab.graph.block_graph import dump_spec
        from scaling_lab.graph.lower import lower

        fit = check_anchors(
            self.info.records("train"),
            head.anchors.detach().cpu().numpy(),
            self.img_size,
            anchor_t=float(self.hyp["anchor_t"]),
            seed=self.cfg.seed,
        )
        self.anchor_fit = fit
        if self.cfg.progress and self.is_main:
            print(fit.summary(), file=sys.stderr)
        if not fit.refit:
            return
        with torch.no_grad():
            head.anchors.copy_(torch.as_tensor(fit.anchors, dtype=head.anchors.dtype))
        levels = tuple(tuple(float(v) for v in level.reshape(-1)) for level in fit.anchors)
        self._graph = dataclasses.replace(self._graph, anchors=levels)
        self.spec_text = dump_spec(self._graph)
        self.model.layer_graph = lower(self._graph)  # the record the module carries, too

    def _train_loader(self, plain: bool = False) -> Any:
        cfg = self.cfg
        if cfg.batch_size % self.dist.world_size:
            raise UserError(
                f"batch size {cfg.batch_size} is not divisible by {self.dist.world_size} ranks",
                field="batch",
            )
        return self.backends.get_build_dataloader()(
            self.info,
            "train",
            img_size=self.img_size,
            batch_size=cfg.batch_size // self.dist.world_size,
            augment=True,
            hyp={**self.hyp, **PLAIN_IMAGES} if plain else self.hyp,
            workers=cfg.workers,
            seed=cfg.seed,
            shuffle=shuffles_training_order(cfg.recipe, distributed=self.dist.enabled),
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )

    def _val(self) -> Any:
        if self._val_loader is None:
            self._val_loader = self.backends.get_build_dataloader()(
                self.info,
                "val",
                img_size=self.img_size,
                batch_size=2 * self.cfg.batch_size // self.dist.world_size,
                augment=False,
                hyp=self.hyp,
                workers=self.cfg.workers,
                seed=self.cfg.seed,
                shuffle=False,
            )
        return self._val_loader

    def _write_run_files(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "spec.yaml").write_text(self.spec_text)
        settings = {"config": self.cfg.to_dict(), "hyp": self.hyp}
        if self.anchor_fit is not None:
            settings["autoanchor"] = self.anchor_fit.to_dict()
        (self.run_dir / "train.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))

    # --- checkpoints ------------------------------------------------------------------

    def _rank_state(self, mid_epoch: bool) -> dict[str, Any]:
        now = capture_rng()
        return {
            "rng": now,
            "rng_epoch_start": self._rng_epoch_start if mid_epoch else now,
            "loader_rng": self._loader_rng_epoch_start
            if mid_epoch
            else capture_loader_rng(self.loader),
        }

    def _checkpoint(self, *, mid_epoch: bool) -> dict[str, Any] | None:
        """The checkpoint dict (on the main rank; None elsewhere). Collective under DDP."""
        ranks = ddp.gather_to_main(self.dist, self._rank_state(mid_epoch))
        if not self.is_main:
            return None
        return {
            "format": FORMAT,
            "kind": "last",
            "spec": self.spec_text,
            "config": self.cfg.to_dict(),
            "hyp": self.hyp,
            "nc": self.nc,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "last_opt_step": self.last_opt_step,
            "epoch_loss_sum": list(self.epoch_loss_sum),
            "best_fitness": self.best_fitness,
            "best_epoch": self.best_epoch,
            "metrics": dict(self.metrics),
            "fused_metrics": dict(self.fused_metrics),
            "steps_per_epoch": self.steps_per_epoch,
            "world_size": self.dist.world_size,
            "ranks": ranks,
            "torch_version": str(torch.__version__),
        }

    def _save(self, *, mid_epoch: bool, best: bool = False) -> None:
        ckpt = self._checkpoint(mid_epoch=mid_epoch)
        self.last_ckpt_step = self.global_step
        if ckpt is None:
            return
        weights = self.run_dir / "weights"
        save_atomic(ckpt, weights / "last.pt")
        if best:  # for evaluation and deployment: no optimizer, not resumable
            save_atomic(
                {**ckpt, "kind": "best", "optimizer": None, "scaler": None}, weights / "best.pt"
            )

    def _load_state(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        if self.ema is not None and ckpt.get("ema"):
            self.ema.load_state_dict(ckpt["ema"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch = int(ckpt["epoch"])
        self.step_in_epoch = int(ckpt["step_in_epoch"])
        self.global_step = self.last_ckpt_step = int(ckpt["global_step"])
        self.last_opt_step = int(ckpt["last_opt_step"])
        self.epoch_loss_sum = [float(v) for v in ckpt["epoch_loss_sum"]]
        self.best_fitness = float(ckpt["best_fitness"])
        self.best_epoch = ckpt.get("best_epoch")
        self.metrics = dict(ckpt.get("metrics") or {})
        self.fused_metrics = dict(ckpt.get("fused_metrics") or {})
        if int(ckpt["steps_per_epoch"]) != self.steps_per_epoch:
            raise CheckpointError(
                f"the train split gives {self.steps_per_epoch} batches per epoch, the checkpoint "
                f"was written with {ckpt['steps_per_epoch']}: the data changed, so the run cannot "
                "resume exactly"
            )
        if self.step_in_epoch > self.steps_per_epoch or len(self.epoch_loss_sum) != len(LOSS_KEYS):
            raise CheckpointError("damaged checkpoint: its step counters do not match")
        ranks = ckpt["ranks"]
        if len(ranks) != self.dist.world_size:
            raise CheckpointError(
                f"checkpoint was written by {len(ranks)} ranks, this run has "
                f"{self.dist.world_size}: resume with the same number of processes"
            )
        state = ranks[max(self.dist.rank, 0)]
        for key in ("rng", "rng_epoch_start", "loader_rng"):
            if not isinstance(state, dict) or not isinstance(state.get(key), dict):
                raise CheckpointError("damaged checkpoint: no RNG state", field=f"ranks.{key}")
        for key in ("python", "numpy", "torch"):
            if key not in state["rng"] or key not in state["rng_epoch_start"]:
                raise CheckpointError("damaged checkpoint: no RNG state", field=f"ranks.rng.{key}")
        self._resume_rank_state = state

    # --- the loop ---------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        """Train to ``cfg.epochs``; returns what ``metrics.json`` holds."""
        self._resume_rank_state: dict[str, Any] | None = None
        with deterministic_mode(self.cfg.deterministic):
            try:
                self._setup()
                self.log = (
                    RunLog(
                        self.run_dir,
                        tensorboard=self.cfg.tensorboard,
                        resume_step=self.global_step,  # 0 for a fresh run: clear old logs
                        resume_epoch=self.epoch,
                    )
                    if self.is_main
                    else None
                )
                try:
                    while self.epoch < self.cfg.epochs:
                        self._train_epoch(self.epoch)
                        self._end_epoch(self.epoch)
                finally:
                    if self.log is not None:
                        self.log.close()
                return self._finish() if self.is_main else {}
            finally:
                if getattr(self, "dist", None) is not None:
                    ddp.teardown(self.dist)

    def _start_epoch(self, epoch: int) -> Iterator[Any]:
        """The epoch's batch iterator, positioned after the batches a checkpoint had done."""
        self._close_augmentation(epoch)  # first: a resume restores the new loader's RNG
        resume = self._resume_rank_state
        if resume is not None:
            restore_rng(resume["rng_epoch_start"])
            restore_loader_rng(self.loader, resume["loader_rng"])
        self._rng_epoch_start = capture_rng()
        self._loader_rng_epoch_start = capture_loader_rng(self.loader)
        set_loader_epoch(self.loader, epoch)
        set_epoch = getattr(self.criterion, "set_epoch", None)
        if set_epoch is not None:  # a head's epoch-dependent terms (YOLOX's L1, PP-YOLOE's ATSS)
            set_epoch(epoch, self.cfg.epochs)
        batches = iter(self.loader)
        for _ in range(self.step_in_epoch):  # replay: same data order and augmentation draws
            next(batches)
        if resume is not None:
            restore_rng(resume["rng"])
            self._resume_rank_state = None
        return batches

    def _close_augmentation(self, epoch: int) -> None:
        """From the head family's plain epochs on (YOLOX's last 15 of 300), a loader of plain
        images: rebuilt, since a persistent worker keeps its own copy of the dataset."""
        plain = self.family.plain_epochs
        if plain is None or epoch < self.cfg.epochs - plain(self.cfg.epochs) or self._plain_images:
            return
        self.loader = self._train_loader(plain=True)  # self.hyp, checkpointed, stays as is
        self._plain_images = True

    def _train_epoch(self, epoch: int) -> None:
        self.train_model.train()
        nb, skip = self.steps_per_epoch, self.step_in_epoch
        batches = self._start_epoch(epoch)
        self.optimizer.zero_grad(set_to_none=True)
        pbar = None
        if self.is_main and self.cfg.progress:
            from tqdm import tqdm

            pbar = tqdm(  # disable=None: on a terminal only, never ahead of an error in a log
                total=nb, initial=skip, desc=f"epoch {epoch}/{self.cfg.epochs - 1}", disable=None
            )
        position, fetch_start = skip, time.perf_counter()
        try:
            for i, batch in enumerate(batches, start=skip):
                if i >= nb:
                    break
                row = self._train_step(epoch, i, batch, time.perf_counter() - fetch_start)
                position = i + 1
                if pbar is not None:
                    pbar.set_postfix({k: f"{row[k]:.4g}" for k in LOSS_KEYS})
                    pbar.update(1)
                for callback in self.callbacks:
                    callback(self, row)
                fetch_start = time.perf_counter()
        except Exception as exc:  # name where the run stopped; the error itself is kept
            exc.add_note(f"lab train: stopped in epoch {epoch} at batch {position} of {nb}")
            raise
        finally:
            if pbar is not None:
                pbar.close()

    def _train_step(
        self, epoch: int, i: int, batch: Sequence[Any], data_s: float = 0.0
    ) -> dict[str, Any]:
        start = time.perf_counter()
        images, targets, image_ids = batch[0], batch[1], batch[2]
        step, nb = self.global_step, self.steps_per_epoch
        self.schedule.apply(self.optimizer, epoch, step)
        accumulate = self.schedule.accumulate(step)
        will_step = step - self.last_opt_step >= accumulate or i == nb - 1
        images = images.to(self.device, non_blocking=True)
        images = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        targets = targets.to(self.device)
        sync = self.train_model.no_sync() if self.dist.enabled and not will_step else nullcontext()
        with sync:
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
                outputs = self.train_model(images)
                if self.amp_dtype == torch.float16:  # the reference's loss under fp16 autocast
                    loss, items = self.criterion(outputs, targets, images)
            if self.amp_dtype != torch.float16:  # bf16 rounds too coarsely for the loss
                loss, items = self.criterion(to_float32(outputs), targets, images)
            if self.dist.enabled:
                loss = loss * self.dist.world_size  # DDP averages gradients over ranks
            self._check_finite(loss, epoch, i, image_ids)
            self.scaler.scale(loss).backward()
        if will_step:
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            if self.ema is not None:
                self.ema.update(self.train_model)
            self.last_opt_step = step
        values = [float(v) for v in items.detach().float().cpu().tolist()]
        self.epoch_loss_sum = [s + v for s, v in zip(self.epoch_loss_sum, values)]
        self.global_step, self.step_in_epoch = step + 1, i + 1
        row: dict[str, Any] = {"step": step, "epoch": epoch, "batch": i}
        row.update(zip(LOSS_KEYS, values))
        row.update(
            {f"lr_{g.get('name', k)}": g["lr"] for k, g in enumerate(self.optimizer.param_groups)}
        )
        row.update(
            momentum=self.optimizer.param_groups[0].get("momentum"),
            accumulate=accumulate,
            optimizer_step=int(will_step),
            images=int(images.shape[0]),
            targets=int(targets.shape[0]),
            data_s=data_s,  # waiting for the batch
            time_s=time.perf_counter() - start,  # forward, backward, step
            gpu_mem_gb=torch.cuda.max_memory_allocated(self.device) / 1e9
            if self.device.type == "cuda"
            else 0.0,
        )
        if self.log is not None:
            self.log.step(row)
        save_every = self.cfg.save_every
        if (
            save_every
            and will_step
            and i < nb - 1
            and self.global_step - self.last_ckpt_step >= save_every
        ):
            self._save(mid_epoch=True)
        return row

    def _check_finite(self, loss: torch.Tensor, epoch: int, i: int, image_ids: Any) -> None:
        """A non-finite loss stops the run, naming the batch's images. Under AMP an fp16
        overflow can be transient (GradScaler skips that step and lowers its scale): warn,
        and stop only after ``MAX_NONFINITE_AMP`` in a row."""
        if torch.isfinite(loss):
            self._nonfinite = 0
            return
        message = (
            f"non-finite loss {float(loss.detach())} in epoch {epoch}, batch {i} "
            f"(images {list(image_ids)})"
        )
        self._nonfinite += 1
        if not self.scaler.is_enabled() or self._nonfinite >= MAX_NONFINITE_AMP:
            raise FloatingPointError(message)
        warnings.warn(f"{message}; the scaler skips this step", RuntimeWarning, stacklevel=2)

    def _end_epoch(self, epoch: int) -> None:
        cfg = self.cfg
        nb = self.steps_per_epoch
        means = [s / nb for s in self.epoch_loss_sum]
        last = epoch + 1 == cfg.epochs
        evaluate = (
            last
            or (cfg.eval_every > 0 and (epoch + 1) % cfg.eval_every == 0)
            or epoch + 1 in cfg.eval_epochs
        )
        improved = False
        row: dict[str, Any] = {"epoch": epoch, "step": self.global_step}
        row.update(zip(LOSS_KEYS, means))
        row.update(
            {f"lr_{g.get('name', k)}": g["lr"] for k, g in enumerate(self.optimizer.param_groups)}
        )
        if evaluate and self.is_main:
            with rng_fork():
                self._evaluate()
            score = fitness(self.metrics)
            improved = self.best_epoch is None or score > self.best_fitness
            if improved:
                self.best_fitness, self.best_epoch = score, epoch
            row["fitness"] = score
        else:
            row["fitness"] = None
        for key in AP_KEYS:
            row[key] = self.metrics.get(key) if evaluate else None
            if cfg.eval_fused:
                row[f"fused_{key}"] = self.fused_metrics.get(key) if evaluate else None
        if self.log is not None:
            self.log.epoch(row)
        self.epoch, self.step_in_epoch = epoch + 1, 0
        self.epoch_loss_sum = [0.0] * len(LOSS_KEYS)
        self._save(mid_epoch=False, best=improved)
        ddp.barrier(self.dist)
        if self.is_main:
            for callback in self.epoch_callbacks:
                callback(self, row)

    def _evaluate(self) -> None:
        assert self.ema is not None
        common = {
            "backends": self.backends,
            "device": self.device,
            "half": self.amp,
            "conf_thres": self.cfg.conf_thres,
            "iou_thres": self.cfg.iou_thres,
            "progress": self.cfg.progress,
        }
        loader, ann = self._val(), ann_file(self.info, "val")
        self.metrics = evaluate_model(self.ema.module, loader, ann, **common)
        if self.cfg.eval_fused:
            self.fused_metrics = evaluate_model(self.ema.module, loader, ann, fused=True, **common)

    def _finish(self) -> dict[str, Any]:
        summary = {
            "model": self.model.layer_graph.name,
            "data": self.cfg.data,
            "img_size": self.img_size,
            "epochs": self.cfg.epochs,
            "steps": self.global_step,
            "metrics": _plain(self.metrics),
            "best_epoch": self.best_epoch,
            "best_fitness": self.best_fitness,
            "machine": machine_card(),  # bit-identical only on the same machine and software
        }
        if self.cfg.eval_fused:
            summary["fused_metrics"] = _plain(self.fused_metrics)
        (self.run_dir / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
        with rng_fork():
            plot_losses(self.run_dir)
        return summary


def _plain(metrics: dict[str, Any]) -> dict[str, Any]:
    """Metrics for JSON: Python numbers, NaN (no objects of a size) as None."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, numbers.Integral):
            out[key] = int(value)
        elif isinstance(value, numbers.Real):
            out[key] = float(value) if math.isfinite(float(value)) else None
        elif isinstance(value, str) or value is None:
            out[key] = value
    return out


def train(
    cfg: TrainConfig,
    *,
    graph: BlockGraph | None = None,
    backends: Backends | None = None,
    callbacks: Sequence[Callable[[Trainer, dict], None]] = (),
    epoch_callbacks: Sequence[Callable[[Trainer, dict], None]] = (),
) -> dict[str, Any]:
    """Run a fresh training run into ``cfg.out``; returns the ``metrics.json`` content.
    ``graph``: the model itself (``cfg.model`` then only names it in the run's record)."""
    last = Path(cfg.out) / "weights" / "last.pt"
    if last.exists():
        raise UserError(
            "already holds a run: resume it or choose another --out", source=str(cfg.out)
        )
    hooks = {"callbacks": callbacks, "epoch_callbacks": epoch_callbacks}
    return Trainer(cfg, backends=backends, graph=graph, **hooks).fit()


def resume(
    run_dir: str | Path,
    *,
    backends: Backends | None = None,
    callbacks: Sequence[Callable[[Trainer, dict], None]] = (),
    epoch_callbacks: Sequence[Callable[[Trainer, dict], None]] = (),
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Continue the run in ``run_dir`` from ``weights/last.pt`` with its stored config
    (``overrides``, e.g. ``device`` or ``epochs``, replace stored values)."""
    if os.path.isfile(run_dir):  # False, not OSError, for a name too long
        raise CheckpointError(
            "resume takes a run folder (one holding weights/last.pt)", source=str(run_dir)
        )
    ckpt = load_checkpoint(run_dir)
    path = Path(run_dir) / "weights" / "last.pt"  # what load_checkpoint read
    check_checkpoint(ckpt, path, resume=True)
    config = {**ckpt["config"], **(overrides or {}), "out": str(run_dir)}
    try:
        cfg = TrainConfig.from_dict(config)
    except (FieldError, TypeError) as exc:
        field = getattr(exc, "field", None)
        raise CheckpointError(
            f"stored training config refused: {exc}", source=str(path), field=field
        ) from None
    hooks = {"callbacks": callbacks, "epoch_callbacks": epoch_callbacks}
    return Trainer(cfg, backends=backends, checkpoint=ckpt, **hooks).fit()
