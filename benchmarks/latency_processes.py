"""Latency where users run models: every measurement in its own fresh, plain process.

In-process comparisons (``benchmarks/latency.py``) share one allocator history between the
variants; a user's serving process has its own. This benchmark starts a new Python process
for every measurement, with the default allocator (no ``mallopt``, no environment tuning), and
alternates the sides in a new random order every round, so drift hits them alike:

- ``ours``: a minimal script: import torch and ``scaling_lab``, build the fused deploy model
  (``analyze.latency.deploy_model``), ``--warmup`` calls, ``--calls`` timed calls under
  ``torch.inference_mode``; the median;
- ``reference`` (with ``--reference PATH``): the same minimal script around the public YOLOv7
  implementation: its ``models.yolo.Model`` built from ``cfg/training/MODEL.yaml``, fused by its
  own ``fuse()`` (BatchNorm, RepConv, implicit knowledge), run by ``--reference-python``
  (an environment where that code imports; the same torch is assumed and recorded);
- ``bench``: ``lab bench MODEL --img N --threads T --json``, the tool itself, in its process.

Besides the latency, each minimal process counts the minor page faults per timed call
(``getrusage``): a forward whose activations are served from memory the allocator keeps needs
none; one whose freed memory went back to the OS faults every page in again (glibc's
heap trimming and its moving mmap threshold), which is what made identical kernels differ by
10-20% between processes.

Reported per model: each side's median over rounds (of the per-process medians), the
per-round ratios ours/reference and bench/ours with their median and range, and the median
faults per call. Writes ``reports/latency/processes_<T>t.json`` and ``.csv`` (T: threads).

Usage::

    .venv/bin/python benchmarks/latency_processes.py --reference ../reference_yolov7 \\
        --reference-python ../ref_venv/bin/python --threads 1 --rounds 3
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIDES = ("ours", "reference", "bench")

# The minimal process: nothing but torch, the model's own code, the input and the timed calls.
CHILD = r"""
import json, resource, statistics, sys, time
side, model, img, threads, warmup, calls, where = sys.argv[1:8]
img, threads, warmup, calls = int(img), int(threads), int(warmup), int(calls)
import torch
torch.set_num_threads(threads)
if side == "ours":
    from scaling_lab.analyze.latency import deploy_model
    net = deploy_model(model, img_size=img)[0]
else:
    sys.path.insert(0, where)
    from models.yolo import Model
    net = Model(f"{where}/cfg/training/{model}.yaml").eval()
    with torch.no_grad():
        net.fuse()
net.eval()
x = torch.rand(1, 3, img, img)
times, faults = [], []
with torch.inference_mode():
    for _ in range(warmup):
        net(x)
    for _ in range(calls):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.perf_counter()
        net(x)
        times.append(time.perf_counter() - t0)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print("RESULT " + json.dumps({
    "ms": 1000 * statistics.median(times), "min_ms": 1000 * min(times),
    "faults_per_call": statistics.median(faults), "torch": torch.__version__,
}))
"""


def run_minimal(side: str, model: str, args: argparse.Namespace) -> dict:
    """One fresh process of ``side``; its median latency and faults per call."""
    python = args.reference_python if side == "reference" else sys.executable
    where = str(Path(args.reference).resolve()) if args.reference else ""
    argv = [python, "-c", CHILD, side, model, str(args.img), str(args.threads)]
    argv += [str(args.warmup), str(args.calls), where]
    return _result(subprocess.run(argv, capture_output=True, text=True, env=_plain_env(args)))


def run_bench(model: str, args: argparse.Namespace) -> dict:
    """``lab bench`` in its own process, as a user runs it."""
    argv = [sys.executable, str(ROOT / "lab.py"), "bench", model, "--img", str(args.img)]
    argv += ["--threads", str(args.threads), "--warmup", str(args.warmup)]
    argv += ["--iters", str(args.calls), "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, env=_plain_env(args))
    if done.returncode != 0:
        raise SystemExit(f"lab bench {model} failed:\n{done.stderr[-2000:]}")
    data = json.loads(done.stdout)
    return {"ms": float(data["latency_ms"]), "faults_per_call": None}


def _plain_env(args: argparse.Namespace) -> dict[str, str]:
    """The caller's environment without allocator tuning, threads fixed to ``--threads``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    env["OMP_NUM_THREADS"] = str(args.threads)
    env["PYTHONPATH"] = str(ROOT)
    return env


