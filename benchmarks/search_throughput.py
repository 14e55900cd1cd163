"""Designs trained per core-hour: the old search path against this checkout, side by side.

The old path is the code of an earlier commit (default c17ac62, the last before the search was
pipelined): batch-synchronous batches, pycocotools' COCOeval, the per-tensor optimizer step, a
fresh worker process per trial, fp32 training. It is extracted with ``git archive`` into a
temporary folder and run with this virtual environment's packages; the new path is this
checkout (pipelined batches, faster-coco-eval, foreach EMA updates, channels-last max pooling,
workers reused across trials, and the main job's numerics: bf16 training, ``amp: true``, and
the fused optimizer step, ``fused_optimizer: true``, whose calibration is committed;
``--fp32`` leaves both out).

Both train the same work: the main job's space, constraint, recipe and budget (``--epochs``
and ``--images`` shrink it for a quick look), with a random sampler (proposals that do not
depend on results, so both paths train the same designs) and no early stopping (the two
paths' rung rules differ, and a stop saves work that is not throughput). They run one after
the other, each on an embedded Ray of ``--cpus`` CPUs; ``--asha`` adds the main job's rung rule
and NSGA-II back, which then lets the two paths train different designs.

    .venv/bin/python benchmarks/search_throughput.py [--old c17ac62] [--trials 8] [--epochs 10]

The last line reads ``designs per core-hour: old X, new Y, Rx``.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = """\
description: search throughput benchmark (old vs new path)
base: yolov7-tiny
metrics: [params, gflops, AP]
search:
  space: {space}
  trials: {trials}
  objectives: {{AP50: max, params: min}}
  sampler: {sampler}
  seed: 0
{scheduler}train:
  recipe: ours
  data: synth:images={images},size=128,val_fraction=0.3
  img_size: 128
  epochs: {epochs}
  optimizer: adam
{{amp}}  batch_size: 8
  nominal_batch: 8
  warmup_min_steps: 0
  eval_every: 0
  hyp: {{warmup_epochs: 1, mosaic9: 0.0, mixup: 0.0, paste_in: 0.0, scale: 0.25, obj: 25.0,
        lr0: 0.001, warmup_bias_lr: 0.01}}
resources: {{cpu: 1, gpu: 0}}
max_concurrent: {cpus}
"""


def _old_tree(rev: str, into: Path) -> Path:
    """The old commit's files (``git archive``), for its ``scaling_lab`` package."""
    data = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        archive.extractall(into, filter="data")
    return into


def _run(tree: Path, experiment: Path, work: Path, cpus: int) -> tuple[float, int, set]:
    """``lab sweep`` of ``experiment`` with ``tree``'s package: wall s, designs trained, and
    the keys of the trials."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-c", "from scaling_lab.cli import main; raise SystemExit(main())"]
    args += ["sweep", str(experiment), "--storage", str(work / "runs"), "--reports"]
    args += [str(work / "reports"), "--num-cpus", str(cpus), "--quiet"]
    started = time.perf_counter()
    subprocess.run(args, check=True, env=env, cwd=work, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    rows = pd.read_csv(work / "reports" / experiment.stem / "results.csv")
    trained = int(rows["status"].isin(["finished", "stopped"]).sum())
    return wall, trained, set(rows["key"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", default="c17ac62", help="the old path's commit")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--asha", action="store_true", help="NSGA-II and the rung rule")
    parser.add_argument(
        "--fp32", action="store_true", help="the new path in fp32 with the foreach step too"
    )
    args = parser.parse_args()
    rung = max(1, round(args.epochs * 0.6))  # the main job's rung: epoch 6 of 10
    scheduler = (
        f"scheduler: {{type: asha, metric: AP50, mode: max, grace_period: {rung}, "
        "reduction_factor: 2}\n"
    )
    space = ROOT / "search_spaces" / "elan_tiny.yaml"
    text = EXPERIMENT.format(
        space=space,
        trials=args.trials,
        epochs=args.epochs,
        sampler="nsga2" if args.asha else "random",
        scheduler=scheduler if args.asha else "",
        images=args.images,
        cpus=args.cpus,
    )
    rates, keys = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"old": _old_tree(args.old, Path(tmp) / "old"), "new": ROOT}
        for name, tree in paths.items():
            work = Path(tmp) / f"run-{name}"
            work.mkdir()
            experiment = work / "throughput.yaml"
            # the new path would also train the base beside the designs: not a design
            numerics = "  amp: true\n  fused_optimizer: true\n"  # the main job's
            amp = numerics if name == "new" and not args.fp32 else ""
            extra = "baselines: []\n" if name == "new" else ""
            experiment.write_text(text.replace("{amp}", amp) + extra)
            wall, trained, keys[name] = _run(tree, experiment, work, args.cpus)
            rates[name] = trained / (wall * args.cpus / 3600)
            print(
                f"{name}: {trained} designs trained of {len(keys[name])} trials in {wall:.0f} s "
                f"on {args.cpus} cores: {rates[name]:.1f} designs per core-hour"
            )
    same = "the same designs" if keys["old"] == keys["new"] else "different designs"
    print(f"both paths trained {same}")
    ratio = rates["new"] / rates["old"]
    print(f"designs per core-hour: old {rates['old']:.1f}, new {rates['new']:.1f}, {ratio:.2f}x")


if __name__ == "__main__":
    main()
