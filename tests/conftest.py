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


# the longest modules (Ray sweeps, 50-115 s each) are handed out first: pytest-xdist gives
# modules to workers in collection order, and one of them started last would run alone while
# the other worker idles
LONGEST_FIRST = (
    "test_runner.py",
    "test_reproducible.py",
    "test_confirm.py",
    "test_fault_tolerance.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: every module keeps its own order


@pytest.fixture
def tiny_graph():
    return graph_from(TINY_SPEC)


@pytest.fixture(scope="module")
def ray_session():
    """An embedded Ray session shared by a module's tests (starting one takes seconds). A
    session an earlier module's in-process sweep left running is shut down first: this one
    must have the module's size, and ``ray.init`` refuses a second session."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
