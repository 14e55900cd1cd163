"""A table's note says what ``lab calibrate`` found at its budget, and only at its budget."""

from __future__ import annotations

import json
from pathlib import Path

from scaling_lab.report.sweep_report import calibration_note
from scaling_lab.sweep.calibrate import training_settings
from scaling_lab.sweep.experiment import load_experiment

PEERS = Path(__file__).resolve().parents[2] / "experiments" / "table2_peers.yaml"


def _write(path: Path, **fields) -> Path:
    report = {
        "designs": 5,
        "seeds": 3,
        "icc": 0.934,
        "icc_ci95": [0.81, 0.985],
        "kendall_tau_seeds": 0.8,
        "separates": True,
        **fields,
    }
    path.write_text(json.dumps(report))
    return path


def test_the_note_states_the_calibration_of_this_budget(tmp_path):
    experiment = load_experiment(PEERS, check_graphs=False)
    path = _write(tmp_path / "calibration.json", train=training_settings(experiment, None))
    note = calibration_note(experiment, path)
    assert note == (
        "Calibrated (lab calibrate, 5 rows x 3 seeds, calibration.md): this budget tells the rows "
        "apart; share of variance between rows (ICC) 0.93 [0.81, 0.98], ranking agreement "
        "between seeds (Kendall tau) 0.80."
    )
    _write(path, train=training_settings(experiment, None), separates=False)
    assert "does not tell the rows apart reliably" in calibration_note(experiment, path)


def test_a_calibration_of_other_settings_or_none_says_nothing(tmp_path):
    experiment = load_experiment(PEERS, check_graphs=False)
    other = {**training_settings(experiment, None), "epochs": 20}
    assert calibration_note(experiment, _write(tmp_path / "a.json", train=other)) == ""
    paper = training_settings(experiment, None)
    assert calibration_note(experiment, _write(tmp_path / "b.json", train=paper), "paper") == ""
    assert calibration_note(experiment, tmp_path / "missing.json") == ""
    (tmp_path / "bad.json").write_text("{")
    assert calibration_note(experiment, tmp_path / "bad.json") == ""
