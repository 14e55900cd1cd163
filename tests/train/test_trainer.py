"""The trainer on fake data, loss and evaluator: exact resume, run files, errors, the CLI.

The acceptance test: a run interrupted mid-epoch and resumed logs the same per-step losses
(and ends with the same weights) as an uninterrupted run with the same seed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from scaling_lab.cli import main as lab_main
from scaling_lab.errors import UserError
from scaling_lab.train.backends import Backends
from scaling_lab.train.checkpoint import load_checkpoint
from scaling_lab.train.evaluation import model_from_checkpoint
from scaling_lab.train.run_log import read_csv
from scaling_lab.train.trainer import MAX_NONFINITE_AMP, Trainer, resume, train
from tests.helpers import train_fakes
from tests.helpers.specs import TINY_SPEC

REPO = Path(__file__).resolve().parents[2]
STEP_KEYS = ("step", "epoch", "batch", "box", "obj", "cls", "total", "lr_decay", "lr_bias")
STEP_KEYS += ("momentum", "accumulate", "optimizer_step")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny convs run fastest on one thread (and a shared CPU makes two threads crawl)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def spec_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "tiny.yaml"
    path.write_text(TINY_SPEC)
    return path


def _config(spec_path, out, **kw):
    return train_fakes.fake_config(spec_path, out, img_size=32, **kw)


@pytest.fixture(scope="module")
def reference_run(spec_path, tmp_path_factory) -> Path:
    """Two uninterrupted epochs of four steps (fused evaluation on)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("ref") / "run"
    cfg = _config(spec_path, out, eval_fused=True, tensorboard=True)
    train(cfg, backends=train_fakes.fake_backends())
    return out


def _steps(run: Path) -> list[tuple]:
    return [tuple(row[k] for k in STEP_KEYS) for row in read_csv(run / "steps.csv")]


@pytest.mark.parametrize(
    ("save_every", "kill_after", "resume_at"),
    [
        (2, 6, (1, 2)),  # mid-epoch checkpoint in epoch 1: replay 2 batches, redo step 6
        (2, 2, (0, 2)),  # mid-epoch checkpoint in epoch 0
        (0, 6, (1, 0)),  # epoch checkpoints only: redo epoch 1 from its start
    ],
)
def test_interrupted_run_resumes_exactly(
    spec_path, reference_run, tmp_path, save_every, kill_after, resume_at
):
    out = tmp_path / "run"
    cfg = _config(spec_path, out, eval_fused=True, save_every=save_every)
    with pytest.raises(train_fakes.KilledError):
        train(
            cfg,
            backends=train_fakes.fake_backends(),
            callbacks=[train_fakes.kill_after(kill_after)],
        )
    ckpt = load_checkpoint(out)
    assert (ckpt["epoch"], ckpt["step_in_epoch"]) == resume_at
    assert len(_steps(out)) == kill_after + 1  # logged past the checkpoint before the "kill"

    resume(out, backends=train_fakes.fake_backends())

    assert _steps(out) == _steps(reference_run)  # per-step losses, lrs, accumulation
    assert read_csv(out / "results.csv") == read_csv(reference_run / "results.csv")
    got, want = load_checkpoint(out), load_checkpoint(reference_run)
    for key in ("model",):
        assert all(torch.equal(got[key][k], want[key][k]) for k in want[key])
    assert all(torch.equal(got["ema"]["module"][k], v) for k, v in want["ema"]["module"].items())
    assert got["ema"]["updates"] == want["ema"]["updates"]
    assert json.loads((out / "metrics.json").read_text()) == json.loads(
        (reference_run / "metrics.json").read_text()
    )


@pytest.mark.parametrize("fused", [False, True])
def test_an_adam_run_trains_with_adam_and_resumes_exactly(
    spec_path, reference_run, tmp_path, fused
):
    # Adam's moments are state: a resume that rebuilt SGD, or lost the moments, would diverge;
    # a fused run must resume fused (the foreach kernel rounds otherwise)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    adam = {"optimizer": "adam", "fused_optimizer": fused}
    train(_config(spec_path, whole, **adam), backends=train_fakes.fake_backends())
    with pytest.raises(train_fakes.KilledError):
        train(
            _config(spec_path, killed, save_every=2, **adam),
            backends=train_fakes.fake_backends(),
            callbacks=[train_fakes.kill_after(6)],
        )
    assert "exp_avg_sq" in load_checkpoint(killed)["optimizer"]["state"][0]
    resume(killed, backends=train_fakes.fake_backends())
    assert _steps(killed) == _steps(whole)
    got, want = load_checkpoint(killed)["model"], load_checkpoint(whole)["model"]
    assert all(torch.equal(got[k], want[k]) for k in want)
    sgd = load_checkpoint(reference_run)["model"]  # the same run with SGD
    assert not all(torch.equal(got[k], sgd[k]) for k in sgd)


