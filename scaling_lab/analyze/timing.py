"""The latency protocol: a checked request, the clock, the statistics and the result card,
shared by the torch timing (``latency``) and the ONNX Runtime timing (``onnx_export``).

A latency figure means nothing without its protocol: device, dtype, batch, input size,
threads, warm-up, how the clock was read and which statistic is quoted. ``Protocol`` holds
all of that and ``protocol_card`` fills it, so both runtimes describe their runs alike.

- ``warmup`` untimed calls first, then ``iters`` timed calls (``time_calls``), the garbage
  collector off. Host clock: ``time.perf_counter_ns`` around each call. CUDA: a pair of CUDA
  events around each call, then a synchronize, so each sample is one batch's latency (not a
  pipelined throughput);
- the quoted latency is the **median** of the samples (p90, min, mean, max also given);
  FPS = batch / median;
- peak memory: CUDA ``max_memory_allocated`` since the run started (weights, activations,
  workspace); on the host the process's RSS high-water mark (``getrusage``), which includes
  the Python process, torch and the model build, not only the forward.
"""

from __future__ import annotations

import gc
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from scaling_lab.device import DTYPES, resolve_device
from scaling_lab.limits import MAX_ITERS, MAX_THREADS
from scaling_lab.machine import cpu_name
from scaling_lab.spec.errors import SpecError

if TYPE_CHECKING:
    pass

# defaults per device type: a GPU needs more calls to reach steady clocks
DEFAULT_WARMUP = {"cpu": 5, "cuda": 25}
DEFAULT_ITERS = {"cpu": 30, "cuda": 200}
STATISTIC = "median over calls; FPS = batch / median"
CUDA_MEMORY = "torch.cuda.max_memory_allocated during the run (weights + activations)"
RSS_MEMORY = "process RSS high-water mark (getrusage ru_maxrss; includes torch and the build)"


# --- statistics -------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-quantile (0..1) of sorted values, linear between closest ranks (numpy's
    default): rank ``q * (n - 1)``."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {q}")
    rank = q * (len(sorted_values) - 1)
    lo = int(rank)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (rank - lo)


@dataclass(frozen=True)
class Stats:
    """Summary of timing samples in milliseconds."""

    n: int
    median_ms: float
    p90_ms: float
    min_ms: float
    mean_ms: float
    max_ms: float


def timing_stats(samples_ms: Sequence[float]) -> Stats:
    """Median, p90, min, mean and max of the samples (milliseconds)."""
    if not samples_ms:
        raise ValueError("timing_stats: no samples")
    values = sorted(float(v) for v in samples_ms)
    return Stats(
        n=len(values),
        median_ms=percentile(values, 0.5),
        p90_ms=percentile(values, 0.9),
        min_ms=values[0],
        mean_ms=sum(values) / len(values),
        max_ms=values[-1],
    )


def fps(batch: int, median_ms: float) -> float:
    """Images per second at the median latency: batch / median."""
    return batch * 1000.0 / median_ms if median_ms > 0 else float("inf")


# --- the protocol card ------------------------------------------------------------------


@dataclass(frozen=True)
class Protocol:
    """Everything that defines a latency figure; stored with it in the JSON."""

    model: str
    form: str  # deploy (re-parameterized, fused) | training (unfused)
    runtime: str  # "torch eager", "torch.compile (inductor)", "onnxruntime 1.x (...)"
    device: str
    device_name: str
    dtype: str
    batch: int
    img_size: int
    input: str
    channels_last: bool
    compile: bool
    cuda_graph: bool
    threads: int
    warmup: int
    iters: int
    timer: str
    statistic: str
    memory: str
    preset: str | None
    torch_version: str
    cuda_version: str | None
    python: str
    platform: str
    load_avg_1m: float | None  # machine load when the run started (other work skews CPU timings)
    allocator: str = ""  # host allocator settings (they move CPU timings by ~10%, see README)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        layout = "channels-last" if self.channels_last else "contiguous (NCHW)"
        extras = [s for s, on in (("CUDA graph", self.cuda_graph),) if on]
        load = f", load avg {self.load_avg_1m:.2f}" if self.load_avg_1m is not None else ""
        cuda = f", CUDA {self.cuda_version}" if self.cuda_version else ""
        return [
            f"runtime    {self.runtime}{''.join(', ' + e for e in extras)}, form {self.form}",
            f"device     {self.device} ({self.device_name}), threads {self.threads}{load}",
            f"input      batch {self.batch}, 3x{self.img_size}x{self.img_size}, {self.dtype}, "
            f"{layout}; {self.input}",
            f"timing     {self.warmup} warm-up + {self.iters} timed calls; {self.timer}",
            f"statistic  {self.statistic}",
            f"memory     {self.memory}",
            *([f"allocator  {self.allocator}"] if self.allocator else []),
            f"software   torch {self.torch_version}{cuda}, Python {self.python}, {self.platform}"
            + (f"; preset {self.preset}" if self.preset else ""),
        ]


