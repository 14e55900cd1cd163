"""Training-step time in fp32 and under bf16 autocast (``amp: true`` on the CPU), side by
side in one run, on the real trainer at the main job's budget.

Each mode trains ``--model`` for one epoch at the main job's budget, read from
experiments/elan_search.yaml (400 synthetic images at 128 px, batch 8, Adam; one thread, as
a trial runs), alternating fp32 and bf16 ``--repeats`` times; the step time is the trainer's
own (``steps.csv`` ``time_s``: forward, loss, backward, optimizer step; data loading not
included), median over the steps after the first ``--skip`` of each run. The last lines give
the loss of each mode's first step (the same weights and batch: bf16 rounds it) and the ratio.

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
from scaling_lab.sweep.experiment import load_experiment
from scaling_lab.train.config import TrainConfig
from scaling_lab.train.run_log import read_csv
from scaling_lab.train.trainer import train

MAIN_JOB = Path(__file__).resolve().parents[1] / "experiments" / "elan_search.yaml"


def budget() -> dict:
    """The main job's training settings (``amp`` is set per mode), one epoch, no progress
    bars."""
    train = load_experiment(MAIN_JOB, check_graphs=False).train_config()
    return {**train, "epochs": 1, "progress": False}


def run(model: str, amp: bool, out: Path, skip: int) -> tuple[float, float]:
    """Median step seconds after ``skip`` steps, and the first step's loss."""
    train(TrainConfig(model=model, out=str(out), seed=0, **{**budget(), "amp": amp}))
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
