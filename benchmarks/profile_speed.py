"""How fast is the analytic counter next to thop and fvcore?

For every zoo model (or ``--models a,b``) this times, at the model's default input size (or
``--img``) and in the deploy form (or ``--training``):

1. analytic: ``scaling_lab.profile(name, deploy=...)`` end to end from the model name (spec
   parse, block graph, lowering, fusing, counting; no torch module). Run ``--analytic-repeats``
   times; the median is reported, and the first (cold) call separately.
2. thop: ``scaling_lab.analyze.counters.count_thop`` on the built module.
3. fvcore: ``scaling_lab.analyze.counters.count_fvcore`` on the built module.

The module is built once per model, before and outside the thop/fvcore timings (its build
time is reported in its own column), so the thop/fvcore figures are counting only: the
counter's copy of the module, its forward (thop) or trace (fvcore) and the sum. thop and
fvcore are imported and torch is warmed up before the first timing. thop/fvcore run once
(``--repeats N``: median of N).

torch's threads slow down several-fold when other processes compete for the cores, which
inflates the thop/fvcore times and the ratios; the "other CPU %" column measures that
competition for every model (from /proc/stat), and rows above 10% are flagged.

Runtime on a quiet 2-core CPU (measured on the YOLOv7 family: 46 s for its 8 models): about
0.5-3 s per 640 model and 5-12 s per 1280 (P6) model, so roughly 3 minutes for the whole zoo;
``--quick`` (P6 models at 640) roughly halves it.

Usage::

    .venv/bin/python benchmarks/profile_speed.py                 # every zoo model, deploy
    .venv/bin/python benchmarks/profile_speed.py --models yolov7,yolov7-tiny --training
    .venv/bin/python benchmarks/profile_speed.py --quick         # P6 models at 640

The acceptance check of the issue ("the analytic counter is at least 100x faster than thop on
yolov7") is printed at the end whenever yolov7 is among the models.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

import scaling_lab
from scaling_lab.analyze import counters

ACCEPT_MODEL = "yolov7"
ACCEPT_RATIO = 100.0
OTHER_CPU_LIMIT = 10.0  # % of the machine other processes may use before a row is flagged
QUICK_IMG = 640  # --quick: P6 models (default 1280) are profiled at this size

COLUMNS = (
    "model",
    "form",
    "img",
    "analytic_ms",
    "analytic_cold_ms",
    "build_s",
    "thop_s",
    "fvcore_s",
    "thop_over_analytic",
    "fvcore_over_analytic",
    "analytic_macs",
    "thop_macs",
    "fvcore_macs",
    "other_cpu_pct",
)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time the analytic counter against thop and fvcore on the zoo models."
    )
    parser.add_argument("--models", help="comma-separated zoo names (default: every zoo model)")
    parser.add_argument(
        "--img", type=_positive, help="input size for every model (default: each model's own size)"
    )
    parser.add_argument(
        "--training",
        action="store_true",
        help="profile the training form (default: the deploy form)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"profile models whose default size is above {QUICK_IMG} at "
        f"{QUICK_IMG} (the P6 models; ignored with --img)",
    )
    parser.add_argument(
        "--repeats",
        type=_positive,
        default=1,
        help="thop/fvcore runs per model, median reported (default 1)",
    )
    parser.add_argument(
        "--analytic-repeats",
        type=_positive,
        default=7,
        help="analytic runs per model, median reported (default 7)",
    )
    parser.add_argument(
        "--threads", type=_positive, help="torch.set_num_threads (default: torch's own choice)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("reports/profile_speed/profile_speed.csv"),
        help="CSV output path (default: %(default)s)",
    )
    return parser.parse_args(argv)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module_name: str) -> str:
    try:
        from importlib.metadata import version

        return version(module_name)
    except Exception:
        return "?"


def _load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "?"


def _busy_cpu_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy since boot (Linux), else None."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[:7])
    except (OSError, ValueError, IndexError):
        return None
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """CPU time other processes used while a block ran, as % of the machine's capacity."""

    def __enter__(self) -> OtherLoad:
        self.machine, self.own = _busy_cpu_seconds(), time.process_time()
        self.wall = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        machine = _busy_cpu_seconds()
        if machine is None or self.machine is None:
            self.pct = float("nan")
            return
        own = time.process_time() - self.own
        capacity = (time.perf_counter() - self.wall) * (os.cpu_count() or 1)
        self.pct = max(0.0, 100 * (machine - self.machine - own) / capacity)


