"""Small stand-ins for the data pipeline, the loss and the COCO evaluator, for trainer tests.

They keep the real interfaces (``scaling_lab.train.backends``) and the properties that make
resume hard: the loader shuffles with its own seeded generator, and every sample's
"augmentation" draws from the python, numpy and torch global RNGs.

Run as a script (``python -m tests.helpers.train_fakes OUT [--resume]``) it trains the tiny
test model on fake data; the slow tests kill it with SIGKILL and resume it.
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from scaling_lab.train.backends import Backends
from scaling_lab.train.trainer import TrainConfig, resume, train

FAKE_HYP = {
    "lr0": 0.01,
    "lrf": 0.1,
    "momentum": 0.937,
    "weight_decay": 0.0005,
    "warmup_epochs": 1.0,
    "warmup_momentum": 0.8,
    "warmup_bias_lr": 0.1,
    "box": 0.05,
    "cls": 0.3,
    "obj": 0.7,
    "anchor_t": 4.0,
}


@dataclass
class FakeInfo:
    nc: int = 3
    n_train: int = 16
    n_val: int = 4
    bad_index: int | None = None  # a sample that raises, like a corrupt image
    val_ann: str = "fake_instances_val.json"

    def records(self, split: str) -> list:
        return []  # no labels: autoanchor keeps the model's anchors


def fake_resolve(data: str, **overrides) -> FakeInfo:
    return FakeInfo(**overrides)


class FakeDataset(Dataset):
    def __init__(self, n: int, img_size: int, nc: int, augment: bool, bad: int | None) -> None:
        self.n, self.img_size, self.nc, self.augment, self.bad = n, img_size, nc, augment, bad

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        if index == self.bad:
            raise ValueError(f"fake dataset: sample {index} (img_{index}.jpg) is corrupt")
        gen = torch.Generator().manual_seed(index)
        image = torch.rand(3, self.img_size, self.img_size, generator=gen)
        boxes = torch.rand(1 + index % 3, 4, generator=gen) * 0.5 + 0.25
        if self.augment:  # draws from every global RNG, as mosaic / HSV / flips do
            image = image * (0.75 + 0.5 * random.random())
            if np.random.rand() < 0.5:
                image = image.flip(-1)
                boxes[:, 0] = 1 - boxes[:, 0]
            image = image + 0.05 * torch.rand(())
        classes = torch.full((len(boxes), 1), float(index % self.nc))
        return image.clamp(0, 1), torch.cat([classes, boxes], 1), index


def collate(batch):
    images, labels, ids = zip(*batch)
    targets = [
        torch.cat([torch.full((len(lab), 1), float(i)), lab], 1) for i, lab in enumerate(labels)
    ]
    shapes = [(im.shape[1], im.shape[2]) for im in images]
    return torch.stack(images), torch.cat(targets), list(ids), shapes


def fake_build_dataloader(
    info,
    split,
    *,
    img_size,
    batch_size,
    augment,
    hyp=None,
    workers=0,
    seed=0,
    shuffle=None,
    rank=-1,
    world_size=1,
):
    n = info.n_train if split == "train" else info.n_val
    dataset = FakeDataset(n, img_size, info.nc, augment, info.bad_index)
    shuffle = split == "train" if shuffle is None else shuffle
    if rank != -1:
        sampler = DistributedSampler(dataset, world_size, rank, shuffle=shuffle, seed=seed)
        return DataLoader(dataset, batch_size, sampler=sampler, collate_fn=collate)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=workers,
        collate_fn=collate,
    )


class FakeLoss:
    """Pushes boxes to 0 and objectness / classes towards the targets' class mix."""

    def __init__(
        self, model, hyp, *, aux_assigner, aux_constraint, aux_weight, assign="own_prior"
    ) -> None:
        self.hyp = hyp
        self.bce = nn.BCEWithLogitsLoss()

    def __call__(self, outputs, targets, images):
        target_level = targets[:, 1].float().mean() / 3 if len(targets) else images.new_zeros(())
        box = sum(o[..., :4].tanh().pow(2).mean() for o in outputs) * self.hyp["box"]
        obj = sum(
            self.bce(o[..., 4].float(), torch.full_like(o[..., 4].float(), 0.1)) for o in outputs
        )
        cls = sum(
            self.bce(o[..., 5:].float(), torch.full_like(o[..., 5:].float(), target_level))
            for o in outputs
        )
        obj, cls = obj * self.hyp["obj"], cls * self.hyp["cls"]
        total = box + obj + cls
        return total * images.shape[0], torch.stack([box, obj, cls, total]).detach()


@torch.no_grad()
def fake_evaluate(
    model,
    loader,
    ann_file,
    *,
    conf_thres,
    iou_thres,
    device,
    half=False,
    save_json=None,
    progress=True,
):
    """An "AP" that depends on the weights: mean objectness of the decoded outputs."""
    assert not model.training
    scores = []
    for images, _targets, _ids, _shapes in loader:
        images = images.to(device)
        out = model(images.half() if half else images)
        scores.append(out[..., 4].float().mean())
    ap = float(torch.stack(scores).mean())
    return {
        "AP": ap,
        "AP50": min(1.0, 1.5 * ap),
        "AP75": ap / 2,
        "APs": ap / 3,
        "APm": ap / 2,
        "APl": ap,
    }


def fake_backends(**info_overrides) -> Backends:
    return Backends(
        resolve_data=lambda data: fake_resolve(data, **info_overrides),
        build_dataloader=fake_build_dataloader,
        default_hyp=lambda size: dict(FAKE_HYP),
        criterion=FakeLoss,
        evaluate=fake_evaluate,
    )


def fake_config(spec_path: str | Path, out: str | Path, **kw) -> TrainConfig:
    settings = {
        "model": str(spec_path),
        "data": "fake",
        "out": str(out),
        "epochs": 2,
        "batch_size": 4,
        "nominal_batch": 8,
        "device": "cpu",
        "seed": 3,
        "deterministic": True,
        "warmup_min_steps": 0,
        "ema_tau": 4.0,
        "tensorboard": False,
        "progress": False,
        **kw,
    }
    return TrainConfig(**settings)


class KilledError(Exception):
    """Stands in for a kill: raised from a step callback, nothing is saved afterwards."""


def kill_after(step: int):
    def callback(trainer, row):
        if row["step"] == step:
            raise KilledError(f"killed after step {step}")

    return callback


def main(argv: list[str]) -> None:
    """``OUT [--resume] [--spec PATH] [--n-train N] [--save-every N] [--kill-after STEP]``."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--spec")
    parser.add_argument("--n-train", type=int, default=16)
    parser.add_argument("--save-every", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--img", type=int, default=32)
    parser.add_argument("--kill-after", type=int, help="raise after this global step")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    backends = fake_backends(n_train=args.n_train)
    callbacks = [] if args.kill_after is None else [kill_after(args.kill_after)]
    if args.resume:
        resume(args.out, backends=backends, callbacks=callbacks)
    else:
        cfg = fake_config(args.spec, args.out, save_every=args.save_every, epochs=args.epochs)
        train(cfg, backends=backends, callbacks=callbacks)


if __name__ == "__main__":
    main(sys.argv[1:])