def test_run_folder(reference_run):
    run = reference_run
    for name in ("spec.yaml", "train.yaml", "steps.csv", "results.csv", "metrics.json"):
        assert (run / name).is_file(), name
    assert (run / "loss.png").stat().st_size > 1000
    assert len(_steps(run)) == 8 and len(read_csv(run / "results.csv")) == 2
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 8 and metrics["best_epoch"] in (0, 1)
    # the fused deploy model scores what the EMA model scores
    assert metrics["fused_metrics"]["AP"] == pytest.approx(metrics["metrics"]["AP"], rel=1e-4)
    best = load_checkpoint(run / "weights" / "best.pt")
    assert best["kind"] == "best" and best["optimizer"] is None


def test_tensorboard_events(reference_run):
    pytest.importorskip("tensorboard")
    assert list((reference_run / "tb").glob("events.out.tfevents.*"))


def test_checkpoint_holds_plain_state_and_rebuilds_the_model(reference_run):
    raw = torch.load(reference_run / "weights" / "last.pt", weights_only=True)

    def walk(obj):
        assert not isinstance(obj, torch.nn.Module)
        if isinstance(obj, dict):
            for value in obj.values():
                walk(value)
        elif isinstance(obj, list | tuple):
            for value in obj:
                walk(value)

    walk(raw)
    assert raw["spec"] == (reference_run / "spec.yaml").read_text()
    assert (raw["epoch"], raw["step_in_epoch"], raw["global_step"]) == (2, 0, 8)
    assert {"rng", "rng_epoch_start", "loader_rng"} <= set(raw["ranks"][0])
    model = model_from_checkpoint(raw)
    assert not model.training
    ema = raw["ema"]["module"]
    assert all(torch.equal(model.state_dict()[k], ema[k]) for k in ema)
    out = model(torch.rand(1, 3, 32, 32))
    assert out.shape[-1] == 8  # 5 + nc (3)


def test_a_bad_sample_stops_the_run_with_its_name(spec_path, tmp_path):
    backends = train_fakes.fake_backends(bad_index=5)
    with pytest.raises(ValueError, match=r"sample 5 \(img_5.jpg\) is corrupt") as info:
        train(_config(spec_path, tmp_path / "run", epochs=1), backends=backends)
    assert any("stopped in epoch 0 at batch" in note for note in info.value.__notes__)


def test_non_finite_loss_names_the_images(spec_path, tmp_path):
    class NanLoss(train_fakes.FakeLoss):
        def __call__(self, outputs, targets, images):
            loss, items = super().__call__(outputs, targets, images)
            return loss * float("nan"), items

    backends = train_fakes.fake_backends()
    backends.criterion = NanLoss
    with pytest.raises(FloatingPointError, match=r"non-finite loss .* \(images \[\d+"):
        train(_config(spec_path, tmp_path / "run", epochs=1), backends=backends)


def test_amp_tolerates_a_few_overflows(spec_path, tmp_path):
    """Under fp16's loss scaler a non-finite loss is skipped a few times; without a scaler
    (fp32, or bf16 on the CPU) the first one stops the run, since nothing would skip it."""
    from types import SimpleNamespace

    trainer = Trainer(_config(spec_path, tmp_path / "run"))
    nan = torch.tensor(float("nan"))
    trainer.amp = True
    trainer.scaler = SimpleNamespace(is_enabled=lambda: False)  # bf16: no scaler
    with pytest.raises(FloatingPointError, match=r"images \[7\]"):
        trainer._check_finite(nan, 0, 3, [7])
    trainer._nonfinite = 0
    trainer.scaler = SimpleNamespace(is_enabled=lambda: True)  # fp16 with loss scaling
    with pytest.warns(RuntimeWarning, match=r"non-finite loss nan in epoch 0, batch 3"):
        for _ in range(MAX_NONFINITE_AMP - 1):
            trainer._check_finite(nan, 0, 3, [7])
    trainer._check_finite(torch.tensor(1.0), 0, 4, [8])  # a finite loss resets the count
    with pytest.warns(RuntimeWarning):
        for _ in range(MAX_NONFINITE_AMP - 1):
            trainer._check_finite(nan, 0, 5, [9])
    with pytest.raises(FloatingPointError, match=r"images \[9\]"):
        trainer._check_finite(nan, 0, 5, [9])


