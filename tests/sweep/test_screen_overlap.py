"""The screen runs in a thread while Ray starts in the calling one (runner's
``_screen_while_ray_starts``): both happen, the screen's designs come back unchanged, its
errors reach the caller, and Ray is left alone where there is nothing to screen."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from scaling_lab.sweep import runner


def _session(screen: object = "flops", time_left: float | None = None):
    experiment = SimpleNamespace(screen=screen, trains=lambda profile_only: not profile_only)
    return SimpleNamespace(
        experiment=experiment,
        ctx=SimpleNamespace(profile_only=False),
        time_left=lambda: time_left,
        address=None,
        num_cpus=2,
        verbose=0,
    )


@pytest.fixture
def calls(monkeypatch):
    log: dict[str, list] = {"screen": [], "ray": []}

    def fake_screen(session, count):
        log["screen"].append((threading.current_thread().name, time.perf_counter()))
        time.sleep(0.2)
        return [{"design": count}]

    def fake_init(address, num_cpus, verbose):
        log["ray"].append((threading.current_thread().name, time.perf_counter()))
        time.sleep(0.2)

    monkeypatch.setattr(runner, "_screen", fake_screen)
    monkeypatch.setattr(runner, "init_ray", fake_init)
    return log


def test_screen_and_ray_start_side_by_side(calls):
    started = time.perf_counter()
    seeds = runner._screen_while_ray_starts(_session(), 3)
    took = time.perf_counter() - started
    assert seeds == [{"design": 3}]
    (screen_thread, _), (ray_thread, _) = calls["screen"][0], calls["ray"][0]
    assert ray_thread == threading.main_thread().name  # Ray's signal handlers want it
    assert screen_thread.startswith("screen")
    assert took < 0.35  # two 0.2 s waits overlapped, not summed


def test_a_screen_error_reaches_the_caller(calls, monkeypatch):
    def broken(session, count):
        raise ValueError("bad design space")

    monkeypatch.setattr(runner, "_screen", broken)
    with pytest.raises(ValueError, match="bad design space"):
        runner._screen_while_ray_starts(_session(), 3)


@pytest.mark.parametrize(("screen", "time_left"), [(None, None), ("flops", 0.0)])
def test_no_screen_or_no_time_leaves_ray_to_the_tuner(calls, screen, time_left):
    runner._screen_while_ray_starts(_session(screen, time_left), 2)
    assert calls["ray"] == []
    assert len(calls["screen"]) == 1  # _screen itself says there is nothing to screen
