"""Latency and FPS of the deploy model, always reported with the protocol that defines them.

A latency figure means nothing without its protocol: device, dtype, batch, input size,
threads, warm-up, how the clock was read and which statistic is quoted. ``benchmark`` builds
the model the way it is deployed (the training form, re-parameterized by ``reparameterize``,
in eval mode), times it with ``measure_latency`` and returns a ``LatencyResult`` whose
``protocol`` card carries all of that; ``lab bench``, ``lab profile --latency`` and
``benchmarks/latency.py`` print and store the same card.

Protocol (what the figures mean):

- input: one random tensor ``B x 3 x N x N`` (a letterboxed square image) created once on
  the device, in the dtype; pre-processing and host-to-device copies are not timed;
- ``warmup`` untimed calls first (with ``compile``: the first call, which compiles, is
  timed on its own and reported as ``compile_s``, then the warm-up);
- ``iters`` timed calls, one forward each under ``torch.inference_mode``, the garbage
  collector off. CPU: ``time.perf_counter_ns`` around each call. CUDA: a pair of CUDA
  events around each call, then a synchronize, so each sample is one batch's latency (not a
  pipelined throughput);
- the quoted latency is the **median** of the samples (p90, min, mean, max also given);
  FPS = batch / median;
- peak memory: CUDA ``max_memory_allocated`` since the run started (weights, activations,
  workspace); on the CPU the process's RSS high-water mark (``getrusage``), which includes
  the Python process, torch and the model build, not only the forward;
- NMS (``nms=True``) is timed separately on the model's output, never inside the latency:
  confidence = objectness x best class score, threshold ``conf_thres``, boxes xywh -> xyxy,
  ``torchvision.ops.batched_nms`` per class at ``iou_thres``, at most ``max_det`` kept.

Preset ``paper``: the YOLOv7 paper's FPS column (Tables 2 and 9): batch 1, fp16 on CUDA,
letterboxed 640 (P5 models) or 1280 (P6 models, max stride 64); no TensorRT.
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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scaling_lab.spec.errors import SpecError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from scaling_lab.graph.block_graph import BlockGraph
    from scaling_lab.layers.plan_repconv import Policy

DTYPES = ("fp32", "fp16", "bf16")
FORMS = ("deploy", "training")
PRESETS = {"paper": {"device": "cuda", "dtype": "fp16", "batch": 1}}
PAPER_SIZES = {32: 640, 64: 1280}  # max stride -> letterboxed size in the paper's tables
# defaults per device type: a GPU needs more calls to reach steady clocks
DEFAULT_WARMUP = {"cpu": 5, "cuda": 25}
DEFAULT_ITERS = {"cpu": 30, "cuda": 200}
NMS_DEFAULTS = {"conf_thres": 0.001, "iou_thres": 0.65, "max_det": 300}  # the mAP protocol
MAX_NMS_CANDIDATES = 30000


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


def summarize(samples_ms: Sequence[float]) -> Stats:
    """Median, p90, min, mean and max of the samples (milliseconds)."""
    if not samples_ms:
        raise ValueError("summarize: no samples")
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
    """NMS on the model's output, timed on its own."""

    conf_thres: float
    iou_thres: float
    max_det: int
    candidates: int  # boxes above conf_thres in the timed batch (before NMS)
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
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise SpecError(
            f"unknown device '{device}' (use cpu or cuda[:N])", field="device"
        ) from None
    if dev.type not in ("cpu", "cuda"):
        raise SpecError(f"unsupported device '{device}' (use cpu or cuda[:N])", field="device")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            built = torch.version.cuda or "none"
            raise SpecError(
                f"CUDA was requested but no CUDA device is usable (torch {torch.__version__}, "
                f"built for CUDA {built}); use --device cpu",
                field="device",
            )
        index = dev.index or 0
        if index >= torch.cuda.device_count():
            raise SpecError(
                f"no CUDA device {index} (this machine has {torch.cuda.device_count()})",
                field="device",
            )
        dev = torch.device("cuda", index)
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
    return Request(str(dev), dtype, batch, warmup, iters, threads)


