"""A sweep under a seeded schedule of faults (issue 29): how many results it loses or changes.

Four tiny trainings (yolov7-tiny, 64 px, three epochs of five batches) run once undisturbed
on an embedded Ray, then on a two-node Ray cluster on loopback (``ray start --head`` and a
worker node, each with its own temp dir) while the schedule strikes: trial faults at seeded
epochs, batches and kinds (``SCALING_LAB_FAULTS``: SIGKILL of the trial's process, an
exception, out of memory, a data loader error), the worker node killed once a trial has trained
an epoch, and the driver killed once a trial has finished, followed by ``lab sweep --resume``
against the same cluster. A result is lost when its key has no finished row, changed when its
AP, history, per-step losses or final weights differ in any bit from the undisturbed run's.

Usage::

    .venv/bin/python benchmarks/chaos_sweep.py              # seed 0, two trial faults
    .venv/bin/python benchmarks/chaos_sweep.py --seed 3 --trial-faults 3 --keep runs/chaos

Prints the schedule, trials retried, the wall time of both runs and the retries' overhead,
and as its last line ``faults injected N, results lost L, results changed C``. Takes 3-6
minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.helpers

from tests.helpers.chaos import RAY, run_chaos


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="the fault schedule's seed")
    parser.add_argument("--trial-faults", type=int, default=2, help="trial faults (1-4)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="keep the sweeps' folders here")
    args = parser.parse_args(argv)
    if not RAY.is_file():
        print(f"no `ray` command next to {sys.executable}", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="chaos-"))
    try:
        result = run_chaos(workdir, args.seed, args.epochs, args.trial_faults)
    finally:
        if args.keep is not None:
            shutil.copytree(workdir, args.keep, dirs_exist_ok=True)
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"schedule (seed {args.seed}): " + "; ".join(result.faults))
    print(f"trials retried {result.retried} of 4; every epoch once: {result.epochs_once}")
    print(
        f"wall: undisturbed {result.reference_s:.1f} s, under faults {result.chaos_s:.1f} s "
        f"(overhead {result.chaos_s - result.reference_s:+.1f} s, "
        f"{100 * (result.chaos_s / result.reference_s - 1):+.0f}%; the cluster run includes "
        "Ray's node-death detection and the driver's restart)"
    )
    attempts = ", ".join(f"{key} {n}" for key, n in result.attempts.items())
    print(f"attempts per trial (a retry or the resume after the driver's kill): {attempts}")
    if result.lost or result.changed:
        print(f"lost: {result.lost}; changed: {result.changed}")
    print(result.summary())
    return 0 if not (result.lost or result.changed) and result.epochs_once else 1


if __name__ == "__main__":
    sys.exit(main())
