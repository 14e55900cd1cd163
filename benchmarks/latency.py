"""Side-by-side latency: training vs fused form, eager vs channels-last vs compiled, and the
generated model vs a hand-written ``nn.Module`` of yolov7-tiny.

For each model (default: yolov7-tiny and yolov7 at 640, CPU) the variants are:

- ``training``: the training-form module (BatchNorm, implicit knowledge), eval mode;
- ``fused``: the same weights re-parameterized (``reparameterize``), eval mode; the baseline;
- ``channels_last``: the fused module and input in NHWC memory format;
- ``compiled``: ``torch.compile`` of the fused module (default mode; compile time reported
  in its own column, never in the latency);
- ``hand_written`` (yolov7-tiny only): ``HandWrittenTiny`` below, a plain ``nn.Module`` with
  an explicit forward, loaded with the fused weights and checked to give the same output;
- ``hand_twin``: a second instance of it (a control: identical code and weights, other
  memory), so ``hand_twin/hand_written`` shows the noise floor of a comparison in one process
  (``--no-control`` drops it). Identical models land a few % apart in one process and the
  sign changes from process to process (memory placement), so read ``fused/hand_written``
  against this floor, or rerun.

Protocol: batch 1, fp32, one random input per model, ``torch.inference_mode``, gc off,
``time.perf_counter_ns`` per call (``scaling_lab.analyze.timing.time_calls``). Each variant
first gets ``--warmup`` untimed calls. Then rounds: in each round every variant runs
``--iters`` (default 1) timed calls, the variants in a new random order every round (seeded),
so drift and bursts of load hit them alike and no variant always follows the same one (with
a fixed cyclic order ABCD, BCDA, ... the generated and the hand-written model, which run the
same kernels, came out 6% apart in one run; with random orders, within 1%). Without
``--rounds``, as many rounds as fit in ``--budget-s`` (60 s) of timed calls, at least 7 and
at most 41. A variant's round median is the median of its calls in the round; a ratio is
computed per round (variant / fused in the same round) and the reported ratio is the median
over rounds, with the range; the ratio of the minimums over all calls is given too (the least
disturbed calls). The reported latency of a variant is the median of its round medians.

Compile time: inductor keeps its caches (torch's default), so only the first run on a machine
compiles cold; a rerun reuses the compiled kernels and reports a few seconds.
``--cold-compile`` disables the caches to measure a cold compile every time.

Allocator: on glibc the benchmark fixes malloc's mmap and trim thresholds first (``fix_malloc``;
``--default-malloc`` to keep the defaults); the protocol records which.

Threads: 1 by default. With one OpenMP thread per core, a process that takes a core away
stalls every parallel region (on a shared 2-core machine we measured 4-6x slower medians and
single calls up to 30x slower), which ruins ratios; one thread is far more robust.
``--threads 2`` to use both cores of a quiet machine.
``other CPU %`` is the CPU time other processes used during the rounds, as a share of the
machine; above ~10% the figures are suspect and a warning is printed.

Usage::

    .venv/bin/python benchmarks/latency.py                       # tiny + yolov7, 640, CPU
    .venv/bin/python benchmarks/latency.py --models yolov7-tiny --rounds 9 --threads 2
    .venv/bin/python benchmarks/latency.py --no-compile          # skip torch.compile

Writes ``reports/latency/latency.csv`` (one row per model and variant) and ``latency.json``
(every round's medians, the ratios and the full protocol).
"""

from __future__ import annotations

import argparse
import copy
import csv
import ctypes
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

import scaling_lab
from scaling_lab.analyze import latency, timing
from scaling_lab.nn.reparam import reparameterize

OTHER_CPU_LIMIT = 10.0  # % of the machine other processes may use before a warning
HAND_WRITTEN_MODEL = "yolov7-tiny"
HAND_TOLERANCE = 0.05  # acceptance: generated within 5% of hand-written
MIN_ROUNDS, MAX_ROUNDS = 7, 41
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
FIXED_MALLOC_BYTES = 256 * 2**20


