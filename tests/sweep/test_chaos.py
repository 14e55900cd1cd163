"""The chaos test of issue 29: a seeded schedule of faults (trial kills at random steps, the
worker node of a two-node loopback cluster lost, the driver killed and the sweep resumed)
against a small training sweep loses no result and changes none."""

from __future__ import annotations

import pytest

from tests.helpers.chaos import RAY, run_chaos

pytest.importorskip("ray")


@pytest.mark.slow  # 2.5-4 min: the sweep undisturbed, then on a `ray start` cluster under faults
@pytest.mark.skipif(not RAY.is_file(), reason="the ray command is not installed")
def test_a_sweep_under_a_seeded_fault_schedule_loses_and_changes_nothing(tmp_path):
    result = run_chaos(tmp_path, seed=0, epochs=3, trial_kills=2)
    assert "node lost" in result.faults and "driver killed" in result.faults
    assert len(result.faults) >= 4, result.faults  # both trial faults struck, once each
    assert result.lost == [], result.faults  # every trial finished...
    assert result.changed == [], result.faults  # ...bit-identical to the undisturbed run
    assert result.epochs_once  # each epoch and step once in every history
    assert result.retried >= 2  # the faulted trials were retried, not started over
