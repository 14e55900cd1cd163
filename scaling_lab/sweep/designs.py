"""Designs of a search space without running a search: every point of a finite space, or a
seeded sample, materialized on a base model as a sweep trial would (``materialize``).

A latency table for a search space (``lab latency-table build --space``) needs the op
configurations the space can produce, long before a search samples them. A space whose
parameters are all integers, stepped floats or choices is a finite grid; up to ``MAX_GRID``
designs it is enumerated whole, so a later search looks every op up. A larger or continuous
space is sampled (uniformly, or log-uniformly for ``log: true``; ``random.Random(seed)``).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scaling_lab import schema
from scaling_lab.errors import UserError
from scaling_lab.graph.block_graph import BlockGraph
from scaling_lab.spec.yaml_lines import read_text_file, read_yaml_mapping
from scaling_lab.sweep.materialize import Overrides, materialize
from scaling_lab.sweep.space import Distribution, SpaceFile
from scaling_lab.sweep.trial_keys import params_key

MAX_GRID = 4096  # designs a finite space may have to be enumerated whole


def read_space(path: str | Path) -> dict[str, Distribution]:
    """The parameters of a ``search_spaces/*.yaml`` file, checked as an experiment would."""
    source = str(path)
    raw = read_yaml_mapping(read_text_file(path, "search space file"), source, "a search space")
    return schema.build(SpaceFile, raw, source=source).params


def values(dist: Distribution) -> list[Any] | None:
    """Every value of a finite distribution (None: continuous)."""
    if dist.type == "categorical":
        return list(dist.choices)
    if dist.type == "int":
        step = int(dist.step or 1)
        return list(range(int(dist.low), int(dist.high) + 1, step))
    if dist.step is None:
        return None
    count = math.floor((dist.high - dist.low) / dist.step + 1e-9) + 1
    return [round(dist.low + i * dist.step, 12) for i in range(count)]


def grid_size(space: dict[str, Distribution]) -> int | None:
    """Designs in a finite space (None: some parameter is continuous)."""
    size = 1
    for dist in space.values():
        choices = values(dist)
        if choices is None:
            return None
        size *= len(choices)
    return size


def enumerate_params(space: dict[str, Distribution]) -> Iterator[dict[str, Any]]:
    paths = sorted(space)
    for combo in itertools.product(*(values(space[p]) or [] for p in paths)):
        yield dict(zip(paths, combo))


def sample_params(space: dict[str, Distribution], k: int, seed: int = 0) -> list[dict[str, Any]]:
    """``k`` designs drawn with ``random.Random(seed)``, parameters in sorted path order."""
    rng = random.Random(seed)
    out = []
    for _ in range(k):
        out.append({path: _draw(space[path], rng) for path in sorted(space)})
    return out


def _draw(dist: Distribution, rng: random.Random) -> Any:
    choices = values(dist)
    if choices is not None and not (dist.type == "int" and dist.log):
        return rng.choice(choices)
    if dist.log:
        value = math.exp(rng.uniform(math.log(dist.low), math.log(dist.high)))
        return round(value) if dist.type == "int" else value
    return rng.uniform(dist.low, dist.high)


def space_params(
    space: dict[str, Distribution], k: int | None, seed: int = 0
) -> list[dict[str, Any]]:
    """``k`` sampled designs; ``k`` None: the whole grid when finite and at most
    ``MAX_GRID``, else refused (give a sample size)."""
    if k is not None:
        return sample_params(space, k, seed)
    size = grid_size(space)
    if size is None or size > MAX_GRID:
        what = "continuous" if size is None else f"{size} designs, more than {MAX_GRID}"
        raise UserError(f"the space is {what}: give a sample size", field="space-samples")
    return list(enumerate_params(space))


def design_graphs(
    base: BlockGraph, params: list[dict[str, Any]], *, source: str
) -> list[tuple[str, BlockGraph]]:
    """(label, graph) of each design: the base with its parameters applied, named by the
    key a sweep would give the design (``s-`` + hash of the parameters)."""
    out = []
    for values_ in params:
        key = params_key(values_)
        try:
            graph = materialize(base, Overrides.from_paths(values_), name=key, source=source)
        except schema.FieldError as exc:
            raise UserError(str(exc), source=source, field=exc.field) from None
        out.append((key, graph))
    return out
