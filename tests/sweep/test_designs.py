"""Designs of a search space without a search (what `lab latency-table build --space` reads)."""

from __future__ import annotations

from pathlib import Path

import pytest

from scaling_lab.errors import UserError
from scaling_lab.models import get_block_graph
from scaling_lab.sweep.designs import (
    design_graphs,
    grid_size,
    read_space,
    sample_params,
    space_params,
    values,
)
from scaling_lab.sweep.space import Distribution
from scaling_lab.sweep.trial_keys import params_key

ELAN_TINY = Path(__file__).resolve().parents[2] / "search_spaces" / "elan_tiny.yaml"


def test_values_of_each_kind_of_distribution():
    assert values(Distribution("int", 1, 4)) == [1, 2, 3, 4]
    assert values(Distribution("int", 2, 8, step=3)) == [2, 5, 8]
    assert values(Distribution("float", 0.25, 0.75, step=0.125)) == [
        0.25,
        0.375,
        0.5,
        0.625,
        0.75,
    ]
    assert values(Distribution("categorical", choices=("a", "b"))) == ["a", "b"]
    assert values(Distribution("float", 0.1, 1.0)) is None


def test_the_elan_space_is_a_finite_grid():
    space = read_space(ELAN_TINY)
    assert grid_size(space) == 4 * 4 * 4 * 4 * 5 * 3


def test_samples_are_seeded_and_inside_the_space():
    space = read_space(ELAN_TINY)
    first, again = sample_params(space, 6, seed=0), sample_params(space, 6, seed=0)
    assert first == again and first != sample_params(space, 6, seed=1)
    for params in first:
        assert set(params) == set(space)
        assert all(params[p] in values(space[p]) for p in space)
    continuous = {"scale.width": Distribution("float", 0.2, 0.8, log=True)}
    drawn = [p["scale.width"] for p in sample_params(continuous, 20, seed=3)]
    assert all(0.2 <= w <= 0.8 for w in drawn) and len(set(drawn)) == 20


def test_the_whole_grid_needs_a_finite_small_space():
    small = {"elan1.depth": Distribution("int", 1, 3), "repconv": Distribution(
        "categorical", choices=("none", "all"))}  # fmt: skip
    assert len(space_params(small, None)) == 6
    with pytest.raises(UserError, match="the space is continuous: give a sample size"):
        space_params({"scale.width": Distribution("float", 0.2, 0.8)}, None)


def test_designs_are_named_as_a_sweep_names_them():
    params = sample_params(read_space(ELAN_TINY), 2, seed=0)
    designs = design_graphs(get_block_graph("yolov7-tiny"), params, source=str(ELAN_TINY))
    assert [key for key, _ in designs] == [params_key(p) for p in params]
    assert [graph.name for _, graph in designs] == [params_key(p) for p in params]
