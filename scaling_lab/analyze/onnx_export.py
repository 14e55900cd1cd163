"""ONNX export of the deploy model, its check against torch, and ONNX Runtime latency.

``onnx`` and ``onnxruntime`` are an optional extra (``pip install 'scaling_lab[onnx]'``),
imported only when a function needs them. The export itself only needs torch.

Export uses torch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``):
the generated forward is a straight line of module calls, which traces exactly, and the
exporter needs neither ``onnxscript`` nor ``onnx``. Input ``images`` (B, 3, N, N), output
``output`` (B, boxes, 5 + nc), the decoded boxes of the eval-mode Detect head. With
``dynamic_batch`` the batch axis of both is symbolic; the spatial size is fixed at export.

``check_onnx`` runs the same random input through torch and ONNX Runtime. Boxes are in input
pixels (up to a few thousand on P6 models, where one float32 step is 1e-4 to 2e-4), scores
in [0, 1]; the check is elementwise ``|ort - torch| <= atol + rtol * |torch|`` (atol = rtol
= 1e-4), and the plain maximum absolute differences of boxes and of scores are reported.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scaling_lab.analyze import latency, timing
from scaling_lab.spec.errors import SpecError

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

INPUT_NAME = "images"
OUTPUT_NAME = "output"
DEFAULT_OPSET = 17
EXTRA_HINT = "pip install 'scaling_lab[onnx]'"


def _require(package: str) -> Any:
    """Import an optional package, or raise a one-line error saying how to install it."""
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError:
        raise SpecError(f"needs the '{package}' package ({EXTRA_HINT})", field="onnx") from None


def have_onnxruntime() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def export_onnx(
    module: nn.Module,
    path: str | Path,
    *,
    img_size: int,
    batch: int = 1,
    dynamic_batch: bool = False,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Write ``module`` (eval mode, float32, CPU) as ONNX to ``path``; returns the path."""
    import torch

    if batch < 1:
        raise SpecError(f"batch must be a positive integer, got {batch}", field="batch")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval().to(device="cpu", dtype=torch.float32)
    x = torch.zeros(batch, 3, img_size, img_size)
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings(), torch.inference_mode():
        # the TorchScript exporter announces its deprecation on every call; we use it on
        # purpose (see the module docstring), so the warning is not repeated to users
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            module,
            (x,),
            str(path),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
        )
    return path


def onnx_input_shape(path: str | Path) -> tuple[int | str, ...]:
    """The input's shape in an exported file (``'batch'`` for a dynamic axis)."""
    onnx = _require("onnx")
    model = onnx.load(str(path), load_external_data=False)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return tuple(d.dim_param if d.dim_param else d.dim_value for d in dims)


def _session(path: str | Path, device: str = "cpu", threads: int | None = None):
    ort = _require("onnxruntime")
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise SpecError(
                "ONNX Runtime has no CUDAExecutionProvider here (install onnxruntime-gpu); "
                "use --device cpu",
                field="device",
            )
        index = int(device.split(":")[1]) if ":" in device else 0
        providers: list[Any] = [("CUDAExecutionProvider", {"device_id": index})]
    else:
        providers = ["CPUExecutionProvider"]
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