def test_refuses_to_overwrite_a_run_and_restores_global_flags(spec_path, reference_run):
    assert not torch.are_deterministic_algorithms_enabled()  # the runs restored the flag
    with pytest.raises(UserError, match="already holds a run"):
        train(_config(spec_path, reference_run), backends=train_fakes.fake_backends())


def test_resume_refuses_changed_data(reference_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(reference_run, run)
    with pytest.raises(ValueError, match="the data changed"):
        resume(run, backends=train_fakes.fake_backends(n_train=20))


@pytest.fixture
def fake_cli_backends(monkeypatch):
    """``lab train`` / ``lab eval`` with the fakes in place of the real data, loss, eval."""
    backends = train_fakes.fake_backends()
    for name in ("resolve_data", "build_dataloader", "default_hyp", "criterion", "evaluate"):
        function = getattr(backends, name)
        monkeypatch.setattr(Backends, f"get_{name}", lambda self, f=function: f)


def test_cli_train_resume_and_eval(spec_path, tmp_path, capsys, fake_cli_backends):
    out = tmp_path / "run"
    args = ["train", "--model", str(spec_path), "--data", "fake", "--img", "32", "--epochs", "1"]
    args += ["--batch", "8", "--device", "cpu", "--out", str(out), "--no-tensorboard"]
    args += ["--aux-assigner", "lead_guided", "--aux-constraint", "off"]
    assert lab_main(args) == 0
    assert "metrics.json" in capsys.readouterr().out
    cfg = load_checkpoint(out)["config"]
    assert (cfg["aux_assigner"], cfg["aux_constraint"], cfg["batch_size"]) == (
        "lead_guided",
        False,
        8,
    )
    assert lab_main(["train", "--resume", str(out), "--epochs", "2"]) == 0  # extend the run
    assert len(read_csv(out / "results.csv")) == 2
    capsys.readouterr()

    eval_args = ["eval", "--weights", str(out / "weights" / "best.pt"), "--data", "fake"]
    assert lab_main([*eval_args, "--fused", "--json", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["form"] == "deploy (fused)" and 0 <= result["AP"] <= 1

    assert lab_main(["train", "--resume", str(tmp_path / "none")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert lab_main(["train", "--model", str(spec_path)]) == 2


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.is_file() else 0


def _run_script(args: list[str], ranks: int = 0) -> subprocess.Popen:
    """``python -m tests.helpers.train_fakes ARGS``, or under ``torchrun`` with ``ranks``
    processes."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env.pop("WORLD_SIZE", None)
    launcher = [sys.executable]
    if ranks:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
    cmd = [*launcher, "-m", "tests.helpers.train_fakes", *args]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.DEVNULL)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume(spec_path, tmp_path):
    """A real kill: SIGKILL a training process mid-epoch, resume it in a new process."""
    common = ["--spec", str(spec_path), "--n-train", "32", "--save-every", "2"]
    assert _run_script([str(tmp_path / "ref"), *common]).wait(timeout=300) == 0

    out = tmp_path / "run"
    proc = _run_script([str(out), *common])
    deadline = time.time() + 300
    while _lines(out / "steps.csv") < 1 + 11 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    ckpt = load_checkpoint(out)
    assert ckpt["step_in_epoch"] > 0 and ckpt["global_step"] < _lines(out / "steps.csv") - 1
    assert _run_script([str(out), "--resume", "--n-train", "32"]).wait(timeout=300) == 0
    assert _steps(out) == _steps(tmp_path / "ref")


@pytest.mark.slow
def test_ddp_two_ranks_resume_exactly(spec_path, tmp_path):
    """torchrun with 2 CPU processes (gloo): only rank 0 writes; a run stopped mid-epoch
    resumes to the uninterrupted run's per-step losses."""
    common = ["--spec", str(spec_path), "--save-every", "2"]
    assert _run_script([str(tmp_path / "ref"), *common], ranks=2).wait(timeout=600) == 0
    out = tmp_path / "run"
    assert _run_script([str(out), *common, "--kill-after", "6"], ranks=2).wait(timeout=600) != 0
    ckpt = load_checkpoint(out)
    assert ckpt["world_size"] == len(ckpt["ranks"]) == 2 and ckpt["step_in_epoch"] == 2
    assert _run_script([str(out), "--resume"], ranks=2).wait(timeout=600) == 0
    assert _steps(out) == _steps(tmp_path / "ref")
    assert read_csv(out / "results.csv") == read_csv(tmp_path / "ref" / "results.csv")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_amp_run_resumes(spec_path, tmp_path):
    """On CUDA: AMP (autocast + GradScaler state in the checkpoint), then a mid-epoch resume."""
    ref, out = tmp_path / "ref", tmp_path / "run"
    kw = {"device": "cuda", "save_every": 2, "img_size": 64}
    train(train_fakes.fake_config(spec_path, ref, **kw), backends=train_fakes.fake_backends())
    assert load_checkpoint(ref)["scaler"]["scale"] > 0  # AMP was on
    with pytest.raises(train_fakes.KilledError):
        train(
            train_fakes.fake_config(spec_path, out, **kw),
            backends=train_fakes.fake_backends(),
            callbacks=[train_fakes.kill_after(6)],
        )
    resume(out, backends=train_fakes.fake_backends())
    got, want = _steps(out), _steps(ref)
    assert [r[:3] for r in got] == [r[:3] for r in want]
    for a, b in zip(got, want):
        assert [float(x) for x in a[3:7]] == pytest.approx([float(x) for x in b[3:7]], rel=1e-4)


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_real_data_and_loss_resume_exactly(spec_path, tmp_path, monkeypatch, workers):
    """The real pipeline (synthetic shapes set, YoloV7Loss, COCO evaluator): stopped after a
    mid-epoch checkpoint and resumed, it logs the uninterrupted run's steps."""
    monkeypatch.setenv("SCALING_LAB_CACHE", str(tmp_path / "cache"))
    kw = {
        "data": "synth:images=48,size=64",
        "img_size": 64,
        "batch_size": 8,
        "nominal_batch": 16,
        "save_every": 2,
        "workers": workers,
    }
    train(train_fakes.fake_config(spec_path, tmp_path / "ref", **kw))
    out = tmp_path / "run"
    with pytest.raises(train_fakes.KilledError):
        train(train_fakes.fake_config(spec_path, out, **kw), callbacks=[train_fakes.kill_after(7)])
    assert load_checkpoint(out)["step_in_epoch"] == 2
    resume(out)
    assert _steps(out) == _steps(tmp_path / "ref")
    assert read_csv(out / "results.csv") == read_csv(tmp_path / "ref" / "results.csv")


def test_evaluation_cadence_changes_no_weight_and_no_metric(spec_path, tmp_path, monkeypatch):
    """Real evaluator, 3 epochs: every epoch evaluated, or only epoch 2 (``eval_epochs``) and
    the last. The sparse run trains the same steps to the same weights, and the epochs it
    evaluates get the same AP; a sweep evaluates only its rungs on this guarantee."""
    monkeypatch.setenv("SCALING_LAB_CACHE", str(tmp_path / "cache"))
    kw = {"data": "synth:images=32,size=64", "img_size": 64, "batch_size": 8, "epochs": 3}
    dense, sparse = tmp_path / "dense", tmp_path / "sparse"
    train(train_fakes.fake_config(spec_path, dense, eval_every=1, **kw))
    train(train_fakes.fake_config(spec_path, sparse, eval_every=0, eval_epochs=[2], **kw))
    assert _steps(sparse) == _steps(dense)
    got, want = load_checkpoint(sparse)["model"], load_checkpoint(dense)["model"]
    assert all(torch.equal(got[k], want[k]) for k in want)
    dense_rows, sparse_rows = read_csv(dense / "results.csv"), read_csv(sparse / "results.csv")
    evaluated = [row["epoch"] for row in sparse_rows if row["AP50"] not in (None, "")]
    assert [int(epoch) for epoch in evaluated] == [1, 2]  # 0-based: epoch 2 and the last
    assert all(row["AP50"] not in (None, "") for row in dense_rows)
    for a, b in zip(sparse_rows, dense_rows):
        if a["AP50"] not in (None, ""):
            assert a["AP50"] == b["AP50"] and a["total"] == b["total"]


def test_eval_epochs_must_be_epochs(spec_path, tmp_path):
    with pytest.raises(ValueError, match=r"epochs >= 1, got \[0, 2\]") as caught:
        train_fakes.fake_config(spec_path, tmp_path / "run", eval_epochs=[0, 2])
    assert caught.value.field == "eval_epochs"