def _median_time(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def _warm_up() -> None:
    """Import the counters' libraries and run one small forward, outside every timing."""
    import thop  # noqa: F401

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import fvcore.nn  # noqa: F401
    conv = torch.nn.Conv2d(3, 16, 3, padding=1).eval()
    with torch.no_grad():
        conv(torch.zeros(1, 3, 64, 64))


def _img_for(name: str, args: argparse.Namespace) -> int:
    if args.img is not None:
        return args.img
    size = scaling_lab.resolve_spec(name).img_size
    return min(size, QUICK_IMG) if args.quick else size


def bench_model(name: str, args: argparse.Namespace) -> dict[str, object]:
    deploy = not args.training
    img = _img_for(name, args)

    def analytic():
        return scaling_lab.profile(name, img_size=img, deploy=deploy)

    with OtherLoad() as other:
        row = _bench_model(name, img, deploy, analytic, args)
    row["other_cpu_pct"] = other.pct
    return row


def _bench_model(name, img, deploy, analytic, args) -> dict[str, object]:
    start = time.perf_counter()
    prof = analytic()
    cold = time.perf_counter() - start
    analytic_s, prof = _median_time(analytic, args.analytic_repeats)

    start = time.perf_counter()
    module = scaling_lab.create_model(name, img_size=img, deploy=deploy)
    build_s = time.perf_counter() - start

    thop_s, thop_res = _median_time(lambda: counters.count_thop(module, img), args.repeats)
    fvcore_s, fv_res = _median_time(lambda: counters.count_fvcore(module, img), args.repeats)
    macs = round(prof.gmacs * 1e9)
    return {
        "model": name,
        "form": prof.form,
        "img": img,
        "analytic_ms": analytic_s * 1e3,
        "analytic_cold_ms": cold * 1e3,
        "build_s": build_s,
        "thop_s": thop_s,
        "fvcore_s": fvcore_s,
        "thop_over_analytic": thop_s / analytic_s,
        "fvcore_over_analytic": fvcore_s / analytic_s,
        "analytic_macs": macs,
        "thop_macs": thop_res.macs,
        "fvcore_macs": fv_res.macs,
    }


def _fmt_row(row: dict[str, object]) -> list[str]:
    return [
        str(row["model"]),
        str(row["img"]),
        f"{row['analytic_ms']:.1f}",
        f"{row['analytic_cold_ms']:.1f}",
        f"{row['build_s']:.2f}",
        f"{row['thop_s']:.2f}",
        f"{row['fvcore_s']:.2f}",
        f"{row['thop_over_analytic']:.0f}x",
        f"{row['fvcore_over_analytic']:.0f}x",
        f"{row['analytic_macs'] / 1e9:.4f}",
        f"{row['thop_macs'] / 1e9:.4f}",
        f"{row['fvcore_macs'] / 1e9:.4f}",
        f"{row['other_cpu_pct']:.0f}",
    ]


HEADER = [
    "model",
    "img",
    "analytic ms",
    "(cold ms)",
    "build s",
    "thop s",
    "fvcore s",
    "thop/analytic",
    "fvcore/analytic",
    "analytic GMACs",
    "thop GMACs",
    "fvcore GMACs",
    "other CPU %",
]


def print_table(rows: list[dict[str, object]]) -> None:
    cells = [HEADER, *(_fmt_row(r) for r in rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    for k, line in enumerate(cells):
        print(
            "  ".join(
                v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(line, widths))
            )
        )
        if k == 0:
            print("  ".join("-" * w for w in widths))


def write_csv(rows: list[dict[str, object]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
            )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    known = scaling_lab.list_models()
    names = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else known
    unknown = [m for m in names if m not in known]
    if unknown:
        print(
            f"unknown model(s): {', '.join(unknown)} (known: {', '.join(known)})", file=sys.stderr
        )
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)

    form = "training (unfused)" if args.training else "deploy (fused, no auxiliary head)"
    size = (
        f"{args.img} for every model"
        if args.img
        else f"model default, capped at {QUICK_IMG} (--quick)"
        if args.quick
        else "model default"
    )
    print("protocol")
    print(
        f"  torch {torch.__version__}, thop {_version('thop')}, fvcore {_version('fvcore')}, "
        f"python {platform.python_version()}"
    )
    print(
        f"  CPU: {_cpu_name()}, {os.cpu_count()} logical cores, torch threads "
        f"{torch.get_num_threads()}, load average at start {_load()}"
    )
    print(f"  form: {form}; input: batch 1, {size}")
    print(
        f"  analytic: scaling_lab.profile(name, deploy=...) end to end from the name "
        f"(no torch module), median of {args.analytic_repeats} after one cold call"
    )
    print(
        f"  thop / fvcore: counters.count_thop / count_fvcore on a module built once before "
        f"timing (build not in the counter's time), {args.repeats} run(s), median"
    )
    print("  timer: time.perf_counter; ratios = counter seconds / analytic median seconds")
    print(
        "  other CPU %: CPU time used by other processes while a model was measured, in % of"
        " the machine (above ~10%, contended torch threads inflate thop/fvcore times)"
    )
    print(flush=True)

    _warm_up()
    rows = []
    total_start = time.perf_counter()
    for name in names:
        rows.append(bench_model(name, args))
        r = rows[-1]
        print(
            f"  done {name} @ {r['img']}: analytic {r['analytic_ms']:.1f} ms, "
            f"thop {r['thop_s']:.2f} s, fvcore {r['fvcore_s']:.2f} s",
            flush=True,
        )
    total = time.perf_counter() - total_start

    print()
    print_table(rows)
    write_csv(rows, args.out)
    print(f"\nwrote {args.out}; total {total:.0f} s; load average at end {_load()}")
    busy = [str(r["model"]) for r in rows if r["other_cpu_pct"] > OTHER_CPU_LIMIT]
    if busy:
        print(
            f"  WARNING: other processes used > {OTHER_CPU_LIMIT:.0f}% of the CPU while "
            f"measuring {', '.join(busy)}: those times and ratios are not trustworthy; rerun "
            "on a quiet machine"
        )

    for r in rows:
        if r["model"] == ACCEPT_MODEL:
            ratio = r["thop_over_analytic"]
            verdict = "PASS" if ratio >= ACCEPT_RATIO else "FAIL"
            print(
                f"\nacceptance ({ACCEPT_MODEL}, {r['form']}, img {r['img']}): analytic "
                f"{r['analytic_ms']:.1f} ms vs thop {r['thop_s']:.2f} s -> analytic is "
                f"{ratio:.0f}x faster than thop (needs >= {ACCEPT_RATIO:.0f}x): {verdict}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
