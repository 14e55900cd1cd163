"""Small latency tables for tests: hand-made entries with known values, and a fake timer that
lets table builds run without timing anything."""

from __future__ import annotations

from typing import Any

from scaling_lab.analyze.latency_table import MATCHED, LatencyTable, save_table
from scaling_lab.analyze.op_config import OpConfig, RunSettings, distinct_configs
from scaling_lab.layers.layer_graph import LayerGraph

PER_OP_MS = 0.002
MODEL_MS = 0.05


def protocol(**changes: Any) -> dict[str, Any]:
    """A table card (what ``latency_build`` writes, trimmed to the matched fields)."""
    card = {key: f"test {key}" for key in MATCHED}
    card.update(device="cpu", device_name="test CPU", threads=1, dtype="fp32", batch=1)
    card.update(layout="nchw")
    card.update(changes)
    return card


def config_ms(config: OpConfig) -> float:
    """A made-up latency that depends on the configuration only (equal keys, equal ms)."""
    return 0.01 + 1e-5 * config.out.elements + 0.003 * len(config.inputs)


def entry(config: OpConfig, ms: float | None = None) -> dict[str, Any]:
    return {
        "kind": config.kind,
        "group": config.group,
        "ms": config_ms(config) if ms is None else ms,
        "p90_ms": 0.0,
        "n": 3,
        **config.features(),
    }


def hand_table(
    graph: LayerGraph,
    *,
    drop_kinds: tuple[str, ...] = (),
    fallback: dict[str, dict[str, Any]] | None = None,
    run: RunSettings | None = None,
) -> LatencyTable:
    """A complete table holding every configuration of ``graph`` but those of
    ``drop_kinds``, with ``config_ms`` latencies and the overheads above."""
    configs = distinct_configs(graph, run or RunSettings())
    return LatencyTable(
        protocol=protocol(),
        entries={k: entry(c) for k, c in configs.items() if c.kind not in drop_kinds},
        overheads={"per_op_ms": PER_OP_MS, "model_ms": MODEL_MS},
        fallback=fallback or {},
        complete=True,
    )


def write_table(path, table: LatencyTable) -> str:
    save_table(table, path)
    return str(path)


class FakeTimer:
    """Stands in for ``latency_measure.measure_source`` / ``measure_overheads``: records the
    keys it is asked to time and can stop (as if killed) when asked for source number
    ``stop_at`` (counting from 0)."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.measured: list[str] = []
        self.sources = 0
        self.stop_at = stop_at

    def measure_source(self, configs, pending: set[str], setup: Any) -> dict[str, Any]:
        if self.stop_at is not None and self.sources >= self.stop_at:
            raise KeyboardInterrupt
        self.sources += 1
        timed = [c for c in configs if c.key in pending]
        self.measured += [c.key for c in timed]
        return {c.key: entry(c) for c in timed}

    @staticmethod
    def measure_overheads(setup: Any) -> dict[str, Any]:
        return {"per_op_ms": PER_OP_MS, "model_ms": MODEL_MS}

    def install(self, monkeypatch) -> FakeTimer:
        from scaling_lab.analyze import latency_measure

        monkeypatch.setattr(latency_measure, "measure_source", self.measure_source)
        monkeypatch.setattr(latency_measure, "measure_overheads", self.measure_overheads)
        return self
