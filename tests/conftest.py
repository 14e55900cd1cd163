"""Shared fixtures and the parallel run's settings; the specs and helpers the fixtures build
on live in ``tests.helpers.specs``."""

from __future__ import annotations

import os

import pytest

from tests.helpers.specs import TINY_SPEC, graph_from


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, one torch thread per worker (and per ``lab`` subprocess it starts):
    two workers on two cores with torch's default of a thread per core oversubscribe the CPU
    and run slower than one."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        import torch

        torch.set_num_threads(1)


@pytest.fixture
def tiny_graph():
    return graph_from(TINY_SPEC)