def fix_malloc() -> str:
    """Fix glibc's mmap and trim thresholds at 256 MiB, so activations are reused from the heap
    instead of being mapped and faulted in again on some calls. glibc's default threshold
    moves with the process's history, which made identical models differ by up to ~7% from
    one process to the next in our runs (about 2% with the thresholds fixed). Linux/glibc only;
    returns what was done, for the protocol."""
    if not sys.platform.startswith("linux"):
        return "unchanged (not Linux)"
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return "unchanged (no glibc)"
    ok = libc.mallopt(M_MMAP_THRESHOLD, FIXED_MALLOC_BYTES) == 1
    ok = libc.mallopt(M_TRIM_THRESHOLD, FIXED_MALLOC_BYTES) == 1 and ok
    if not ok:
        return "unchanged (mallopt refused)"
    return "glibc mallopt: mmap and trim thresholds fixed at 256 MiB (by the benchmark)"


# --- the hand-written yolov7-tiny -------------------------------------------------------
# Written from the architecture in scaling_lab/zoo/specs/yolov7-tiny.yaml (deploy form: every
# conv carries a bias, BatchNorm already folded; leaky ReLU 0.1). Nothing here is generated.

TINY_ANCHORS = (  # the reference's P5 set, as the zoo's yolov7-tiny
    (10, 13, 16, 30, 33, 23),  # P3/8
    (30, 61, 62, 45, 59, 119),  # P4/16
    (116, 90, 156, 198, 373, 326),  # P5/32
)
TINY_STRIDES = (8, 16, 32)


