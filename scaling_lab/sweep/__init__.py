"""Ablation sweeps: experiment specs, the Ray Tune runner and its results store."""

from scaling_lab.sweep.experiment import load_experiment
from scaling_lab.sweep.experiment_format import Experiment, Variant
from scaling_lab.sweep.runner import run_sweep
from scaling_lab.sweep.store import TrialStore, read_results, results_frame

__all__ = [
    "Experiment",
    "TrialStore",
    "Variant",
    "load_experiment",
    "read_results",
    "results_frame",
    "run_sweep",
]
