"""Torch latency of the deploy model, timed under the protocol of ``analyze.timing``.

``benchmark`` builds the model the way it is deployed (the training form, re-parameterized by
``reparameterize``, in eval mode), times it with ``measure_latency`` and returns a
``LatencyResult`` whose ``protocol`` card says how; ``lab bench``, ``lab profile --latency``
and ``benchmarks/latency.py`` print and store the same card.

What the torch timing adds to the shared protocol:

- input: one random tensor ``B x 3 x N x N`` (a letterboxed square image) created once on
  the device, in the dtype; pre-processing and host-to-device copies are not timed;
- each timed call is one forward under ``torch.inference_mode``; with ``compile`` the first
  call, which compiles, is timed on its own and reported as ``compile_s``, then the warm-up;
- NMS (``nms=True``) is timed separately on the model's output, never inside the latency:
  ``nn.postprocess.non_max_suppression``, the same function and rule evaluation uses
  (multi-label, ``conf_thres`` 0.001 and ``iou_thres`` 0.65 by default, at most 300 boxes).

Preset ``paper``: the YOLOv7 paper's FPS column (Tables 2 and 9): batch 1, fp16 on CUDA,
letterboxed 640 (P5 models) or 1280 (P6 models, max stride 64); no TensorRT.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scaling_lab.analyze.timing import (
    LatencyResult,
    NmsTiming,
    Protocol,
    Request,
    load_average,
    num_threads,
    protocol_card,
    resolve_request,
    rss_peak_mb,
    time_calls,
    timing_stats,
)
from scaling_lab.device import torch_dtype
from scaling_lab.layers.forms import FORMS as ALL_FORMS
from scaling_lab.nn import postprocess
from scaling_lab.nn.memory import check_fits
from scaling_lab.spec.errors import SpecError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from scaling_lab.graph.block_graph import BlockGraph
    from scaling_lab.layers.plan_repconv import Policy

# a latency is of the graph that runs: the deploy graph or the training graph (a fused graph
# with auxiliary heads runs nowhere)
FORMS = tuple(form for form in ALL_FORMS if form != "fused")
PRESETS = {"paper": {"device": "cuda", "dtype": "fp16", "batch": 1}}
PAPER_SIZES = {32: 640, 64: 1280}  # max stride -> letterboxed size in the paper's tables
REQUEST_OPTIONS = ("warmup", "iters", "threads", "cuda_graph")  # benchmark options checked early


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


# --- NMS ---------------------------------------------------------------------------------


def time_nms(
    pred: torch.Tensor,
    request: Request,
    conf_thres: float | None = None,
    iou_thres: float | None = None,
) -> NmsTiming:
    """Time ``postprocess.non_max_suppression`` (evaluation's NMS) on the model output ``pred``
    with the request's device, warm-up (at most 5) and iteration count."""
    import torch

    conf = postprocess.CONF_THRES if conf_thres is None else conf_thres
    iou = postprocess.IOU_THRES if iou_thres is None else iou_thres

    def run() -> list[torch.Tensor]:
        return postprocess.non_max_suppression(pred, conf, iou, postprocess.MAX_DET)

    with torch.inference_mode():
        candidates = postprocess.count_candidates(pred, conf)
        kept = sum(len(d) for d in run())
        for _ in range(min(request.warmup, 5)):
            run()
        samples = time_calls(run, request.iters, request.device)
    return NmsTiming(
        conf_thres=float(conf),
        iou_thres=float(iou),
        max_det=postprocess.MAX_DET,
        candidates=candidates,
        kept=kept,
        stats=timing_stats(samples),
    )


def _check_nms_head(module: nn.Module) -> None:
    from scaling_lab.layers.layer_graph import LayerGraph
    from scaling_lab.ops import Detect

    graph = getattr(module, "layer_graph", None)
    if isinstance(graph, LayerGraph) and not isinstance(graph.output.op, Detect):
        raise SpecError(
            f"--nms needs an anchor-based Detect head (decoded boxes); this model ends in "
            f"{type(graph.output.op).__name__}",
            field="nms",
        )


# --- the torch timing loop ----------------------------------------------------------------


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
    """Time ``module`` (called as ``module(x)``) under the protocol of this module's docstring.
    The module is moved to the device and dtype and put in eval mode (a copy is not made:
    pass a module you do not need unchanged)."""
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
    graph = getattr(module, "layer_graph", None)
    if graph is not None:
        check_fits(graph, batch=req.batch, device=req.device, what="timing the model")
    load = load_average()
    with num_threads(req.threads) as n_threads, _device_run(req.device), torch.inference_mode():
        run, x = _place(module, req, img_size, channels_last, compile)
        compile_s = _first_call_s(run, x, req.device) if compile else None
        step, output = _prepare(run, x, req, cuda_graph)
        samples = time_calls(step, req.iters, req.device)
        nms_timing = time_nms(output(), req, conf_thres, iou_thres) if nms else None
        peak = _peak_memory_mb(req.device)
    protocol = _torch_protocol(
        req,
        model=model_name or type(module).__name__,
        form=form,
        img_size=img_size,
        threads=n_threads,
        load=load,
        options={"channels_last": channels_last, "compile": compile, "cuda_graph": cuda_graph},
        preset=preset,
    )
    return LatencyResult(
        protocol=protocol,
        stats=timing_stats(samples),
        samples_ms=tuple(samples),
        peak_memory_mb=peak,
        compile_s=compile_s,
        nms=nms_timing,
    )


def _is_cuda(device: str) -> bool:
    return device.startswith("cuda")


@contextmanager
def _device_run(device: str) -> Iterator[None]:
    """On CUDA: cuDNN autotuning on (restored after) and the peak-memory counter reset."""
    import torch

    before = torch.backends.cudnn.benchmark
    try:
        if _is_cuda(device):
            torch.backends.cudnn.benchmark = True
            torch.cuda.reset_peak_memory_stats(device)
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def _place(
    module: nn.Module, req: Request, img_size: int, channels_last: bool, compile: bool
) -> tuple[Callable[[Any], Any], torch.Tensor]:
    """The module (eval, on the device, in the dtype and memory format; compiled when asked)
    and the fixed random input made once on the device."""
    import torch

    dtype = torch_dtype(req.dtype)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    module = module.eval().to(device=req.device, dtype=dtype)
    module = module.to(memory_format=memory_format)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(req.batch, 3, img_size, img_size, generator=gen)
    x = x.to(device=req.device, dtype=dtype).contiguous(memory_format=memory_format)
    return (torch.compile(module) if compile else module), x


def _first_call_s(run: Callable[[Any], Any], x: torch.Tensor, device: str) -> float:
    """Seconds of the first call (with ``torch.compile``: the compilation)."""
    import torch

    t0 = time.perf_counter()
    run(x)
    if _is_cuda(device):
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def _peak_memory_mb(device: str) -> float:
    import torch

    if _is_cuda(device):
        return torch.cuda.max_memory_allocated(device) / 2**20
    return rss_peak_mb()


def _torch_protocol(
    req: Request,
    *,
    model: str,
    form: str,
    img_size: int,
    threads: int,
    load: float | None,
    options: dict[str, bool],
    preset: str | None,
) -> Protocol:
    """The card of a torch run; ``options``: channels_last, compile, cuda_graph."""
    cuda = _is_cuda(req.device)
    if cuda:
        timer = "CUDA events around each call, synchronized per call"
    else:
        timer = "time.perf_counter_ns around each call"
    if options["cuda_graph"]:
        timer += "; CUDA graph replay (captured after warm-up, static input buffer)"
    return protocol_card(
        req,
        model=model,
        form=form,
        runtime=(
            "torch.compile (inductor, default mode, caches on)"
            if options["compile"]
            else "torch eager"
        ),
        img_size=img_size,
        input="random tensor made once on the device; no pre-processing or copies timed"
        + ("; torch.backends.cudnn.benchmark on" if cuda else ""),
        timer=timer + ", inference_mode, gc off",
        threads=threads,
        cuda_events=cuda,
        load_avg_1m=load,
        preset=preset,
        **options,
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
    from scaling_lab.graph.lower import lower
    from scaling_lab.models import get_block_graph
    from scaling_lab.nn import build_module
    from scaling_lab.nn.reparam import reparameterize
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
    wrap: Callable[[Any], Any] | None = None,
    **options: Any,
) -> LatencyResult:
    """Latency of a zoo model, spec file or BlockGraph in its deployed form.

    ``wrap``: applied to the built module before timing (the CLI and sweeps pass the head
    family's decode, ``train.heads.with_decode``, so an anchor-free head is timed with its
    box decoding as the YOLOv7 heads are: ``analyze`` may not import ``train``).

    ``options`` go to ``measure_latency`` (channels_last, compile, cuda_graph, threads,
    warmup, iters, nms, conf_thres, iou_thres). ``preset="paper"`` fixes device cuda, fp16,
    batch 1 and the letterboxed size (640 or 1280). Bad requests raise ``SpecError`` before
    anything is built.
    """
    from scaling_lab.graph.lower import max_stride
    from scaling_lab.models import get_block_graph

    stride = max_stride(get_block_graph(model)) if preset else 32
    device, dtype, batch, img_size = apply_preset(
        preset, max_stride=stride, device=device, dtype=dtype, batch=batch, img_size=img_size
    )
    checked = {k: v for k, v in options.items() if k in REQUEST_OPTIONS}
    try:
        resolve_request(device=device, dtype=dtype, batch=batch, **checked)
    except SpecError as exc:
        if preset and exc.field == "device":
            raise SpecError(
                f"{exc.reason} (--preset {preset} times on CUDA)", field="device"
            ) from None
        raise
    module, name, size = deploy_model(model, nc=nc, img_size=img_size, repconv=repconv, form=form)
    if wrap is not None:
        module = wrap(module)
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
