"""A sweep stops the Ray session it started, in a thread beside the report, and never one
its caller had started (``ray_setup.stop_ray_in_background``)."""

from __future__ import annotations

import logging

import pytest

from scaling_lab.sweep.ray_setup import init_ray, stop_ray_in_background

ray = pytest.importorskip("ray")


@pytest.fixture
def no_ray():
    if ray.is_initialized():  # an earlier module's session
        ray.shutdown()
    yield
    if ray.is_initialized():
        ray.shutdown()


def test_the_session_init_ray_started_is_stopped_in_a_thread(no_ray):
    assert stop_ray_in_background() is None  # nothing running
    init_ray(None, num_cpus=1, verbose=0)
    thread = stop_ray_in_background()
    assert thread is not None and thread.name == "ray-shutdown"
    thread.join(timeout=60)
    assert not thread.is_alive() and not ray.is_initialized()


def test_a_session_the_caller_started_is_left_running(no_ray):
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    init_ray(None, num_cpus=1, verbose=0)  # joins nothing: the caller's session stands
    assert stop_ray_in_background() is None
    assert ray.is_initialized()