class Conv(nn.Module):
    """Conv2d with bias ('same' padding) and leaky ReLU."""

    def __init__(self, c_in: int, c_out: int, k: int = 1, s: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, s, k // 2, bias=True)
        self.act = nn.LeakyReLU(0.1, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class TinyElan(nn.Module):
    """Two 1x1 entries, two stacked 3x3 convs, concat of all four (newest first), 1x1 out."""

    def __init__(self, c_in: int, c_hidden: int, c_out: int) -> None:
        super().__init__()
        self.cv1 = Conv(c_in, c_hidden)
        self.cv2 = Conv(c_in, c_hidden)
        self.cv3 = Conv(c_hidden, c_hidden, 3)
        self.cv4 = Conv(c_hidden, c_hidden, 3)
        self.cv5 = Conv(4 * c_hidden, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.cv1(x)
        b = self.cv2(x)
        c = self.cv3(b)
        d = self.cv4(c)
        return self.cv5(torch.cat([d, c, b, a], 1))


class TinySppCsp(nn.Module):
    """yolov7-tiny's light SPPCSPC: a 1x1 shortcut, a 1x1 branch pooled at 5, 9, 13."""

    def __init__(self, c_in: int, c: int) -> None:
        super().__init__()
        self.cv1 = Conv(c_in, c)  # shortcut
        self.cv2 = Conv(c_in, c)  # pooled branch
        self.pools = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in (5, 9, 13))
        self.cv3 = Conv(4 * c, c)
        self.cv4 = Conv(2 * c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.cv1(x)
        y = self.cv2(x)
        p5, p9, p13 = (pool(y) for pool in self.pools)
        y = self.cv3(torch.cat([p13, p9, p5, y], 1))
        return self.cv4(torch.cat([y, shortcut], 1))


class TinyHead(nn.Module):
    """1x1 conv per level; eval output: decoded boxes (B, N, 5 + nc), xywh in pixels."""

    def __init__(self, c_ins: tuple[int, ...], nc: int) -> None:
        super().__init__()
        self.na, self.no = len(TINY_ANCHORS[0]) // 2, nc + 5
        self.m = nn.ModuleList(nn.Conv2d(c, self.na * self.no, 1) for c in c_ins)
        anchors = torch.tensor(TINY_ANCHORS, dtype=torch.float32).view(len(c_ins), self.na, 2)
        self.register_buffer("anchors", anchors)
        self.register_buffer("stride", torch.tensor(TINY_STRIDES, dtype=torch.float32))

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        out = []
        for i, x in enumerate(xs):
            y = self.m[i](x)
            b, _, h, w = y.shape
            y = y.view(b, self.na, self.no, h, w).permute(0, 1, 3, 4, 2).contiguous()
            gy, gx = torch.meshgrid(
                torch.arange(h, device=y.device), torch.arange(w, device=y.device), indexing="ij"
            )
            grid = torch.stack((gx, gy), -1).view(1, 1, h, w, 2).to(y.dtype)
            y = y.sigmoid()
            xy = (y[..., :2] * 2 - 0.5 + grid) * self.stride[i].to(y.dtype)
            wh = (y[..., 2:4] * 2) ** 2 * self.anchors[i].view(1, -1, 1, 1, 2).to(y.dtype)
            out.append(torch.cat((xy, wh, y[..., 4:]), -1).view(b, -1, self.no))
        return torch.cat(out, 1)


class HandWrittenTiny(nn.Module):
    """yolov7-tiny, deploy form, written by hand."""

    def __init__(self, nc: int = 80) -> None:
        super().__init__()
        # backbone
        self.stem1 = Conv(3, 32, 3, 2)
        self.stem2 = Conv(32, 64, 3, 2)
        self.elan1 = TinyElan(64, 32, 64)
        self.pool = nn.MaxPool2d(2, 2)
        self.elan2 = TinyElan(64, 64, 128)
        self.elan3 = TinyElan(128, 128, 256)
        self.elan4 = TinyElan(256, 256, 512)
        # neck, top-down
        self.spp = TinySppCsp(512, 256)
        self.lat5 = Conv(256, 128)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.lat4 = Conv(256, 128)
        self.td4 = TinyElan(256, 64, 128)
        self.lat4b = Conv(128, 64)
        self.lat3 = Conv(128, 64)
        self.out3 = TinyElan(128, 32, 64)
        # neck, bottom-up
        self.bu3 = Conv(64, 128, 3, 2)
        self.out4 = TinyElan(256, 64, 128)
        self.bu4 = Conv(128, 256, 3, 2)
        self.out5 = TinyElan(512, 128, 256)
        # head
        self.pre3 = Conv(64, 128, 3)
        self.pre4 = Conv(128, 256, 3)
        self.pre5 = Conv(256, 512, 3)
        self.detect = TinyHead((128, 256, 512), nc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.elan1(self.stem2(self.stem1(x)))
        p3 = self.elan2(self.pool(x))
        p4 = self.elan3(self.pool(p3))
        p5 = self.spp(self.elan4(self.pool(p4)))
        up5 = self.up(self.lat5(p5))
        td4 = self.td4(torch.cat([self.lat4(p4), up5], 1))
        up4 = self.up(self.lat4b(td4))
        out3 = self.out3(torch.cat([self.lat3(p3), up4], 1))
        out4 = self.out4(torch.cat([self.bu3(out3), td4], 1))
        out5 = self.out5(torch.cat([self.bu4(out4), p5], 1))
        return self.detect([self.pre3(out3), self.pre4(out4), self.pre5(out5)])


def conv_call_order(model: nn.Module, x: torch.Tensor) -> list[nn.Conv2d]:
    """The model's Conv2d modules in the order one forward calls them."""
    order: list[nn.Conv2d] = []
    hooks = [
        m.register_forward_hook(lambda mod, _i, _o: order.append(mod))
        for m in model.modules()
        if isinstance(m, nn.Conv2d)
    ]
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return order


def load_hand_written(fused: nn.Module, img: int) -> tuple[HandWrittenTiny, float]:
    """A HandWrittenTiny with ``fused``'s weights, mapped conv by conv in call order (shapes
    checked); returns it with the max abs difference of the two outputs (must be ~0)."""
    nc = fused.layer_graph.output.op.nc
    hand = HandWrittenTiny(nc).eval()
    probe = torch.zeros(1, 3, 64, 64)
    src, dst = conv_call_order(fused, probe), conv_call_order(hand, probe)
    if len(src) != len(dst):
        raise RuntimeError(f"hand-written model has {len(dst)} convs, generated {len(src)}")
    with torch.no_grad():
        for a, b in zip(src, dst):
            if a.weight.shape != b.weight.shape or (a.bias is None) != (b.bias is None):
                raise RuntimeError(f"conv shape mismatch: {a} vs {b}")
            b.weight.copy_(a.weight)
            if a.bias is not None:
                b.bias.copy_(a.bias)
    if not torch.equal(hand.detect.anchors, fused.detect.anchors) or not torch.equal(
        hand.detect.stride, fused.detect.stride
    ):
        raise RuntimeError("hand-written anchors/strides differ from the spec's")
    x = torch.rand(1, 3, img, img, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref, out = fused(x), hand(x)
    if ref.shape != out.shape:
        raise RuntimeError(f"output shapes differ: {tuple(ref.shape)} vs {tuple(out.shape)}")
    diff = float((ref - out).abs().max())
    if diff > 1e-4:
        raise RuntimeError(f"hand-written output differs from the generated one by {diff}")
    return hand, diff


# --- measurement ------------------------------------------------------------------------


def _machine_busy_s() -> float | None:
    """Busy CPU seconds of the whole machine since boot (Linux /proc/stat), else None."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class OtherCpu:
    """Share of the machine's CPU that other processes used while the block ran (%)."""

    pct: float = float("nan")

    def __enter__(self) -> OtherCpu:
        self._busy, self._own, self._t = _machine_busy_s(), time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        busy = _machine_busy_s()
        if busy is None or self._busy is None:
            return
        own = time.process_time() - self._own
        capacity = (time.perf_counter() - self._t) * (os.cpu_count() or 1)
        self.pct = max(0.0, 100.0 * (busy - self._busy - own) / capacity)


@dataclass
class Variant:
    name: str
    step: Callable[[], object]
    compile_s: float | None = None
    iters: int = 0
    rounds: list[float] = field(default_factory=list)  # per-round medians (ms)
    samples: list[float] = field(default_factory=list)


def _randomize_bn(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial BatchNorm statistics so re-parameterization really folds something."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=gen) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(n, generator=gen) * 0.5 + 0.75)
                m.bias.copy_(torch.rand(n, generator=gen) * 0.2 - 0.1)


def build_variants(name: str, img: int, args: argparse.Namespace) -> tuple[list[Variant], dict]:
    training, _, size = latency.deploy_model(name, img_size=img, form="training")
    _randomize_bn(training)
    fused = reparameterize(training)
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    info: dict[str, object] = {}
    with torch.inference_mode():
        info["fused_vs_training_max_abs"] = float((fused(x) - training(x)).abs().max())
    variants = [
        Variant("training", lambda: training(x)),
        Variant("fused", lambda: fused(x)),
    ]
    cl_model = copy.deepcopy(fused).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    variants.append(Variant("channels_last", lambda: cl_model(x_cl)))
    if name == HAND_WRITTEN_MODEL and img % 32 == 0:
        hand, diff = load_hand_written(fused, size)
        info["hand_vs_generated_max_abs"] = diff
        variants.append(Variant("hand_written", lambda: hand(x)))
        if not args.no_control:
            twin, _ = load_hand_written(fused, size)
            variants.append(Variant("hand_twin", lambda: twin(x)))
    if not args.no_compile:
        compiled = torch.compile(copy.deepcopy(fused))
        t0 = time.perf_counter()
        with torch.inference_mode():
            compiled(x)
        compile_s = time.perf_counter() - t0
        with torch.inference_mode():
            info["compiled_vs_fused_max_abs"] = float((compiled(x) - fused(x)).abs().max())
        variants.append(Variant("compiled", lambda: compiled(x), compile_s=compile_s))
    return variants, info


def run_model(name: str, args: argparse.Namespace) -> dict:
    img = args.img
    print(f"\n== {name} @ {img}: building variants", flush=True)
    t_build = time.perf_counter()
    variants, info = build_variants(name, img, args)
    print(f"   built in {time.perf_counter() - t_build:.1f} s; {info}", flush=True)
    round_ms = 0.0
    with torch.inference_mode():
        for v in variants:
            warm = timing.time_calls(v.step, args.warmup)
            v.iters = args.iters
            round_ms += statistics.median(warm) * v.iters
            print(f"   {v.name:<14} warm-up {len(warm)} calls, ~{statistics.median(warm):.1f} ms")
    rounds = args.rounds or min(MAX_ROUNDS, max(MIN_ROUNDS, int(args.budget_s * 1000 / round_ms)))
    print(f"   {rounds} rounds of {args.iters} call(s) per variant", flush=True)
    other_pct = []
    rng = random.Random(args.seed)
    for r in range(rounds):
        order = rng.sample(variants, len(variants))
        with OtherCpu() as other, torch.inference_mode():
            for v in order:
                samples = timing.time_calls(v.step, v.iters)
                v.samples += samples
                v.rounds.append(statistics.median(samples))
        other_pct.append(other.pct)
        line = "  ".join(f"{v.name} {v.rounds[-1]:.1f}" for v in variants)
        if r < 3 or r == rounds - 1 or (r + 1) % 5 == 0:
            print(f"   round {r + 1}/{rounds} (other CPU {other.pct:.0f}%): {line}", flush=True)
    by_name = {v.name: v for v in variants}
    ratios = {}
    for num, den in RATIOS:
        if num in by_name and den in by_name:
            per_round = [a / b for a, b in zip(by_name[num].rounds, by_name[den].rounds)]
            ratios[f"{num}/{den}"] = {
                "median": statistics.median(per_round),
                "min": min(per_round),
                "max": max(per_round),
                "of_minimums": min(by_name[num].samples) / min(by_name[den].samples),
                "per_round": per_round,
            }
    return {
        "model": name,
        "img": img,
        "info": info,
        "other_cpu_pct": other_pct,
        "variants": {
            v.name: {
                "latency_ms": statistics.median(v.rounds),
                "round_medians_ms": v.rounds,
                "p90_ms": timing.timing_stats(v.samples).p90_ms,
                "min_ms": min(v.samples),
                "iters_per_round": v.iters,
                "compile_s": v.compile_s,
            }
            for v in variants
        },
        "rounds": rounds,
        "ratios": ratios,
    }


RATIOS = (
    ("fused", "training"),
    ("fused", "hand_written"),
    ("hand_twin", "hand_written"),
    ("channels_last", "fused"),
    ("compiled", "fused"),
)
RATIO_MEANING = {
    "fused/training": "re-parameterization (< 1: the fused form is faster)",
    "fused/hand_written": "generated vs hand-written (acceptance: within 5%)",
    "hand_twin/hand_written": "noise floor: two instances of the same hand-written model",
    "channels_last/fused": "channels-last vs contiguous (< 1: channels-last helps)",
    "compiled/fused": "torch.compile vs eager (< 1: compile helps)",
}


# --- report -----------------------------------------------------------------------------


def protocol(args: argparse.Namespace) -> dict:
    return {
        "device": "cpu",
        "device_name": timing.device_name("cpu"),
        "threads": torch.get_num_threads(),
        "dtype": "fp32",
        "batch": 1,
        "img_size": args.img,
        "input": "one random tensor per model, made once; inference_mode; gc off",
        "timer": "time.perf_counter_ns around each call (scaling_lab.analyze.timing.time_calls)",
        "warmup": args.warmup,
        "rounds": args.rounds
        or f"auto: ~{args.budget_s:g} s of timed calls per model, {MIN_ROUNDS}..{MAX_ROUNDS}",
        "iters_per_round": args.iters,
        "order": f"variants interleaved, a new random order every round (seed {args.seed})",
        "statistic": "variant: median of round medians; ratio: median over rounds of the "
        "per-round ratio (range given), and the ratio of the minimums over all calls",
        "compile": "torch.compile default mode (inductor); compile time = first call, "
        "not in the latency; inductor caches "
        + ("disabled (cold compile)" if args.cold_compile else "on (a rerun compiles warm)"),
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "load_avg_start": timing.load_average(),
    }


def print_report(results: list[dict]) -> None:
    for res in results:
        print(f"\n{res['model']} @ {res['img']} (fp32, batch 1, CPU)")
        print(f"  {'variant':<14}{'median ms':>11}{'p90 ms':>9}{'min ms':>9}{'compile s':>11}")
        for name, v in res["variants"].items():
            comp = f"{v['compile_s']:.1f}" if v["compile_s"] is not None else "-"
            print(
                f"  {name:<14}{v['latency_ms']:>11.2f}{v['p90_ms']:>9.2f}{v['min_ms']:>9.2f}"
                f"{comp:>11}"
            )
        for key, r in res["ratios"].items():
            print(
                f"  {key:<22} {r['median']:.3f}  (rounds {r['min']:.3f}..{r['max']:.3f}; "
                f"of minimums {r['of_minimums']:.3f})  {RATIO_MEANING[key]}"
            )
        other = max(res["other_cpu_pct"]) if res["other_cpu_pct"] else float("nan")
        if other > OTHER_CPU_LIMIT:
            print(
                f"  WARNING: other processes used up to {other:.0f}% of the CPU during the "
                "rounds; absolute times are inflated (ratios are interleaved, so less affected)"
            )
    print("\nacceptance")
    for res in results:
        r = res["ratios"]
        if "fused/training" in r:
            ok = r["fused/training"]["median"] < 1
            print(
                f"  {res['model']}: fused faster than training: {'PASS' if ok else 'FAIL'} "
                f"(fused/training {r['fused/training']['median']:.3f})"
            )
        if "fused/hand_written" in r:
            ratio = r["fused/hand_written"]["median"]
            ok = abs(ratio - 1) <= HAND_TOLERANCE
            print(
                f"  {res['model']}: generated within 5% of hand-written: "
                f"{'PASS' if ok else 'FAIL'} (generated/hand-written {ratio:.3f})"
            )


CSV_COLUMNS = (
    "model",
    "img",
    "variant",
    "latency_ms",
    "p90_ms",
    "min_ms",
    "ratio_to_fused",
    "ratio_range",
    "compile_s",
    "iters_per_round",
    "rounds",
    "threads",
    "other_cpu_pct_max",
    "torch",
)


def write_reports(results: list[dict], proto: dict, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out / "latency.json", out / "latency.csv"
    json_path.write_text(json.dumps({"protocol": proto, "results": results}, indent=2) + "\n")
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for res in results:
            fused_rounds = res["variants"]["fused"]["round_medians_ms"]
            for name, v in res["variants"].items():
                per_round = [a / b for a, b in zip(v["round_medians_ms"], fused_rounds)]
                writer.writerow(
                    {
                        "model": res["model"],
                        "img": res["img"],
                        "variant": name,
                        "latency_ms": f"{v['latency_ms']:.3f}",
                        "p90_ms": f"{v['p90_ms']:.3f}",
                        "min_ms": f"{v['min_ms']:.3f}",
                        "ratio_to_fused": f"{statistics.median(per_round):.4f}",
                        "ratio_range": f"{min(per_round):.4f}..{max(per_round):.4f}",
                        "compile_s": f"{v['compile_s']:.2f}" if v["compile_s"] else "",
                        "iters_per_round": v["iters_per_round"],
                        "rounds": len(v["round_medians_ms"]),
                        "threads": proto["threads"],
                        "other_cpu_pct_max": f"{max(res['other_cpu_pct']):.1f}",
                        "torch": proto["torch_version"],
                    }
                )
    return csv_path, json_path


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="yolov7-tiny,yolov7", help="comma-separated zoo names")
    p.add_argument("--img", type=_positive, default=640, help="input size (default 640)")
    p.add_argument("--threads", type=_positive, default=1, help="torch threads (default 1)")
    p.add_argument(
        "--rounds",
        type=_positive,
        help=f"interleaved rounds (default: fill --budget-s, {MIN_ROUNDS}..{MAX_ROUNDS})",
    )
    p.add_argument(
        "--budget-s",
        type=float,
        default=60.0,
        help="without --rounds: timed seconds per model (default 60)",
    )
    p.add_argument(
        "--iters", type=_positive, default=1, help="timed calls per variant per round (default 1)"
    )
    p.add_argument("--warmup", type=_positive, default=3, help="untimed calls per variant")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    p.add_argument(
        "--no-control", action="store_true", help="skip the second hand-written instance"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the per-round variant order")
    p.add_argument(
        "--cold-compile", action="store_true", help="disable inductor caches (cold compile time)"
    )
    p.add_argument(
        "--default-malloc",
        action="store_true",
        help="leave glibc's malloc thresholds alone (default: fixed, see fix_malloc)",
    )
    p.add_argument("--out", type=Path, default=Path("reports/latency"), help="output folder")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    known = scaling_lab.list_models()
    if any(n not in known for n in names):
        print(f"unknown model in {names} (known: {', '.join(known)})", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    if args.cold_compile:
        import torch._inductor.config as inductor_config

        inductor_config.force_disable_caches = True
    malloc = timing.allocator_note() if args.default_malloc else fix_malloc()
    proto = protocol(args)
    proto["malloc"] = malloc
    print("protocol")
    for key, value in proto.items():
        print(f"  {key:<16} {value}")
    t0 = time.perf_counter()
    results = [run_model(name, args) for name in names]
    proto["load_avg_end"] = timing.load_average()
    proto["total_s"] = round(time.perf_counter() - t0, 1)
    print_report(results)
    csv_path, json_path = write_reports(results, proto, args.out)
    print(f"\nwrote {csv_path} and {json_path} ({proto['total_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
