"""The keys of trials: the one name of a trial's folder, which the driver and the trial
both derive (a row's own key, or a hash of a search trial's sampled values)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scaling_lab.sweep.experiment_format import Experiment


def slug(text: str) -> str:
    """A label as a folder name's part (``02-repconv-n``)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "row"


def params_key(params: dict[str, Any]) -> str:
    """A stable id for a sampled configuration (same params -> same trial folder)."""
    text = json.dumps(params, sort_keys=True, default=str)
    return "s-" + hashlib.sha1(text.encode()).hexdigest()[:10]


def sampled_params(experiment: Experiment, config: Mapping[str, Any]) -> dict[str, Any]:
    """A search trial's sampled values out of Ray's config."""
    space = experiment.search.space if experiment.search is not None else {}
    return {k: v for k, v in config.items() if k in space}


# a Ray config's entry for a search's baseline or confirm run (``sweep/confirm.py``): key,
# label, model (None: the base), params, seed, order, phase, baseline, design_key
EXTRA = "extra"


def row_marks(experiment: Experiment, config: Mapping[str, Any]) -> dict[str, Any]:
    """What a search trial's row says of its role: phase, baseline, design_key (a table's
    rows: nothing)."""
    if experiment.search is None:
        return {}
    extra = config.get(EXTRA)
    if extra is None:
        return {"phase": "search", "baseline": False, "design_key": None}
    return {key: extra.get(key) for key in ("phase", "baseline", "design_key")}


def trial_key(experiment: Experiment, config: Mapping[str, Any]) -> str:
    """The key (trial folder) of a Ray config: the variant's own, or for a search the hash
    of the sampled values (a baseline or confirm run: its own). The driver and the trial
    both name a trial by it."""
    if EXTRA in config:
        return str(config[EXTRA]["key"])
    if experiment.search is None:
        return str(config["variant"])
    return params_key(sampled_params(experiment, config))
