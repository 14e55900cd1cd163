"""Timing op configurations alone, the way they run inside the deploy model, and the
model-level overheads that a sum of ops leaves out.

An op called alone in a loop runs faster than the same op inside a model: its weights stay
in the cache from one call to the next, where inside a model the other layers evict them.
So on the CPU a model's configurations are timed in rounds (``measure_source``): each round
calls every distinct configuration of the model once, in the model's order, so between two
calls of an op the model's other ops run and leave the caches as they would; just before its
timed call an op's inputs are read (untimed), as the op that produced them just wrote them.
Each op has its own random inputs of its shapes and allocates its output fresh, as in the
model; everything runs under ``torch.inference_mode``, in the table's threads, dtype and
layout, with the op's own torch form (``Op.build``: what the generated forward calls).
Measured (1 thread, fp32, 25 interleaved rounds with the model itself): sum of ops / model
0.99-1.00 for yolov7-tiny at 320 and 640 and yolov7 at 320. Ops timed back to back instead
came out 3-4% fast; evicting every cache before each call (a 64 MiB read) 4-13% slow (it also
evicts the code and interpreter state a model keeps hot).

On CUDA each configuration is timed alone (``measure_config``): a sample is
``CUDA_REPEATS`` back-to-back calls between CUDA events, divided by the count, so a kernel
shorter than its launch is charged its launch cost as in a model's forward.

Overheads (``measure_overheads``): a generated model (``nn.build_module``) made of N trivial
ops is timed for N = 1 and N = ``CHAIN``; the slope is what one op costs inside a generated
forward, the intercept the model call itself. ``per_op_ms`` is that slope minus the same op
timed alone by this module's loop: the dispatch difference between the two settings.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from scaling_lab.analyze.latency import _device_run
from scaling_lab.analyze.op_config import OpConfig, RunSettings
from scaling_lab.analyze.timing import num_threads, time_calls, timing_stats
from scaling_lab.device import torch_dtype
from scaling_lab.layers.layer_graph import Layer, LayerGraph
from scaling_lab.ops import Detect, MaxPool, Shape

WARMUP_ROUNDS = 2  # untimed rounds first (the first call builds oneDNN primitives)
MIN_ROUNDS, MAX_ROUNDS = 5, 15  # timed rounds ...
BUDGET_S = 2.0  # ... as many as fit in this many seconds, within those bounds
WARMUP = 2  # CUDA: untimed samples per configuration
MIN_ITERS, MAX_ITERS = 5, 15  # CUDA: timed samples per configuration, as many as fit ...
CUDA_BUDGET_S = 0.2  # ... in this many seconds
CUDA_REPEATS = 10  # back-to-back calls per CUDA sample
CHAIN = 100  # trivial ops in the overhead model
OVERHEAD_ITERS = 200
OVERHEAD_ROUNDS = 5


@dataclass(frozen=True)
class Setup:
    """Where and how configurations are timed (one table's protocol)."""

    device: str
    run: RunSettings

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def torch_dtype(self) -> torch.dtype:
        return torch_dtype(self.run.dtype)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.run.layout == "nhwc" else torch.contiguous_format

    def describe(self) -> str:
        """How the caches stand when an op is timed (the card's ``cache``)."""
        if self.cuda:
            return f"each op alone, {CUDA_REPEATS} back-to-back calls per sample"
        return (
            "ops timed in rounds, one call of each of a model's distinct ops per round in the "
            "model's order (the other ops evict an op's weights as inside the model); an op's "
            "inputs are read just before its timed call"
        )


@contextmanager
def timing_context(device: str, threads: int | None) -> Iterator[int]:
    """Threads set, cuDNN autotuning on CUDA (as ``lab bench``), inference mode."""
    with num_threads(threads) as n, _device_run(device), torch.inference_mode():
        yield n


def _tensor(shape: Shape, setup: Setup, gen: torch.Generator) -> torch.Tensor:
    x = torch.rand(setup.run.batch, shape.c, shape.h, shape.w, generator=gen)
    x = x.to(device=setup.device, dtype=setup.torch_dtype)
    return x.contiguous(memory_format=setup.memory_format)


def place(config: OpConfig, setup: Setup) -> tuple[Callable[[], Any], list[torch.Tensor], Any]:
    """The op's torch form on the device (eval, dtype, layout), random inputs of its shapes,
    and a call running it once; also returns the built form (a module, or a TorchCall)."""
    form = config.op.build()
    gen = torch.Generator().manual_seed(0)
    inputs = [_tensor(s, setup, gen) for s in config.inputs]
    if isinstance(form, nn.Module):
        form = form.eval().to(device=setup.device, dtype=setup.torch_dtype)
        form = form.to(memory_format=setup.memory_format)
        fn = form
    else:
        fn = _call_function(form.fn, form.args)
    if config.op.takes_list:
        return (lambda: fn(inputs)), inputs, form
    return (lambda: fn(*inputs)), inputs, form


def _call_function(fn: Callable[..., Any], args: tuple[Any, ...]) -> Callable[..., Any]:
    return lambda *xs: fn(*xs, *args)


def _touch(inputs: list[torch.Tensor]) -> None:
    for x in inputs:
        x.sum()


@dataclass(frozen=True)
class _Item:
    """One call of a round: a configuration (``name``: its key), or a Detect's level conv
    (``KEY#convI``); ``timed``: its samples are kept."""

    name: str
    call: Callable[[], Any]
    inputs: list[torch.Tensor]
    timed: bool


def _items(
    configs: Sequence[OpConfig], pending: set[str], setup: Setup
) -> tuple[list[_Item], dict[str, Any]]:
    items, forms = [], {}
    for config in configs:
        call, inputs, form = place(config, setup)
        timed = config.key in pending
        items.append(_Item(config.key, call, inputs, timed))
        forms[config.key] = form
        if timed and isinstance(config.op, Detect) and isinstance(form, nn.Module):
            for i, conv in enumerate(form.m):  # the head's convs alone: the rest is decode
                items.append(
                    _Item(f"{config.key}#conv{i}", _bound(conv, inputs[i]), [inputs[i]], True)
                )
    return items, forms


def _bound(module: nn.Module, x: torch.Tensor) -> Callable[[], Any]:
    return lambda: module(x)


def _rounds(items: list[_Item], setup: Setup) -> dict[str, list[float]]:
    """Samples (ms) of the timed items: ``WARMUP_ROUNDS`` untimed rounds, then as many timed
    rounds as fit in ``BUDGET_S`` (``MIN_ROUNDS``..``MAX_ROUNDS``)."""
    for _ in range(WARMUP_ROUNDS):
        t0 = time.perf_counter()
        for item in items:
            item.call()
    round_s = max(time.perf_counter() - t0, 1e-6)
    rounds = int(min(MAX_ROUNDS, max(MIN_ROUNDS, BUDGET_S / round_s)))
    samples: dict[str, list[float]] = {item.name: [] for item in items if item.timed}
    for _ in range(rounds):
        for item in items:
            if not item.timed:
                item.call()
                continue
            before = _bound_touch(item.inputs)
            samples[item.name] += time_calls(item.call, 1, setup.device, before, collect=False)
    return samples


def _bound_touch(inputs: list[torch.Tensor]) -> Callable[[], None]:
    return lambda: _touch(inputs)


def _entry(config: OpConfig, samples: list[float]) -> dict[str, Any]:
    stats = timing_stats(samples)
    return {
        "kind": config.kind,
        "group": config.group,
        "ms": round(stats.median_ms, 5),
        "p90_ms": round(stats.p90_ms, 5),
        "min_ms": round(stats.min_ms, 5),
        "n": stats.n,
        **config.features(),
    }


def measure_source(
    configs: Sequence[OpConfig], pending: set[str], setup: Setup
) -> dict[str, dict[str, Any]]:
    """Table entries of the ``pending`` keys among ``configs``, a model's distinct
    configurations in its order (the others run untimed, as the model's other ops would)."""
    if setup.cuda:
        return {c.key: measure_config(c, setup) for c in configs if c.key in pending}
    items, _ = _items(configs, pending, setup)
    samples = _rounds(items, setup)
    out = {}
    for config in configs:
        if config.key not in pending:
            continue
        entry = _entry(config, samples[config.key])
        if isinstance(config.op, Detect):
            convs = [k for k in samples if k.startswith(f"{config.key}#conv")]
            _add_decode(entry, sum(statistics.median(samples[k]) for k in convs))
        out[config.key] = entry
    return out


def _add_decode(entry: dict[str, Any], convs_ms: float) -> None:
    """A Detect entry's split: its level convs alone, and the rest (the decode)."""
    entry["convs_ms"] = round(convs_ms, 5)
    entry["decode_ms"] = round(entry["ms"] - convs_ms, 5)


def time_call(call: Callable[[], Any], setup: Setup) -> list[float]:
    """CUDA: samples (ms per call) of ``CUDA_REPEATS`` back-to-back calls, warm-up first,
    as many samples as fit in ``CUDA_BUDGET_S`` (``MIN_ITERS``..``MAX_ITERS``)."""

    def step() -> None:
        for _ in range(CUDA_REPEATS):
            call()

    warm = time_calls(step, WARMUP, setup.device, collect=False)
    estimate_s = max(warm[-1], 1e-3) / 1e3
    iters = int(min(MAX_ITERS, max(MIN_ITERS, CUDA_BUDGET_S / estimate_s)))
    return [t / CUDA_REPEATS for t in time_calls(step, iters, setup.device, collect=False)]


def measure_config(config: OpConfig, setup: Setup) -> dict[str, Any]:
    """The table entry of one configuration timed alone (the CUDA protocol)."""
    call, inputs, form = place(config, setup)
    entry = _entry(config, time_call(call, setup))
    if isinstance(config.op, Detect) and isinstance(form, nn.Module):
        convs = [_bound(form.m[i], inputs[i]) for i in range(len(config.op.c_ins))]
        _add_decode(entry, sum(statistics.median(time_call(c, setup)) for c in convs))
    return entry


# --- model-level overheads ------------------------------------------------------------------


def _chain(n: int) -> LayerGraph:
    """A model of ``n`` trivial ops (1x1 max-pool, stride 1, on one value) in a row."""
    shape = Shape(1, 1, 1, 1)
    op = MaxPool(1, 1, 0)
    layers, prev = [], "input"
    for i in range(n):
        layers.append(Layer(f"op{i}", op, (prev,), shape, f"op{i}"))
        prev = f"op{i}"
    return LayerGraph(f"chain{n}", tuple(layers), shape, form="deploy")


def measure_overheads(setup: Setup) -> dict[str, Any]:
    """``per_op_ms`` (dispatch inside a generated forward minus alone) and ``model_ms`` (the
    model call itself), medians over ``OVERHEAD_ROUNDS`` rounds."""
    from scaling_lab.nn import build_module

    gen = torch.Generator().manual_seed(0)
    x = _tensor(Shape(1, 1, 1, 1), setup, gen)
    models = {}
    for n in (1, CHAIN):
        module = build_module(_chain(n)).eval().to(device=setup.device, dtype=setup.torch_dtype)
        models[n] = module
    alone = models[1].get_submodule("op0")
    rounds = []
    for _ in range(OVERHEAD_ROUNDS):
        t = {}
        for name, fn in (("one", models[1]), ("chain", models[CHAIN]), ("alone", alone)):
            time_calls(lambda fn=fn: fn(x), 10, setup.device)
            t[name] = statistics.median(
                time_calls(lambda fn=fn: fn(x), OVERHEAD_ITERS, setup.device)
            )
        slope = (t["chain"] - t["one"]) / (CHAIN - 1)
        rounds.append((slope - t["alone"], t["one"] - slope, slope, t["alone"]))
    per_op, model, slope, alone_ms = (statistics.median(r[i] for r in rounds) for i in range(4))
    return {
        "per_op_ms": round(per_op, 6),
        "model_ms": round(model, 6),
        "op_in_model_ms": round(slope, 6),
        "op_alone_ms": round(alone_ms, 6),
        "method": (
            f"generated models of 1 and {CHAIN} trivial ops (1x1 max-pool on one value), "
            f"median of {OVERHEAD_ITERS} calls, median over {OVERHEAD_ROUNDS} rounds: per_op_ms "
            "= slope - the op timed alone; model_ms = intercept"
        ),
    }
