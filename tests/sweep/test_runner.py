"""``lab sweep`` end to end on an embedded Ray: grid, search, failures, SIGKILL and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scaling_lab.sweep.experiment import load_experiment
from scaling_lab.sweep.paper_figures import paper_rows
from scaling_lab.sweep.pareto import pareto_mask
from scaling_lab.sweep.runner import run_sweep
from scaling_lab.sweep.store import TrialStore

ROOT = Path(__file__).resolve().parents[2]
TINY_TRAIN = Path(__file__).parent / "tiny_train.yaml"

pytest.importorskip("ray")


pytestmark = pytest.mark.usefixtures("ray_session")  # one Ray session for the module


def lab(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scaling_lab.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def sweep_args(experiment: Path, tmp_path: Path) -> tuple[str, ...]:
    """``lab sweep`` arguments with storage and reports under tmp_path, quiet, 2 CPUs."""
    storage, reports = str(tmp_path / "runs"), "reports"  # relative: lab runs in tmp_path
    return ("sweep", str(experiment), "--storage", storage, "--reports", reports,
            "--no-report", "--quiet", "--num-cpus", "2")  # fmt: skip


def test_table3_profile_only_sweep_and_report_match_the_paper(tmp_path):
    exp_file = ROOT / "experiments" / "table3_scaling.yaml"
    reports = tmp_path / "reports"
    run = lab(*sweep_args(exp_file, tmp_path), "--profile-only", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    report = lab("report", str(exp_file), "--reports", str(reports), cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-2000:]

    out = reports / "table3_scaling"
    results = pd.read_csv(out / "results.csv")
    assert len(pd.read_parquet(out / "results.parquet")) == 4
    paper = paper_rows(3)
    assert list(results["label"]) == list(paper)  # declared order = the paper's
    for _, row in results.iterrows():
        assert row["status"] == "finished"
        # the scaling issue's tolerances: params within 0.1M, FLOPs within 0.5 %
        assert abs(row["params"] / 1e6 - paper[row["label"]]["params_m"]) < 0.1
        assert abs(row["gflops"] / paper[row["label"]]["gflops"] - 1) < 0.005
        spec = Path(row["spec_path"])  # relative to where lab ran, under its --reports
        assert spec.parts[:3] == ("reports", "table3_scaling", "specs"), spec
        assert (tmp_path / spec).is_file() and row["spec_hash"] in _hash(tmp_path / spec)
    table = (out / "table.md").read_text()
    assert "#Param. (paper)" in table and "FLOPs (paper)" in table
    base, compound = results.iloc[0], results.iloc[3]
    change = round(100 * (compound["params"] / base["params"] - 1))
    assert f"improvement (compound (v7-X) vs base (v7-X light)) | {change:+d}%" in _squash(table)
    assert (out / "table.tex").read_text().count("\\midrule") == 2
    assert (out / "params_vs_flops.png").read_bytes()[:4] == b"\x89PNG"


def _hash(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _squash(text: str) -> str:
    """Markdown table cells without their padding."""
    return "\n".join(
        " | ".join(c.strip() for c in line.split("|")).strip() for line in text.splitlines()
    )


def _steps_and_epochs(trial_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    return pd.read_csv(trial_dir / "train" / "steps.csv"), pd.read_csv(
        trial_dir / "train" / "results.csv"
    )


def _kill_once_a_trial_finished(args: tuple[str, ...], cwd: Path, store: TrialStore) -> None:
    """Start ``lab sweep`` and SIGKILL it once a trial is done and another is mid-run."""
    driver = subprocess.Popen(
        [sys.executable, "-m", "scaling_lab.cli", *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            rows = store.rows()
            done = [r for r in rows if r["status"] == "finished"]
            midway = [r for r in rows if r["status"] == "running" and r.get("epochs_done")]
            if done and (midway or len(done) >= 2):
                break
            assert driver.poll() is None, "the sweep ended before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("no trial finished within 300 s")
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    finally:
        if driver.poll() is None:
            driver.kill()


def _resume_and_check(
    args: tuple[str, ...], cwd: Path, store: TrialStore, keys: list[str], epochs: int
) -> pd.DataFrame:
    """Resume the killed sweep: every key finished, finished ones untouched, each trained
    exactly once (every epoch and step once)."""
    before = {r["key"]: r for r in store.rows() if r["status"] == "finished"}
    assert 1 <= len(before) < len(keys)
    resumed = lab(*args, "--resume", cwd=cwd)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    name = store.root.name
    results = pd.read_csv(cwd / "reports" / name / "results.csv")
    assert len(results) == len(keys) and set(results["status"]) == {"finished"}
    assert sorted(results["key"]) == sorted(keys)
    for key, row in before.items():  # finished before the kill: not run again
        assert store.read(key) == row
    for key in results["key"]:
        steps, per_epoch = _steps_and_epochs(store.trial_dir(key))
        assert list(per_epoch["epoch"]) == list(range(epochs))  # each epoch once
        assert list(steps["step"]) == list(range(len(steps)))  # no step twice or skipped
        assert len(steps) == epochs * int((steps["epoch"] == 0).sum())
        assert store.read(key)["epochs_done"] == epochs
    return results


def test_killed_training_sweep_resumes_with_each_trial_trained_once(tmp_path):
    args = sweep_args(TINY_TRAIN, tmp_path)
    store = TrialStore(tmp_path / "runs" / "tiny_train")
    _kill_once_a_trial_finished(args, tmp_path, store)
    keys = ["00-base", "01-planned-repconv", "02-silu", "03-narrow"]
    epochs = load_experiment(TINY_TRAIN).train["epochs"]
    results = _resume_and_check(args, tmp_path, store, keys, epochs)
    assert set(results["seed"]) == {0}  # one seed: train.seed, the keys as before repeats


REPEATED = """description: two rows, two seeds each (tests)
base: yolov7-tiny
metrics: [params, AP]
variants:
  - label: base
  - label: narrow
    scale: {width: 0.5, mode: width}
