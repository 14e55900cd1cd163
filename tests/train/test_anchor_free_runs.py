"""``lab train`` and ``lab eval`` on the anchor-free peers: YOLOX and PP-YOLOE train on the
synthetic set with their head family's loss (no flag), write the COCO AP table, and their
checkpoints evaluate through their family's decode to the same figures."""

from __future__ import annotations

import json

import pytest

from scaling_lab.eval_protocol import AP_KEYS
from scaling_lab.train.checkpoint import load_checkpoint
from tests.helpers.cli import run_lab_here

DATA = "synth:images=16,size=64"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["yolox-s", "ppyoloe-s"])
def test_train_then_eval(name, tmp_path, monkeypatch):
    monkeypatch.setenv("SCALING_LAB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / name
    common = ("--data", DATA, "--img", "64")
    train = run_lab_here(
        "train", "--model", name, *common, "--epochs", "1", "--batch", "8",
        "--nominal-batch", "8", "--warmup-min-steps", "0", "--out", str(out),
    )  # fmt: skip
    assert train.returncode == 0, train.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert set(AP_KEYS) <= set(metrics)
    # (one epoch from the public prior biases: few or no cells pass the NMS threshold yet)
    ckpt = load_checkpoint(out)
    key, value = {"yolox-s": ("mixup", 1.0), "ppyoloe-s": ("mosaic", 0.0)}[name]
    assert ckpt["hyp"]["momentum"] == 0.9 and ckpt["hyp"][key] == value  # its family's recipe
    evaluated = run_lab_here("eval", "--weights", str(out), *common, "--json")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    figures = json.loads(evaluated.stdout.strip().splitlines()[-1])
    assert figures["model"] == name
    for key in (*AP_KEYS, "n_predictions"):
        assert figures[key] == metrics[key], key


def test_yolox_trains_its_last_epochs_on_plain_images(tmp_path, monkeypatch):
    """The public trainer's no-augmentation epochs (15 of 300, with the L1 term): from then on
    the loader serves plain letterboxed images (no mosaic, mixup or affine; flips and HSV
    kept), while the recipe the checkpoints store stays the run's."""
    from scaling_lab.train.heads import PLAIN_IMAGES
    from scaling_lab.train.heads.yolox import l1_epochs
    from scaling_lab.train.trainer import Trainer
    from tests.helpers import train_fakes

    monkeypatch.setenv("SCALING_LAB_CACHE", str(tmp_path / "cache"))
    epochs = 40  # the last round(40 x 15 / 300) = 2 plain
    assert l1_epochs(epochs) == 2
    config = train_fakes.fake_config(
        "yolox-s", tmp_path / "run", data=DATA, img_size=64, epochs=epochs, batch_size=8
    )
    trainer = Trainer(config)
    trainer._setup()
    recipe, first = dict(trainer.hyp), trainer.loader
    assert first.dataset.hyp["mixup"] == 1.0 and first.dataset.hyp["mosaic"] == 1.0
    trainer._close_augmentation(epochs - 3)  # not yet
    assert trainer.loader is first
    trainer._close_augmentation(epochs - 2)
    plain = trainer.loader.dataset.hyp
    assert all(plain[key] == value for key, value in PLAIN_IMAGES.items())
    assert plain["fliplr"] == recipe["fliplr"] and plain["hsv_s"] == recipe["hsv_s"]
    assert trainer.hyp == recipe  # what the checkpoint stores
    trainer._close_augmentation(epochs - 1)  # built once
    assert trainer.loader.dataset.hyp is plain
