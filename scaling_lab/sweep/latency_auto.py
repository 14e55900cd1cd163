"""``latency: {table: auto}``: a search priced in predicted latency on the machine it runs on,
with no table to build by hand.

On first use the table is built (``analyze.latency_build``) from what the search will ask it
about: the base model and a fixed sample of designs of the space, timed with the experiment's
latency protocol (one thread per trial's CPU by default). It is cached outside the repository,
in ``$SCALING_LAB_CACHE`` or ``~/.cache/scaling_lab/latency/``, under a name made of the machine
fingerprint (the CPU, the ISA ATen dispatches to, ISA pins, torch and oneDNN versions) and of
what was timed; a run on another machine or with other software finds no such file and builds
its own, so a cost measured on one machine is never used on another. The same machine reuses
it: two runs price the designs alike and give the same table.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from scaling_lab.sweep.experiment_format import Experiment

AUTO = "auto"
SAMPLES = 16  # designs of the space timed besides the base (their ops cover the space's)
SAMPLE_SEED = 0


def cache_dir() -> Path:
    """Where built tables live: ``$SCALING_LAB_CACHE/latency`` or ``~/.cache/scaling_lab``."""
    root = os.environ.get("SCALING_LAB_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "scaling_lab"
    return base / "latency"


def machine_fingerprint() -> dict[str, Any]:
    """What decides a kernel's speed and numerics here (not the thread count a run sets)."""
    from scaling_lab.machine import machine_card

    card = machine_card()
    keep = ("cpu", "cores", "aten_isa", "isa_pins", "torch", "onednn")
    return {key: card[key] for key in keep}


def _protocol(experiment: Experiment) -> dict[str, Any]:
    """The timing options of the table: the experiment's latency protocol, on the CPU with
    one thread per trial CPU unless it says otherwise."""
    latency = experiment.latency
    return {
        "device": latency.device or "cpu",
        "threads": latency.threads or max(1, int(experiment.resources.cpu)),
        "dtype": latency.dtype or "fp32",
        "batch": latency.batch or 1,
        "channels_last": bool(latency.channels_last),
    }


def auto_table_path(experiment: Experiment) -> Path:
    """The cached table's path for this experiment on this machine."""
    search = experiment.search
    space = {p: repr(d) for p, d in search.space.items()} if search is not None else {}
    what = {
        "machine": machine_fingerprint(),
        "protocol": _protocol(experiment),
        "base": experiment.base,
        "space": space,
        "samples": SAMPLES,
    }
    digest = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / f"{experiment.name}-{digest}.json"


def _sources(experiment: Experiment) -> list[Any]:
    from scaling_lab.analyze.latency_build import Source
    from scaling_lab.models import get_layer_graph, model_ref
    from scaling_lab.sweep.designs import design_graphs, space_params
    from scaling_lab.sweep.experiment_graphs import base_graph

    base = base_graph(experiment)
    sources = [Source(f"{experiment.base}", get_layer_graph(model_ref(base, form="deploy")))]
    if experiment.search is not None:
        params = space_params(experiment.search.space, SAMPLES, SAMPLE_SEED)
        for key, graph in design_graphs(base, params, source=experiment.path):
            sources.append(Source(key, get_layer_graph(model_ref(graph, form="deploy"))))
    return sources


def resolve_auto_table(experiment: Experiment, progress: bool | None = None) -> Experiment:
    """``experiment`` with ``latency.table: auto`` replaced by this machine's cached table,
    built first when missing; any other experiment as it is."""
    if experiment.latency.table != AUTO:
        return experiment
    from scaling_lab.analyze.latency_build import build_table

    path = auto_table_path(experiment)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        build_table(_sources(experiment), path, progress=progress, **_protocol(experiment))
    latency = dataclasses.replace(experiment.latency, table=str(path))
    return dataclasses.replace(experiment, latency=latency)
