"""Trials that die are retried from their last checkpoint (``max_failures``) and end exactly
where an uninterrupted run ends; one that fails too often is recorded failed (issue 29)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from scaling_lab.errors import UserError
from scaling_lab.eval_protocol import AP_KEYS
from scaling_lab.sweep.experiment import load_experiment
from scaling_lab.sweep.faults import FAULTS_ENV, Fault, parse_faults
from scaling_lab.sweep.runner import run_sweep
from scaling_lab.sweep.store import TrialStore

pytest.importorskip("ray")

TINY = """\
description: three tiny trainings, two epochs of five batches (fault tests)
base: yolov7-tiny
metrics: [params, AP]
variants:
  - label: base
  - label: SiLU
    overrides: {act: silu}
EXTRA
train:
  data: synth:images=24,size=64
  img_size: 64
  epochs: 2
  batch_size: 4
  nominal_batch: 4
  warmup_min_steps: 0
  hyp: {warmup_epochs: 0}
  eval_every: 1
resources: {cpu: 1}
max_concurrent: 2
max_failures: 2
"""
NARROW = "  - label: narrow\n    scale: {width: 0.5, mode: width}"
LOSSES = ["box", "obj", "cls", "total"]


def test_fault_entries_parse_and_a_bad_one_is_one_line():
    faults = parse_faults("00-base:1:sigkill:2, 0?-*:0:loader")
    assert faults == (Fault(0, "00-base", 1, "sigkill", 2), Fault(1, "0?-*", 0, "loader", 1))
    assert parse_faults("") == ()
    for bad in ("00-base:1", "00-base:x:raise", "00-base:1:explode", ":1:raise", "k:-1:raise"):
        with pytest.raises(UserError, match=FAULTS_ENV) as info:
            parse_faults(bad)
        assert "\n" not in str(info.value)


def test_max_failures_must_not_be_negative(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(TINY.replace("EXTRA\n", "").replace("max_failures: 2", "max_failures: -1"))
    with pytest.raises(UserError, match="max_failures"):
        load_experiment(path)


def _sweep(text: str, tmp_path: Path, name: str) -> tuple[pd.DataFrame, TrialStore]:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    frame = run_sweep(
        load_experiment(path), storage=tmp_path / "runs", reports=tmp_path / "reports", verbose=0
    )
    return frame.set_index("key"), TrialStore(tmp_path / "runs" / name)


def _weights(trial_dir: Path) -> dict:
    import torch

    ckpt = torch.load(trial_dir / "train" / "weights" / "last.pt", weights_only=False)
    return {"model": ckpt["model"], "ema": ckpt["ema"]["module"]}


@pytest.mark.usefixtures("ray_session")
def test_killed_and_raising_trials_resume_bit_identical_and_a_hopeless_one_fails(
    tmp_path, monkeypatch
):
    import torch

    # the reference: the same two trainings, undisturbed, on this machine
    reference, ref_store = _sweep(TINY.replace("EXTRA\n", ""), tmp_path, "calm")
    faults = [
        "00-base:1:sigkill:2",  # the worker process dies mid-epoch 1
        "01-silu:1:loader:3",  # the data loader raises mid-epoch 1
        # three attempts fail, one more than max_failures 2: an error, out of memory, an error
        *["02-narrow:0:raise", "02-narrow:0:oom", "02-narrow:0:raise:2"],
    ]
    monkeypatch.setenv(FAULTS_ENV, ",".join(faults))
    frame, store = _sweep(TINY.replace("EXTRA", NARROW), tmp_path, "faulty")

    assert frame.loc["02-narrow", "status"] == "failed"  # the sweep went on without it
    assert "InjectedFaultError" in frame.loc["02-narrow", "error"]
    assert store.read("02-narrow")["attempts"] == 3
    errors = json.loads(store.read("02-narrow")["retry_errors"])
    assert len(errors) == 3 and errors[1].startswith("OutOfMemoryError")
    for key in ("00-base", "01-silu"):
        row, ref = store.read(key), ref_store.read(key)
        assert row["status"] == ref["status"] == "finished"
        assert row["attempts"] == 2, key  # retried once, from its epoch-0 checkpoint
        assert (store.trial_dir(key) / "faults").is_dir()  # the fault did strike
        for metric in (*AP_KEYS, "history", "epochs_done"):
            assert row.get(metric) == ref.get(metric), (key, metric)  # exactly equal
        assert frame.loc[key, "AP50"] == reference.loc[key, "AP50"]
        steps = pd.read_csv(store.trial_dir(key) / "train" / "steps.csv")
        ref_steps = pd.read_csv(ref_store.trial_dir(key) / "train" / "steps.csv")
        assert len(ref_steps) == 10  # 2 epochs of 5 batches (19 train images, batch 4)
        assert list(steps["step"]) == list(range(10))  # each step once
        assert steps[LOSSES].equals(ref_steps[LOSSES])  # bit-identical losses
        epochs = pd.read_csv(store.trial_dir(key) / "train" / "results.csv")
        assert list(epochs["epoch"]) == [0, 1]  # each epoch once in the history
        ours, theirs = _weights(store.trial_dir(key)), _weights(ref_store.trial_dir(key))
        for part in ("model", "ema"):
            assert ours[part].keys() == theirs[part].keys()
            for name, tensor in ours[part].items():
                assert torch.equal(tensor, theirs[part][name]), (key, part, name)


def _experiment(tmp_path: Path, resources: str = "{cpu: 1}", data: str = "synth:images=24,size=64"):
    path = tmp_path / "cluster.yaml"
    text = TINY.replace("EXTRA\n", "").replace("resources: {cpu: 1}", f"resources: {resources}")
    path.write_text(text.replace("synth:images=24,size=64", data))
    return load_experiment(path)


def test_a_gpu_request_ray_cannot_pack_is_one_line(tmp_path):
    from scaling_lab.sweep.ray_setup import check_gpu_request

    for packable in ("{cpu: 1, gpu: 0.3}", "{cpu: 1, gpu: 2}", "{cpu: 1}"):
        check_gpu_request(_experiment(tmp_path, packable))
    with pytest.raises(UserError, match=r"1\.5 GPUs, which Ray cannot pack") as info:
        check_gpu_request(_experiment(tmp_path, "{cpu: 1, gpu: 1.5}"))
    assert info.value.field == "resources.gpu" and "\n" not in str(info.value)


@pytest.mark.usefixtures("ray_session")
def test_cluster_checks_name_the_storage_the_data_or_the_resources(tmp_path):
    """On a cluster every node must write the storage and see the datasets, and some node
    must have a trial's resources (the module's Ray session stands in for a cluster)."""
    from scaling_lab.sweep.experiment_checks import dataset_refs
    from scaling_lab.sweep.ray_setup import check_cluster

    experiment = _experiment(tmp_path)
    refs = dataset_refs(experiment, profile_only=False)
    assert refs == [("train", "synth:images=24,size=64")]
    check_cluster(experiment, "local", str(tmp_path / "runs" / "x"), refs, verbose=0)
    assert (tmp_path / "runs" / "x").is_dir() and not list((tmp_path / "runs" / "x").iterdir())

    (tmp_path / "file").write_text("")  # a folder below a file: no node can write it
    with pytest.raises(UserError, match="cannot write the sweep storage") as info:
        check_cluster(experiment, "local", str(tmp_path / "file" / "runs"), refs, verbose=0)
    assert info.value.field == "storage" and "\n" not in str(info.value)

    missing = _experiment(tmp_path, data=str(tmp_path / "nowhere"))
    refs = dataset_refs(missing, profile_only=False)
    with pytest.raises(UserError, match="is not there: no such dataset folder") as info:
        check_cluster(missing, "local", str(tmp_path / "runs" / "y"), refs, verbose=0)
    assert info.value.field == "train.data"

    greedy = _experiment(tmp_path, "{cpu: 1, gpu: 4}")
    with pytest.raises(UserError, match="more than any node of the cluster") as info:
        check_cluster(greedy, "local", str(tmp_path / "runs" / "z"), [], verbose=0)
    assert info.value.field == "resources.gpu"
