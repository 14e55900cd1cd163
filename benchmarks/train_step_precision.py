"""Training-step time in fp32 and under bf16 autocast (``amp: true`` on the CPU), side by
side in one run, on the real trainer at the main job's budget.

Each mode trains ``--model`` for one epoch on the main job's data (experiments/elan_search.yaml:
400 synthetic images at 128 px, batch 8, Adam, one thread, as a trial runs), alternating fp32
and bf16 ``--repeats`` times; the step time is the trainer's own (``steps.csv`` ``time_s``:
forward, loss, backward, optimizer step; data loading not included), median over the steps
after the first ``--skip`` of each run. The last lines give the mean loss of each mode's first
step (the same weights and batch: bf16 rounds it) and the ratio.

    .venv/bin/python benchmarks/train_step_precision.py [--model yolov7-tiny] [--repeats 2]

Last line: ``train step ms: fp32 A, bf16 B, R x``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from scaling_lab.machine import machine_card
from scaling_lab.train.config import TrainConfig
from scaling_lab.train.run_log import read_csv
from scaling_lab.train.trainer import train

BUDGET = {  # experiments/elan_search.yaml's train: settings, one epoch
    "data": "synth:images=400,size=128,val_fraction=0.3",
    "img_size": 128,
    "epochs": 1,
    "optimizer": "adam",
    "batch_size": 8,
    "nominal_batch": 8,
    "warmup_min_steps": 0,
    "recipe": "ours",
    "progress": False,
    "hyp": {
        "warmup_epochs": 1,
        "mosaic9": 0.0,
        "mixup": 0.0,
        "paste_in": 0.0,
        "scale": 0.25,
        "obj": 25.0,
        "lr0": 0.001,
        "warmup_bias_lr": 0.01,
    },
}


def run(model: str, amp: bool, out: Path, skip: int) -> tuple[float, float]:
    """Median step seconds after ``skip`` steps, and the first step's loss."""
    train(TrainConfig(model=model, out=str(out), amp=amp, seed=0, **BUDGET))
    rows = read_csv(out / "steps.csv")
    return statistics.median(float(r["time_s"]) for r in rows[skip:]), float(rows[0]["total"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="yolov7-tiny")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip", type=int, default=3, help="untimed steps at each run's start")
    args = parser.parse_args()
    torch.set_num_threads(1)
    card = machine_card()
    print(f"machine: {card}")
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    first: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(args.repeats):
            for mode in ("fp32", "bf16"):
                out = Path(folder) / f"{mode}-{repeat}"
                step_s, loss = run(args.model, mode == "bf16", out, args.skip)
                times[mode].append(step_s)
                first[mode] = loss
                print(f"{args.model} {mode} run {repeat}: {step_s * 1e3:.1f} ms per step")
    fp32, bf16 = (statistics.median(times[m]) * 1e3 for m in ("fp32", "bf16"))
    print(f"first step loss: fp32 {first['fp32']:.6f}, bf16 {first['bf16']:.6f}")
    print(f"train step ms: fp32 {fp32:.1f}, bf16 {bf16:.1f}, {fp32 / bf16:.2f}x")


if __name__ == "__main__":
    main()
