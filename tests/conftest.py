"""Shared fixtures and the parallel run's settings; the specs and helpers the fixtures build
on live in ``tests.helpers.specs``."""

from __future__ import annotations

import os

import pytest

from tests.helpers.specs import TINY_SPEC, graph_from

# modules whose tests share one Ray session (a module-scoped fixture): under pytest-xdist each
# module's tests stay on one worker, so the session starts once, not once per worker
ONE_WORKER_MODULES = ("test_runner.py", "test_reproducible.py")


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, one torch thread per worker (and per ``lab`` subprocess it starts):
    two workers on two cores with torch's default of a thread per core oversubscribe the CPU
    and run slower than one."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        import torch

        torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in ONE_WORKER_MODULES:
            item.add_marker(pytest.mark.xdist_group(item.path.stem))


@pytest.fixture
def tiny_graph():
    return graph_from(TINY_SPEC)