seeds: 2
train:
  data: synth:images=12,size=64
  img_size: 64
  epochs: 2
  seed: 5
  batch_size: 4
  nominal_batch: 4
  warmup_min_steps: 0
  hyp: {warmup_epochs: 0}
  eval_every: 1
resources: {cpu: 1}
max_concurrent: 2
"""


@pytest.mark.slow  # 55 s; the kill-and-resume path itself runs in the default set above
def test_killed_sweep_with_repeats_resumes_every_seed_once(tmp_path):
    path = tmp_path / "repeated.yaml"
    path.write_text(REPEATED)
    args = sweep_args(path, tmp_path)
    store = TrialStore(tmp_path / "runs" / "repeated")
    _kill_once_a_trial_finished(args, tmp_path, store)
    keys = [f"{row}-seed{seed}" for row in ("00-base", "01-narrow") for seed in (5, 6)]
    results = _resume_and_check(args, tmp_path, store, keys, epochs=2)
    assert list(results["seed"]) == [5, 6, 5, 6] and list(results["label"][:2]) == ["base"] * 2
    import yaml

    train_yaml = store.trial_dir("00-base-seed6") / "train" / "train.yaml"
    settings = yaml.safe_load(train_yaml.read_text())
    assert settings["config"]["seed"] == 6  # each repeat trains with its own seed


FAILING = """\
description: one trial raises (its dataset's annotations are broken), the other finishes
base: yolov7-tiny
metrics: [params, AP]
variants:
  - label: good
  - label: broken data
    train: {data: BROKEN}
train:
  data: synth:images=12,size=64
  img_size: 64
  epochs: 1
  batch_size: 4
  nominal_batch: 4
  warmup_min_steps: 0
  hyp: {warmup_epochs: 0}
"""


def test_a_failing_trial_is_recorded_and_the_others_finish(tmp_path):
    broken = tmp_path / "broken"  # a COCO folder (passes the up-front check), bad JSON inside
    (broken / "annotations").mkdir(parents=True)
    (broken / "annotations" / "instances_val.json").write_text("{")
    (broken / "images" / "val").mkdir(parents=True)
    path = tmp_path / "failing.yaml"
    path.write_text(FAILING.replace("BROKEN", str(broken)))
    frame = run_sweep(
        load_experiment(path), storage=tmp_path / "runs", reports=tmp_path / "reports", verbose=0
    )
    by_label = frame.set_index("label")
    assert by_label.loc["good", "status"] == "finished"
    assert by_label.loc["good", "epochs_done"] == 1
    assert by_label.loc["broken data", "status"] == "failed"
    assert "DataError" in by_label.loc["broken data", "error"]
    assert "instances_val.json" in by_label.loc["broken data", "error"]

    # a rerun without --resume refuses to mix two sweeps in one folder
    with pytest.raises(Exception, match="--resume"):
        run_sweep(load_experiment(path), storage=tmp_path / "runs", reports=tmp_path / "reports")
    # --resume keeps the failure; --retry-failed runs it again (and it fails again)
    again = run_sweep(
        load_experiment(path),
        storage=tmp_path / "runs",
        reports=tmp_path / "reports",
        resume=True,
        verbose=0,
    )
    assert len(again) == 2 and list(again["started_at"]) == list(frame["started_at"])


SEARCH = """\
description: multi-objective search on the CPU (params vs latency), profile only
base: yolov7-tiny
metrics: [params, gflops, latency]
latency: {device: cpu, batch: 1, warmup: 1, iters: 3, threads: 1}
search:
  space:
    img_size: {type: categorical, choices: [64]}
    elan2.depth: {type: int, low: 1, high: 4}
    elan3.depth: {type: int, low: 1, high: 4}
    scale.width: {type: float, low: 0.25, high: 1.0, step: 0.25}
  trials: 6
  objectives: {params: min, latency: min}
  constraints: ["params <= 5e6"]
  seed: 3
max_concurrent: 2
"""


def test_multi_objective_search_reports_its_pareto_set(tmp_path):
    import optuna

    path = tmp_path / "search.yaml"
    path.write_text(SEARCH)
    experiment = load_experiment(path)
    frame = run_sweep(
        experiment, storage=tmp_path / "runs", reports=tmp_path / "reports", verbose=0
    )
    assert len(frame) == frame["key"].nunique()
    assert set(frame["status"]) <= {"finished", "infeasible"}
    infeasible = frame[frame["status"] == "infeasible"]
    assert (infeasible["params"] > 5e6).all() and (
        frame[frame["status"] == "finished"]["params"] <= 5e6
    ).all()
    assert frame["param:elan2.depth"].between(1, 4).all()

    study = optuna.load_study(
        study_name=experiment.name, storage=f"sqlite:///{tmp_path}/runs/{experiment.name}/optuna.db"
    )
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 6 and all(len(t.values) == 2 for t in complete)

    from scaling_lab.report.sweep_report import write_sweep_report

    paths = write_sweep_report(experiment, reports=tmp_path / "reports")
    out = tmp_path / "reports" / experiment.name
    assert out / "objectives.png" in paths and (out / "objectives.svg").is_file()
    numeric = pd.read_csv(out / "table.csv")
    numeric = numeric[numeric["row"] == "result"]
    finished = frame[frame["status"] == "finished"]
    expected = pareto_mask(finished[["params", "latency_ms"]].to_numpy(float), ["min", "min"])
    on_front = set(finished["key"][expected])
    assert set(numeric.loc[numeric["pareto"], "key"]) == on_front and on_front
    assert list(frame["label"]) == [f"t{i:03d}" for i in range(6)]

    # an interrupted trial (row left 'running') is rerun with its own config; nothing else
    store = TrialStore(tmp_path / "runs" / experiment.name)
    key = finished["key"].iloc[0]
    row = store.read(key)
    store.write(key, {**row, "status": "running"})
    again = run_sweep(
        experiment, storage=tmp_path / "runs", reports=tmp_path / "reports", resume=True, verbose=0
    )
    assert sorted(again["key"]) == sorted(frame["key"])
    assert store.read(key)["status"] == "finished"
    assert store.read(key)["started_at"] == row["started_at"]
    assert json.loads(store.read(key)["config"]) == json.loads(row["config"])
    assert np.isclose(store.read(key)["params"], row["params"])


RANDOM_SEARCH = """\
base: yolov7-tiny
metrics: [params, gflops]
search:
  space:
    elan1.depth: {type: int, low: 1, high: 4}
    elan2.depth: {type: int, low: 1, high: 4}
    elan3.depth: {type: int, low: 1, high: 4}
    elan4.depth: {type: int, low: 1, high: 4}
    scale.width: {type: float, low: 0.25, high: 1.0, step: 0.25}
  trials: TRIALS
  objectives: {params: min}
  sampler: random
  seed: 0
"""


def test_a_resumed_search_draws_new_designs_not_the_first_runs_again(tmp_path):
    path = tmp_path / "grow.yaml"
    kwargs = {"storage": tmp_path / "runs", "reports": tmp_path / "reports", "verbose": 0}
    path.write_text(RANDOM_SEARCH.replace("TRIALS", "3"))
    first = run_sweep(load_experiment(path), **kwargs)
    assert len(first) == 3
    path.write_text(RANDOM_SEARCH.replace("TRIALS", "6"))  # a bigger budget, then --resume
    grown = run_sweep(load_experiment(path), resume=True, **kwargs)
    # same seed replayed would propose the first three designs again (finished keys)
    assert len(grown) == grown["key"].nunique() == 6
    assert set(first["key"]) < set(grown["key"])


def test_a_search_tops_up_rounds_until_its_budget_of_distinct_designs(tmp_path):
    """Four designs in the space, three trials: re-proposed designs are not counted as new
    trials, so the sweep runs more rounds until three distinct designs have rows."""
    path = tmp_path / "small.yaml"
    text = RANDOM_SEARCH.replace("TRIALS", "3")
    space = (
        "    elan1.depth: {type: int, low: 1, high: 2}\n"
        "    elan2.depth: {type: int, low: 1, high: 2}\n"
    )
    start = text.index("    elan1.depth")
    end = text.index("  trials:")
    path.write_text(text[:start] + space + text[end:])
    kwargs = {"storage": tmp_path / "runs", "reports": tmp_path / "reports", "verbose": 0}
    frame = run_sweep(load_experiment(path), **kwargs)
    assert len(frame) == frame["key"].nunique() == 3