def _result(done: subprocess.CompletedProcess) -> dict:
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise SystemExit(f"a measuring process failed:\n{done.stderr[-2000:]}")


def measure(model: str, sides: list[str], args: argparse.Namespace, rng: random.Random) -> dict:
    rounds: list[dict[str, dict]] = []
    for index in range(args.rounds):
        order = sides[:]
        rng.shuffle(order)
        row = {}
        for side in order:
            if side == "bench":
                row[side] = run_bench(model, args)
            else:
                row[side] = run_minimal(side, model, args)
        rounds.append(row)
        shown = ", ".join(f"{s} {row[s]['ms']:.1f} ms" for s in sides)
        print(f"  {model} round {index + 1}/{args.rounds}: {shown}", flush=True)
    return summarize(model, sides, rounds)


def summarize(model: str, sides: list[str], rounds: list[dict[str, dict]]) -> dict:
    """Median per side, and per-round ratios (the sides of one round ran back to back)."""
    out: dict = {"model": model, "rounds": rounds, "median_ms": {}, "faults_per_call": {}}
    for side in sides:
        out["median_ms"][side] = statistics.median(r[side]["ms"] for r in rounds)
        faults = [r[side]["faults_per_call"] for r in rounds]
        faults = [f for f in faults if f is not None]
        out["faults_per_call"][side] = statistics.median(faults) if faults else None
    ratios = {}
    for top, bottom in (("ours", "reference"), ("bench", "ours")):
        if top in sides and bottom in sides:
            per_round = [r[top]["ms"] / r[bottom]["ms"] for r in rounds]
            ratios[f"{top}/{bottom}"] = {
                "median": statistics.median(per_round),
                "min": min(per_round),
                "max": max(per_round),
                "per_round": per_round,
            }
    out["ratios"] = ratios
    return out


def write(results: list[dict], args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    protocol = {
        "processes": "one fresh process per measurement, default allocator, sides alternated "
        "in a new random order every round",
        "img": args.img,
        "threads": args.threads,
        "warmup": args.warmup,
        "calls": args.calls,
        "rounds": args.rounds,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "reference": str(args.reference) if args.reference else None,
    }
    payload = {"protocol": protocol, "results": results}
    stem = f"processes_{args.threads}t"  # one file pair per thread count
    (out / f"{stem}.json").write_text(json.dumps(payload, indent=1) + "\n")
    with (out / f"{stem}.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["model", "img", "threads", "side", "median_ms", "faults_per_call"])
        for result in results:
            for side, ms in result["median_ms"].items():
                faults = result["faults_per_call"][side]
                row = [result["model"], args.img, args.threads, side, f"{ms:.2f}", faults]
                writer.writerow(row)
    print(f"wrote {out / stem}.json and .csv")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="yolov7-tiny,yolov7")
    parser.add_argument("--img", type=int, default=640)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-bench", action="store_true", help="skip the lab bench side")
    parser.add_argument("--reference", help="a checkout of the public YOLOv7 implementation")
    parser.add_argument("--reference-python", default=sys.executable)
    parser.add_argument("--out", default=str(ROOT / "reports" / "latency"))
    args = parser.parse_args(argv)
    if args.reference and not (Path(args.reference) / "models" / "yolo.py").is_file():
        parser.error(f"--reference {args.reference}: no models/yolo.py there")
    for name in ("img", "threads", "warmup", "calls", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sides = ["ours"] + (["reference"] if args.reference else [])
    sides += [] if args.no_bench else ["bench"]
    rng = random.Random(args.seed)
    results = [measure(m.strip(), sides, args, rng) for m in args.models.split(",") if m.strip()]
    for result in results:
        ratios = "; ".join(
            f"{name} {r['median']:.3f} (range {r['min']:.3f}-{r['max']:.3f})"
            for name, r in result["ratios"].items()
        )
        faults = result["faults_per_call"].items()
        faults = ", ".join(f"{side} {f:g}" for side, f in faults if f is not None)
        where = f"{result['model']} @{args.img}, {args.threads} thread(s)"
        print(f"{where}: {ratios}; faults/call: {faults}")
    write(results, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