@dataclass(frozen=True)
class NmsTiming:
    """NMS (``nn.postprocess.non_max_suppression``) on the model's output, timed on its own."""

    conf_thres: float
    iou_thres: float
    max_det: int
    candidates: int  # (box, class) pairs above conf_thres in the timed batch (enter NMS)
    kept: int  # boxes after NMS, over the batch
    stats: Stats

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["median_ms"] = self.stats.median_ms
        return out


@dataclass(frozen=True)
class LatencyResult:
    """Latency figures and the protocol card that defines them."""

    protocol: Protocol
    stats: Stats
    samples_ms: tuple[float, ...]
    peak_memory_mb: float | None
    compile_s: float | None = None
    nms: NmsTiming | None = None

    @property
    def latency_ms(self) -> float:
        return self.stats.median_ms

    @property
    def fps(self) -> float:
        return fps(self.protocol.batch, self.stats.median_ms)

    def to_dict(self, samples: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": self.protocol.model,
            "latency_ms": round(self.stats.median_ms, 4),
            "p90_ms": round(self.stats.p90_ms, 4),
            "min_ms": round(self.stats.min_ms, 4),
            "mean_ms": round(self.stats.mean_ms, 4),
            "max_ms": round(self.stats.max_ms, 4),
            "fps": round(self.fps, 3),
            "peak_memory_mb": (
                round(self.peak_memory_mb, 1) if self.peak_memory_mb is not None else None
            ),
            "compile_s": round(self.compile_s, 3) if self.compile_s is not None else None,
            "nms": self.nms.to_dict() if self.nms else None,
            "protocol": self.protocol.to_dict(),
        }
        if samples:
            out["samples_ms"] = [round(v, 4) for v in self.samples_ms]
        return out

    def format(self) -> str:
        s, p = self.stats, self.protocol
        mem = f"{self.peak_memory_mb:.0f} MiB" if self.peak_memory_mb is not None else "n/a"
        lines = [
            f"{p.model}: latency {s.median_ms:.2f} ms (median of {s.n}; p90 {s.p90_ms:.2f}, "
            f"min {s.min_ms:.2f})   FPS {self.fps:.1f}   peak memory {mem}",
        ]
        if self.compile_s is not None:
            lines.append(
                f"  compile {self.compile_s:.1f} s (first call; not in the latency; a rerun may "
                "reuse inductor's cached kernels)"
            )
        if self.nms is not None:
            n = self.nms
            lines.append(
                f"  NMS {n.stats.median_ms:.2f} ms (median; p90 {n.stats.p90_ms:.2f}) on "
                f"{n.candidates} candidates -> {n.kept} boxes (conf > {n.conf_thres:g}, "
                f"IoU {n.iou_thres:g}, max {n.max_det}); not in the latency"
            )
            if n.candidates == 0:
                lines.append(
                    "  (no box passed the threshold, as with untrained weights: "
                    "--conf-thres 0 times NMS on every box)"
                )
        lines.append("  protocol:")
        lines += [f"    {line}" for line in p.lines()]
        return "\n".join(lines)


# --- request checking -------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """A checked benchmark request (device resolved, defaults filled)."""

    device: str
    dtype: str
    batch: int
    warmup: int
    iters: int
    threads: int | None


def resolve_request(
    *,
    device: str = "cpu",
    dtype: str = "fp32",
    batch: int = 1,
    warmup: int | None = None,
    iters: int | None = None,
    threads: int | None = None,
    cuda_graph: bool = False,
) -> Request:
    """Check a request; bad input raises ``SpecError`` naming the field."""
    dev = resolve_device(device)
    if dtype not in DTYPES:
        raise SpecError(f"unknown dtype '{dtype}' (known: {', '.join(DTYPES)})", field="dtype")
    if dtype == "fp16" and dev.type == "cpu":
        raise SpecError(
            "fp16 is not benchmarked on the CPU (half-precision CPU kernels are missing or "
            "emulated, so the figure would mean nothing); use fp32 or bf16 on the CPU, or "
            "fp16 with --device cuda",
            field="dtype",
        )
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise SpecError(f"batch must be a positive integer, got {batch}", field="batch")
    if cuda_graph and dev.type != "cuda":
        raise SpecError(
            "--cuda-graph needs --device cuda (CUDA graphs are GPU only)", field="cuda-graph"
        )
    warmup = DEFAULT_WARMUP[dev.type] if warmup is None else warmup
    iters = DEFAULT_ITERS[dev.type] if iters is None else iters
    if warmup < 0:
        raise SpecError(f"must be >= 0, got {warmup}", field="warmup")
    if iters < 1:
        raise SpecError(f"must be >= 1, got {iters}", field="iters")
    if threads is not None and threads < 1:
        raise SpecError(f"must be >= 1, got {threads}", field="threads")
    for name, value, limit in (
        ("warmup", warmup, MAX_ITERS),
        ("iters", iters, MAX_ITERS),
        ("threads", threads or 1, MAX_THREADS),
    ):
        if value > limit:
            raise SpecError(f"must be at most {limit}, got {value}", field=name)
    return Request(str(dev), dtype, batch, warmup, iters, threads)