def apply_preset(
    preset: str | None,
    *,
    max_stride: int,
    device: str | None,
    dtype: str | None,
    batch: int | None,
    img_size: int | None,
) -> tuple[str, str, int, int | None]:
    """Fill (device, dtype, batch, img_size) from a preset; explicit values that contradict
    it are refused. Without a preset: cpu, fp32, batch 1, the spec's size."""
    if preset is None:
        return device or "cpu", dtype or "fp32", 1 if batch is None else batch, img_size
    if preset not in PRESETS:
        raise SpecError(f"unknown preset '{preset}' (known: {', '.join(PRESETS)})", field="preset")
    want = dict(PRESETS[preset])
    size = PAPER_SIZES.get(max_stride)
    if size is None:
        raise SpecError(
            f"the paper letterboxes P5 models (stride 32) to 640 and P6 models (stride 64) to "
            f"1280; this model's max stride is {max_stride}",
            field="preset",
        )
    want["img_size"] = size
    given = {"device": device, "dtype": dtype, "batch": batch, "img_size": img_size}
    for key, value in given.items():
        same = value is None or (
            str(value).split(":")[0] == want[key] if key == "device" else value == want[key]
        )
        if not same:
            raise SpecError(
                f"--preset {preset} means {key} {want[key]}, but {key} {value} was given",
                field="preset",
            )
    return (device or want["device"], want["dtype"], want["batch"], want["img_size"])


# --- environment ------------------------------------------------------------------------


