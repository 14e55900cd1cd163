"""Build a latency table: every distinct op configuration of some deploy graphs, timed once.

``build_table`` collects the configurations of the graphs it is given (zoo models at several
sizes, designs sampled from a search space: the CLI turns names into graphs), skips those the
output file already holds under the same protocol (a killed build resumes where it stopped),
times the rest with ``latency_measure`` behind a progress bar, saving the file atomically
every few entries, then measures the model-level overheads and fits the fallback.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaling_lab.analyze.latency_fit import fit_fallbacks
from scaling_lab.analyze.latency_table import (
    LatencyTable,
    TableError,
    check_protocol,
    load_table,
    save_table,
)
from scaling_lab.analyze.op_config import OpConfig, RunSettings, distinct_configs
from scaling_lab.analyze.timing import load_average, protocol_card, resolve_request
from scaling_lab.layers.layer_graph import LayerGraph


@dataclass(frozen=True)
class Source:
    """A graph whose configurations a table must hold, with the label reports give it."""

    label: str
    graph: LayerGraph


def build_table(
    sources: Sequence[Source],
    out: str | Path,
    *,
    device: str = "cpu",
    threads: int | None = None,
    dtype: str = "fp32",
    batch: int = 1,
    channels_last: bool = False,
    fresh: bool = False,
    progress: bool | None = None,
    allocator: str | None = None,
) -> LatencyTable:
    """Measure what ``out`` lacks of the sources' configurations and write the table there.

    ``fresh``: ignore an existing file (it is replaced); otherwise its entries are kept when
    its protocol matches this run's, and a mismatch is refused. ``progress``: a tqdm bar
    (None: on a terminal only). ``allocator``: what the caller did to the host allocator
    (e.g. glibc ``mallopt``), for the card; default: ``timing.allocator_note()``.
    """
    from scaling_lab.analyze import latency_measure as lm
    from scaling_lab.nn.memory import check_fits

    started = time.perf_counter()
    request = resolve_request(device=device, dtype=dtype, batch=batch, threads=threads)
    run = RunSettings(request.dtype, request.batch, "nhwc" if channels_last else "nchw")
    for source in sources:
        check_fits(source.graph, batch=batch, device=request.device, what=source.label)
    setup = lm.Setup(request.device, run)
    with lm.timing_context(request.device, threads) as n_threads:
        protocol = _protocol(request, setup, n_threads)
        if allocator is not None:
            protocol["allocator"] = allocator
        table = _start(Path(out), protocol, fresh)
        table.sources = _merge_sources(table.sources, sources, run)
        save = _saver(table, Path(out), started)
        todo = _todo(sources, run, table)
        if todo or not table.complete:
            table.complete = False
            _measure_all(todo, table, setup, save, progress)
            table.overheads = lm.measure_overheads(setup)
        table.fallback = fit_fallbacks(table.entries)
        table.complete = True
    save()
    return table


def _saver(table: LatencyTable, out: Path, t0: float):
    """Save ``table`` to ``out`` with its build time: earlier runs' plus this one's so far
    (this one started at ``t0``)."""
    before = table.build_s

    def save() -> None:
        table.build_s = before + time.perf_counter() - t0
        save_table(table, out)

    return save


def _todo(
    sources: Sequence[Source], run: RunSettings, table: LatencyTable
) -> list[tuple[Source, list[OpConfig], set[str]]]:
    """Each source that brings configurations the table lacks: its distinct configurations
    (in the model's order) and the keys it is the first to bring."""
    seen = set(table.entries)
    out = []
    for source in sources:
        configs = list(distinct_configs(source.graph, run).values())
        pending = {c.key for c in configs if c.key not in seen}
        if pending:
            out.append((source, configs, pending))
            seen |= pending
    return out


def _merge_sources(
    known: list[dict[str, Any]], sources: Sequence[Source], run: RunSettings
) -> list[dict[str, Any]]:
    """The table's record of what it was built from, this run's sources added once."""
    out = {s["model"]: s for s in known if isinstance(s, dict) and "model" in s}
    for source in sources:
        out[source.label] = {
            "model": source.label,
            "img_size": source.graph.input_shape.h,
            "layers": len(source.graph),
            "configs": len(distinct_configs(source.graph, run)),
        }
    return list(out.values())


def _protocol(request, setup, threads: int) -> dict[str, Any]:
    """The table's card: ``timing.protocol_card``'s fields (software, host, allocator), those
    of per-op timing, and the table's dtype, batch and layout."""
    from scaling_lab.analyze import latency_measure as lm

    cuda = request.device.startswith("cuda")
    timer = (
        f"CUDA events around {lm.CUDA_REPEATS} back-to-back calls, synchronized"
        if cuda
        else "time.perf_counter_ns around each call"
    )
    card = protocol_card(
        request,
        model="per-op latency table",
        runtime="torch eager, one op at a time (its Op.build form)",
        img_size=0,
        input="random tensors of the op's input shapes, made once per op on the device",
        timer=timer + ", inference_mode, gc off (collected once before the ops)",
        threads=threads,
        cuda_events=cuda,
        load_avg_1m=load_average(),
        channels_last=setup.run.layout == "nhwc",
    ).to_dict()
    for unused in ("model", "form", "img_size", "compile", "cuda_graph", "preset", "memory"):
        card.pop(unused, None)
    if cuda:
        warmup, iters = lm.WARMUP, f"{lm.MIN_ITERS}-{lm.MAX_ITERS} samples per op"
    else:
        warmup = f"{lm.WARMUP_ROUNDS} rounds"
        iters = f"{lm.MIN_ROUNDS}-{lm.MAX_ROUNDS} rounds (as many as fit in {lm.BUDGET_S:g} s)"
    card.update(
        layout=setup.run.layout,
        warmup=warmup,
        iters=iters,
        statistic="median over calls",
        cache=setup.describe(),
    )
    return card


def _start(out: Path, protocol: dict[str, Any], fresh: bool) -> LatencyTable:
    """The table to fill: the file's (same protocol) or a new one."""
    if fresh or not out.exists():
        return LatencyTable(protocol=protocol, path=str(out))
    table = load_table(out, complete=False)
    check_protocol(
        table, protocol, what=f"--out {out}: use another file, or --fresh to measure anew"
    )
    table.protocol = {**table.protocol, "load_avg_1m": protocol.get("load_avg_1m")}
    return table


def _measure_all(
    todo: list[tuple[Source, list[OpConfig], set[str]]],
    table: LatencyTable,
    setup,
    save,
    progress: bool | None,
) -> None:
    """Time the pending configurations source by source, saving the table after each."""
    from tqdm import tqdm

    from scaling_lab.analyze.latency_measure import measure_source

    gc.collect()  # once: the timed calls keep it off but do not collect (see _rounds)
    total = sum(len(pending) for _, _, pending in todo)
    bar = tqdm(
        total=total,
        desc="latency table",
        unit="op",
        disable=None if progress is None else not progress,
    )
    try:
        for source, configs, pending in todo:
            bar.set_postfix_str(source.label, refresh=True)
            try:
                table.entries.update(measure_source(configs, pending, setup))
            except RuntimeError as exc:  # an op torch cannot run at this setting
                raise TableError(
                    f"timing {source.label} failed: {exc}", source=table.path
                ) from None
            save()
            bar.update(len(pending))
    finally:
        bar.close()