# --- environment ------------------------------------------------------------------------


def device_name(device: str) -> str:
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"{cpu_name()}, {os.cpu_count()} logical cores"


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


ALLOCATOR_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_ARENA_MAX")


def allocator_note() -> str:
    """The host allocator settings that change CPU timings: an LD_PRELOADed malloc, glibc's
    MALLOC_* tunables, or glibc's default (dynamic mmap threshold: large activations are
    mapped and faulted in again on every call, how often depends on the process's history)."""
    parts = [f"{k}={os.environ[k]}" for k in ALLOCATOR_ENV if os.environ.get(k)]
    preload = os.environ.get("LD_PRELOAD", "")
    if any(lib in preload for lib in ("jemalloc", "tcmalloc", "mimalloc")):
        parts.insert(0, f"LD_PRELOAD={preload}")
    if not parts:
        return "system malloc, default settings (glibc: dynamic mmap threshold)"
    return ", ".join(parts)


def rss_peak_mb() -> float:
    """The process's resident-set high-water mark (KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


@contextmanager
def num_threads(threads: int | None) -> Iterator[int]:
    """Run with ``torch.set_num_threads(threads)`` (restored after); yields the count in use."""
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


@contextmanager
def _gc_off(collect: bool = True) -> Iterator[None]:
    enabled = gc.isenabled()
    if collect:
        gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# --- timing -----------------------------------------------------------------------------


def time_calls(
    fn: Callable[[], Any],
    iters: int,
    device: str = "cpu",
    before: Callable[[], Any] | None = None,
    collect: bool = True,
) -> list[float]:
    """Milliseconds of ``iters`` calls of ``fn``, each synchronized on its own.

    CPU: ``perf_counter_ns`` around the call. CUDA: events recorded before and after the call
    on the current stream, then a synchronize; the sample is the events' elapsed time.
    ``before`` runs untimed ahead of every call (a latency table evicts the caches there).
    The garbage collector runs first (unless ``collect`` is false: a caller timing many short
    runs collects once itself) and is off during the calls.
    """
    import torch

    samples: list[float] = []
    with _gc_off(collect):
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            for _ in range(iters):
                if before is not None:
                    before()
                start.record()
                fn()
                end.record()
                end.synchronize()
                samples.append(start.elapsed_time(end))
        else:
            for _ in range(iters):
                if before is not None:
                    before()
                t0 = time.perf_counter_ns()
                fn()
                samples.append((time.perf_counter_ns() - t0) / 1e6)
    return samples


# --- the card of one run ----------------------------------------------------------------


def protocol_card(
    request: Request,
    *,
    model: str,
    runtime: str,
    img_size: int,
    input: str,
    timer: str,
    threads: int,
    cuda_events: bool,
    load_avg_1m: float | None,
    form: str = "deploy",
    device_label: str | None = None,
    channels_last: bool = False,
    compile: bool = False,
    cuda_graph: bool = False,
    preset: str | None = None,
) -> Protocol:
    """The ``Protocol`` of a run of ``request``; the software, host and memory fields are
    filled here so that the torch and ONNX Runtime timings describe them the same way.

    ``cuda_events``: timed by CUDA events with CUDA memory statistics (torch on a GPU); else
    by the host clock, where the machine load, the allocator and the RSS peak matter.
    ``device_label`` replaces ``device_name(request.device)`` (ONNX Runtime's provider).
    """
    import torch

    return Protocol(
        model=model,
        form=form,
        runtime=runtime,
        device=request.device,
        device_name=device_label or device_name(request.device),
        dtype=request.dtype,
        batch=request.batch,
        img_size=img_size,
        input=input,
        channels_last=channels_last,
        compile=compile,
        cuda_graph=cuda_graph,
        threads=threads,
        warmup=request.warmup,
        iters=request.iters,
        timer=timer,
        statistic=STATISTIC,
        memory=CUDA_MEMORY if cuda_events else RSS_MEMORY,
        preset=preset,
        torch_version=torch.__version__,
        cuda_version=torch.version.cuda if cuda_events else None,
        python=platform.python_version(),
        platform=platform.platform(terse=True),
        load_avg_1m=None if cuda_events else load_avg_1m,
        allocator="" if cuda_events else allocator_note(),
    )