@dataclass(frozen=True)
class OnnxCheck:
    """ONNX Runtime output against torch on the same random input."""

    path: str
    batches: tuple[int, ...]
    max_abs_diff: float  # over every output element (box pixels and scores)
    max_abs_diff_boxes: float  # xywh, input pixels
    max_abs_diff_scores: float  # objectness and class scores, in [0, 1]
    max_scaled_diff: float  # max |d| / (atol + rtol |torch|); <= 1 passes
    atol: float
    rtol: float
    onnx_checker: bool  # onnx.checker.check_model passed
    ok: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_onnx(
    module: nn.Module,
    path: str | Path,
    *,
    img_size: int,
    batches: tuple[int, ...] = (1,),
    atol: float = 1e-4,
    rtol: float = 1e-4,
    seed: int = 0,
) -> OnnxCheck:
    """Compare ONNX Runtime (CPU) with the torch module (eval, float32) on random inputs."""
    import numpy as np
    import torch

    onnx = _require("onnx")
    onnx.checker.check_model(str(path))  # full check, also of models with external data
    session = _session(path)
    module = module.eval().to(device="cpu", dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    worst = {"all": 0.0, "boxes": 0.0, "scores": 0.0, "scaled": 0.0}
    for batch in batches:
        x = torch.rand(batch, 3, img_size, img_size, generator=gen)
        with torch.inference_mode():
            ref = module(x).numpy()
        out = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
        if out.shape != ref.shape:
            raise ValueError(f"check_onnx: ONNX output {out.shape}, torch {ref.shape}")
        diff = np.abs(out.astype(np.float64) - ref.astype(np.float64))
        scaled = diff / (atol + rtol * np.abs(ref.astype(np.float64)))
        worst["all"] = max(worst["all"], float(diff.max()))
        worst["boxes"] = max(worst["boxes"], float(_part(diff, slice(0, 4)).max()))
        worst["scores"] = max(worst["scores"], float(_part(diff, slice(4, None)).max()))
        worst["scaled"] = max(worst["scaled"], float(scaled.max()))
    return OnnxCheck(
        path=str(path),
        batches=tuple(batches),
        max_abs_diff=worst["all"],
        max_abs_diff_boxes=worst["boxes"],
        max_abs_diff_scores=worst["scores"],
        max_scaled_diff=worst["scaled"],
        atol=atol,
        rtol=rtol,
        onnx_checker=True,
        ok=worst["scaled"] <= 1.0,
    )


def _part(diff: np.ndarray, columns: slice) -> np.ndarray:
    part = diff[..., columns]
    return part if part.size else diff.reshape(-1)[:1] * 0


def ort_latency(
    path: str | Path,
    *,
    img_size: int,
    model_name: str,
    device: str | None = "cpu",
    batch: int | None = 1,
    threads: int | None = None,
    warmup: int | None = None,
    iters: int | None = None,
) -> timing.LatencyResult:
    """ONNX Runtime latency of an exported model, under the protocol of ``analyze.timing``
    (fp32; ``session.run`` is synchronous and, on CUDA, includes the copies of the input and
    output between host and device, so it is always timed by the host clock)."""
    import numpy as np
    import torch

    ort = _require("onnxruntime")
    req = timing.resolve_request(
        device=device or "cpu",
        dtype="fp32",
        batch=1 if batch is None else batch,
        warmup=warmup,
        iters=iters,
        threads=threads,
    )
    _check_batch(path, req.batch)
    load = timing.load_average()
    session = _session(path, req.device, req.threads)
    x = torch.rand(req.batch, 3, img_size, img_size, generator=torch.Generator().manual_seed(0))
    feed = {INPUT_NAME: np.ascontiguousarray(x.numpy())}
    for _ in range(req.warmup):
        session.run([OUTPUT_NAME], feed)
    samples = timing.time_calls(lambda: session.run([OUTPUT_NAME], feed), req.iters, "cpu")
    provider = session.get_providers()[0]
    card = timing.protocol_card(
        req,
        model=model_name,
        runtime=f"onnxruntime {ort.__version__} ({provider}, graph optimizations all)",
        img_size=img_size,
        input=f"random tensor as a numpy array, exported file {Path(path).name}",
        timer="time.perf_counter_ns around each session.run (synchronous), gc off",
        threads=session.get_session_options().intra_op_num_threads or torch.get_num_threads(),
        cuda_events=False,
        load_avg_1m=load,
        device_label=provider if req.device.startswith("cuda") else None,
    )
    return timing.LatencyResult(
        protocol=card,
        stats=timing.timing_stats(samples),
        samples_ms=tuple(samples),
        peak_memory_mb=timing.rss_peak_mb(),
    )


def _check_batch(path: str | Path, batch: int) -> None:
    """Refuse a batch the file cannot take (a fixed batch axis; unchecked without ``onnx``)."""
    shape = onnx_input_shape(path) if _has_onnx() else None
    if shape is not None and shape[0] != "batch" and shape[0] != batch:
        raise SpecError(
            f"the model was exported for batch {shape[0]}; export with --dynamic-batch to "
            f"time batch {batch}",
            field="batch",
        )


def _has_onnx() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnx") is not None


def export_and_check(
    model: Any,
    path: str | Path,
    *,
    img_size: int | None = None,
    nc: int | None = None,
    repconv: Any = None,
    dynamic_batch: bool = False,
    check: bool = True,
) -> dict[str, Any]:
    """Build the deploy model (training form re-parameterized), export it, and check it
    against torch when onnxruntime is installed. Returns a summary dict."""
    module, name, size = latency.deploy_model(model, nc=nc, img_size=img_size, repconv=repconv)
    t0 = time.perf_counter()
    out = export_onnx(module, path, img_size=size, dynamic_batch=dynamic_batch)
    summary: dict[str, Any] = {
        "model": name,
        "path": str(out),
        "img_size": size,
        "dynamic_batch": dynamic_batch,
        "opset": DEFAULT_OPSET,
        "export_s": round(time.perf_counter() - t0, 2),
        "size_mb": round(out.stat().st_size / 2**20, 2),
        "check": None,
    }
    if check and have_onnxruntime():
        batches = (1, 2) if dynamic_batch else (1,)
        summary["check"] = check_onnx(module, out, img_size=size, batches=batches).to_dict()
    elif check:
        summary["check"] = f"skipped: onnxruntime is not installed ({EXTRA_HINT})"
    return summary