def cpu_name() -> str:
    """The CPU model name (``/proc/cpuinfo`` on Linux), else what platform knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


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
def _gc_off() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# --- timing -----------------------------------------------------------------------------


def time_calls(fn: Callable[[], Any], iters: int, device: str = "cpu") -> list[float]:
    """Milliseconds of ``iters`` calls of ``fn``, each synchronized on its own.

    CPU: ``perf_counter_ns`` around the call. CUDA: events recorded before and after the call
    on the current stream, then a synchronize; the sample is the events' elapsed time.
    """
    import torch

    samples: list[float] = []
    with _gc_off():
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            for _ in range(iters):
                start.record()
                fn()
                end.record()
                end.synchronize()
                samples.append(start.elapsed_time(end))
        else:
            for _ in range(iters):
                t0 = time.perf_counter_ns()
                fn()
                samples.append((time.perf_counter_ns() - t0) / 1e6)
    return samples


def xywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    import torch

    xy, half = boxes[:, :2], boxes[:, 2:4] / 2
    return torch.cat((xy - half, xy + half), 1)


def nms(
    pred: torch.Tensor,
    conf_thres: float = NMS_DEFAULTS["conf_thres"],
    iou_thres: float = NMS_DEFAULTS["iou_thres"],
    max_det: int = int(NMS_DEFAULTS["max_det"]),
) -> list[torch.Tensor]:
    """Per-image NMS of decoded YOLO output ``(B, N, 5 + nc)`` (xywh, objectness, classes).

    Returns one ``(n, 6)`` tensor per image: x1, y1, x2, y2, confidence, class; confidence is
    objectness x the best class score (objectness alone when nc is 0), sorted high to low.
    """
    import torch
    from torchvision.ops import batched_nms

    if pred.dim() != 3 or pred.shape[-1] < 5:
        raise ValueError(f"nms: expects (B, N, 5 + nc) decoded boxes, got {tuple(pred.shape)}")
    out = []
    for p in pred:
        p = p.float()
        if p.shape[1] > 5:
            score, cls = (p[:, 5:] * p[:, 4:5]).max(1)
        else:
            score, cls = p[:, 4], torch.zeros(len(p), dtype=torch.long, device=p.device)
        keep = score > conf_thres
        boxes, score, cls = xywh_to_xyxy(p[keep, :4]), score[keep], cls[keep]
        if len(score) > MAX_NMS_CANDIDATES:
            top = score.topk(MAX_NMS_CANDIDATES).indices
            boxes, score, cls = boxes[top], score[top], cls[top]
        idx = batched_nms(boxes, score, cls, iou_thres)[:max_det]
        out.append(torch.cat((boxes[idx], score[idx, None], cls[idx, None].float()), 1))
    return out


def _time_nms(pred: torch.Tensor, request: Request, **thresholds: Any) -> NmsTiming:
    import torch

    opts = {**NMS_DEFAULTS, **{k: v for k, v in thresholds.items() if v is not None}}
    with torch.inference_mode():
        scores = pred[..., 4:5].float()
        if pred.shape[-1] > 5:
            scores = (pred[..., 5:].float() * scores).amax(-1, keepdim=True)
        candidates = int((scores > opts["conf_thres"]).sum())
        kept = sum(len(d) for d in nms(pred, **opts))
        for _ in range(min(request.warmup, 5)):
            nms(pred, **opts)
        samples = time_calls(lambda: nms(pred, **opts), request.iters, request.device)
    return NmsTiming(
        conf_thres=float(opts["conf_thres"]),
        iou_thres=float(opts["iou_thres"]),
        max_det=int(opts["max_det"]),
        candidates=candidates,
        kept=kept,
        stats=summarize(samples),
    )


def _check_nms_head(module: nn.Module) -> None:
    from scaling_lab.layers import layer_graph as lg

    graph = getattr(module, "layer_graph", None)
    if isinstance(graph, lg.LayerGraph) and not isinstance(graph.output.op, lg.Detect):
        raise SpecError(
            f"--nms needs an anchor-based Detect head (decoded boxes); this model ends in "
            f"{type(graph.output.op).__name__}",
            field="nms",
        )


def measure_latency(
    module: nn.Module,
    *,
    img_size: int,
    model_name: str | None = None,
    form: str = "deploy",
    device: str = "cpu",
    dtype: str = "fp32",
    batch: int = 1,
    channels_last: bool = False,
    compile: bool = False,
    cuda_graph: bool = False,
    threads: int | None = None,
    warmup: int | None = None,
    iters: int | None = None,
    nms: bool = False,
    conf_thres: float | None = None,
    iou_thres: float | None = None,
    preset: str | None = None,
) -> LatencyResult:
    """Time ``module`` (called as ``module(x)``) under the protocol described in this
    module's docstring. The module is moved to the device and dtype and put in eval mode
    (a copy is not made: pass a module you do not need unchanged)."""
    import torch

    req = resolve_request(
        device=device,
        dtype=dtype,
        batch=batch,
        warmup=warmup,
        iters=iters,
        threads=threads,
        cuda_graph=cuda_graph,
    )
    if nms:
        _check_nms_head(module)
    is_cuda = req.device.startswith("cuda")
    torch_dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[req.dtype]
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    load = load_average()
    cudnn_before = torch.backends.cudnn.benchmark
    with num_threads(req.threads) as n_threads, torch.inference_mode():
        try:
            if is_cuda:
                torch.backends.cudnn.benchmark = True
                torch.cuda.reset_peak_memory_stats(req.device)
            module = module.eval().to(device=req.device, dtype=torch_dtype)
            module = module.to(memory_format=memory_format)
            gen = torch.Generator().manual_seed(0)
            x = torch.rand(req.batch, 3, img_size, img_size, generator=gen)
            x = x.to(device=req.device, dtype=torch_dtype).contiguous(memory_format=memory_format)
            run = torch.compile(module) if compile else module
            compile_s = None
            if compile:
                t0 = time.perf_counter()
                run(x)
                if is_cuda:
                    torch.cuda.synchronize(req.device)
                compile_s = time.perf_counter() - t0
            step, output = _prepare(run, x, req, cuda_graph)
            samples = time_calls(step, req.iters, req.device)
            nms_timing = (
                _time_nms(output(), req, conf_thres=conf_thres, iou_thres=iou_thres)
                if nms
                else None
            )
            if is_cuda:
                peak = torch.cuda.max_memory_allocated(req.device) / 2**20
            else:
                peak = rss_peak_mb()
        finally:
            torch.backends.cudnn.benchmark = cudnn_before
    runtime = "torch.compile (inductor, default mode, caches on)" if compile else "torch eager"
    if is_cuda:
        timer = "CUDA events around each call, synchronized per call"
        memory = "torch.cuda.max_memory_allocated during the run (weights + activations)"
    else:
        timer = "time.perf_counter_ns around each call"
        memory = "process RSS high-water mark (getrusage ru_maxrss; includes torch and the build)"
    if cuda_graph:
        timer += "; CUDA graph replay (captured after warm-up, static input buffer)"
    protocol = Protocol(
        model=model_name or type(module).__name__,
        form=form,
        runtime=runtime,
        device=req.device,
        device_name=device_name(req.device),
        dtype=req.dtype,
        batch=req.batch,
        img_size=img_size,
        input="random tensor made once on the device; no pre-processing or copies timed"
        + ("; torch.backends.cudnn.benchmark on" if is_cuda else ""),
        channels_last=channels_last,
        compile=compile,
        cuda_graph=cuda_graph,
        threads=n_threads,
        warmup=req.warmup,
        iters=req.iters,
        timer=timer + ", inference_mode, gc off",
        statistic="median over calls; FPS = batch / median",
        memory=memory,
        preset=preset,
        torch_version=torch.__version__,
        cuda_version=torch.version.cuda if is_cuda else None,
        python=platform.python_version(),
        platform=platform.platform(terse=True),
        load_avg_1m=None if is_cuda else load,
        allocator="" if is_cuda else allocator_note(),
    )
    return LatencyResult(
        protocol=protocol,
        stats=summarize(samples),
        samples_ms=tuple(samples),
        peak_memory_mb=peak,
        compile_s=compile_s,
        nms=nms_timing,
    )


def _prepare(
    run: Callable[[Any], Any], x: torch.Tensor, req: Request, cuda_graph: bool
) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """Warm up; return the timed step and a function giving the model output."""
    import torch

    if not cuda_graph:
        for _ in range(req.warmup):
            run(x)
        return (lambda: run(x)), (lambda: run(x))
    # CUDA graph: warm up on a side stream (as capture requires), then capture one call that
    # reads the static input buffer; replays re-run the recorded kernels.
    static_x = x.clone()
    side = torch.cuda.Stream(device=req.device)
    side.wait_stream(torch.cuda.current_stream(req.device))
    with torch.cuda.stream(side):
        for _ in range(max(req.warmup, 3)):
            run(static_x)
    torch.cuda.current_stream(req.device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = run(static_x)
    for _ in range(3):
        graph.replay()
    return graph.replay, (lambda: static_out)


# --- from a model name ------------------------------------------------------------------


def deploy_model(
    model: str | Path | BlockGraph,
    *,
    nc: int | None = None,
    img_size: int | None = None,
    repconv: Policy | None = None,
    form: str = "deploy",
) -> tuple[nn.Module, str, int]:
    """The module that is benchmarked, its name and input size.

    ``deploy``: the training form of the graph without auxiliary heads, built with
    ``create_model`` and fused by ``reparameterize`` (what a trained checkpoint becomes).
    ``training``: the same graph unfused (BatchNorm, RepConv branches, implicit knowledge),
    in eval mode, for comparison.
    """
    from scaling_lab.nn import build_module
    from scaling_lab.nn.reparam import reparameterize
    from scaling_lab.layers.lower import lower
    from scaling_lab.models import get_block_graph
    from scaling_lab.transforms.deploy import drop_aux_heads

    if form not in FORMS:
        raise SpecError(f"unknown form '{form}' (known: {', '.join(FORMS)})", field="form")
    graph = drop_aux_heads(get_block_graph(model, nc=nc, img_size=img_size, repconv=repconv))
    layers = lower(graph)
    training = build_module(layers).eval()
    if form == "training":
        return training, f"{graph.name}-training", layers.input_shape.h
    return reparameterize(training), f"{graph.name}-deploy", layers.input_shape.h


def benchmark(
    model: str | Path | BlockGraph,
    *,
    img_size: int | None = None,
    nc: int | None = None,
    repconv: Policy | None = None,
    form: str = "deploy",
    device: str | None = None,
    dtype: str | None = None,
    batch: int | None = None,
    preset: str | None = None,
    **options: Any,
) -> LatencyResult:
    """Latency of a zoo model, spec file or BlockGraph in its deployed form.

    ``options`` go to ``measure_latency`` (channels_last, compile, cuda_graph, threads,
    warmup, iters, nms, conf_thres, iou_thres). ``preset="paper"`` fixes device cuda, fp16,
    batch 1 and the letterboxed size (640 or 1280). Bad requests raise ``SpecError`` before
    anything is built.
    """
    from scaling_lab.layers.lower import max_stride
    from scaling_lab.models import get_block_graph

    stride = max_stride(get_block_graph(model)) if preset else 32
    device, dtype, batch, img_size = apply_preset(
        preset, max_stride=stride, device=device, dtype=dtype, batch=batch, img_size=img_size
    )
    try:
        resolve_request(
            device=device,
            dtype=dtype,
            batch=batch,
            warmup=options.get("warmup"),
            iters=options.get("iters"),
            threads=options.get("threads"),
            cuda_graph=options.get("cuda_graph", False),
        )
    except SpecError as exc:
        if preset and exc.field == "device":
            raise SpecError(
                f"{exc.reason} (--preset {preset} times on CUDA)", field="device"
            ) from None
        raise
    module, name, size = deploy_model(model, nc=nc, img_size=img_size, repconv=repconv, form=form)
    return measure_latency(
        module,
        img_size=size,
        model_name=name,
        form=form,
        device=device,
        dtype=dtype,
        batch=batch,
        preset=preset,
        **options,
    )
