"""Reading the reference's checkpoints safely and mapping them onto our models.

Checkpoints are built here from stand-in classes saved at the reference's module paths
(``standins.py``); hostile pickles must be refused before anything in them runs.
"""

from __future__ import annotations

import os
import pickle
import subprocess

import pytest
import torch

from scaling_lab.cli import main
from scaling_lab.spec import parse_spec
from scaling_lab.train.checkpoint import load_checkpoint
from scaling_lab.train.evaluation import model_from_checkpoint
from scaling_lab.weights import (
    AlignmentError,
    ReferenceCheckpointError,
    convert_weights,
    read_reference_checkpoint,
)
from tests.helpers.weight_standins import (
    MINI_CONFIG,
    MINI_SPEC,
    build_model,
    save_checkpoint,
    training_checkpoint,
)


@pytest.fixture
def mini_spec(tmp_path):
    path = tmp_path / "mini-e.yaml"
    path.write_text(MINI_SPEC)
    return str(path)


@pytest.fixture
def reference_ckpt(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, training_checkpoint(seed=3))
    return path


def test_reads_the_module_tree_without_the_reference_classes(reference_ckpt):
    import sys

    assert "models.common" not in sys.modules  # nothing of the stand-ins is importable now
    weights = read_reference_checkpoint(reference_ckpt)
    expected = build_model(seed=3).half().state_dict()
    assert list(weights.state) == list(expected)
    for key, tensor in expected.items():
        assert torch.equal(weights.state[key], tensor), key
    assert weights.config["backbone"] == MINI_CONFIG["backbone"]
    assert weights.entry == "model" and weights.epoch == 4
    assert weights.modules["model.0.act"][0] == "torch.nn.modules.activation.SiLU"
    ema = read_reference_checkpoint(reference_ckpt, ema=True)
    assert torch.equal(
        ema.state["model.0.conv.weight"],
        build_model(seed=4).half().state_dict()["model.0.conv.weight"],
    )


def test_converts_and_loads_for_lab_eval(reference_ckpt, mini_spec, tmp_path):
    out = tmp_path / "ours.pt"
    converted = convert_weights(reference_ckpt, mini_spec, out)
    assert converted.notes == []
    ref = build_model(seed=3).half().float().state_dict()
    state = converted.state
    # E-ELAN: a width-2 conv holds both branches' entry convs, output channels stacked in the
    # reference's branch order; the grouped chain and transition likewise
    assert torch.equal(
        state["e.cv1.conv.weight"].float(),
        torch.cat([ref["model.2.conv.weight"], ref["model.8.conv.weight"]]),
    )
    assert torch.equal(
        state["e.cv4.bn.running_var"].float(),
        torch.cat([ref["model.5.bn.running_var"], ref["model.11.bn.running_var"]]),
    )
    assert torch.equal(
        state["e.cv5.conv.weight"].float(),
        torch.cat([ref["model.7.conv.weight"], ref["model.13.conv.weight"]]),
    )
    assert torch.equal(state["rep4.identity.weight"].float(), ref["model.22.rbr_identity.weight"])
    assert torch.equal(state["rep3.point.0.weight"].float(), ref["model.21.rbr_1x1.0.weight"])
    assert torch.equal(state["detect.ia.1.implicit"].float(), ref["model.23.ia.1.implicit"])
    ckpt = load_checkpoint(out)  # weights_only: plain tensors and values
    assert ckpt["converted_from"]["entry"] == "model"
    model = model_from_checkpoint(ckpt)  # what `lab eval --weights` builds
    assert torch.equal(model.state_dict()["d4.conv.weight"], ref["model.20.conv.weight"])
    assert parse_spec(ckpt["spec"]).nc == 2


def test_the_converted_model_equals_its_stacked_branches(reference_ckpt, mini_spec):
    """Function check without the reference: our E-ELAN computes the sum of the two branch
    ELANs built from the same reference convs (done here with torch.nn.functional)."""
    from torch.nn import functional as F  # noqa: N812

    converted = convert_weights(reference_ckpt, mini_spec)
    model = converted.create_model(torch.float64).eval()
    ref = {k: v.double() for k, v in read_reference_checkpoint(reference_ckpt).state.items()}

    def conv(x, i, s=1):
        w = ref[f"model.{i}.conv.weight"]
        y = F.conv2d(x, w, None, s, w.shape[-1] // 2)
        b = f"model.{i}.bn."
        y = F.batch_norm(
            y,
            ref[b + "running_mean"],
            ref[b + "running_var"],
            ref[b + "weight"],
            ref[b + "bias"],
            False,
            0.0,
            1e-3,
        )
        return F.silu(y)

    def elan(x, first):
        a, b = conv(x, first), conv(x, first + 1)
        c1 = conv(b, first + 2)
        c2 = conv(c1, first + 3)
        return conv(torch.cat([c2, c1, b, a], 1), first + 5)

    x = torch.rand(1, 3, 64, 64, dtype=torch.float64)
    p2 = conv(conv(x, 0, 2), 1, 2)
    expected = elan(p2, 2) + elan(p2, 8)
    captured = {}
    handle = model.get_submodule("e.cv5").register_forward_hook(
        lambda m, i, o: captured.setdefault("out", o)
    )
    with torch.no_grad():
        model(x)
    handle.remove()
    ours = captured["out"][:, :32] + captured["out"][:, 32:]  # the merge
    assert float((ours - expected).abs().max()) < 1e-12


def test_ema_and_state_dict_checkpoints(tmp_path, mini_spec):
    ckpt = training_checkpoint(seed=5)
    ckpt["model"], ckpt["ema"] = ckpt["ema"], None  # what the reference's strip_optimizer does
    stripped = tmp_path / "best.pt"
    save_checkpoint(stripped, ckpt)
    with pytest.raises(ReferenceCheckpointError, match="'ema' entry is empty"):
        convert_weights(stripped, mini_spec, ema=True)
    assert convert_weights(stripped, mini_spec).origin["entry"] == "model"

    bare = tmp_path / "state.pt"
    torch.save({"model": build_model(seed=6).state_dict()}, bare)
    with pytest.raises(ReferenceCheckpointError, match="without its model config"):
        convert_weights(bare, mini_spec)
    import yaml

    config = tmp_path / "mini.yaml"
    config.write_text(yaml.safe_dump(MINI_CONFIG))
    converted = convert_weights(bare, mini_spec, config=config)
    assert torch.equal(
        converted.state["stem.conv.weight"], build_model(seed=6).state_dict()["model.0.conv.weight"]
    )


def test_the_wrong_model_is_refused(reference_ckpt):
    with pytest.raises(AlignmentError, match="the models differ"):
        convert_weights(reference_ckpt, "yolov7")
    with pytest.raises(AlignmentError, match="training form"):
        convert_weights(reference_ckpt, "yolov7-deploy")


def test_weights_that_do_not_fit_their_config_are_refused(tmp_path, mini_spec):
    ckpt = training_checkpoint(seed=1)
    del ckpt["model"].model[20].bn  # a layer the config calls a Conv without its BatchNorm
    path = tmp_path / "odd.pt"
    save_checkpoint(path, ckpt)
    with pytest.raises(AlignmentError, match=r"model\.20\.bn"):
        convert_weights(path, mini_spec)
    ckpt = training_checkpoint(seed=1)
    ckpt["model"].model[3].bn.eps = 1e-5  # would normalize differently from ours
    save_checkpoint(path, ckpt)
    with pytest.raises(AlignmentError, match=r"'model\.3\.bn' normalizes with eps 1e-05"):
        convert_weights(path, mini_spec)
    ckpt = training_checkpoint(seed=1)
    ckpt["model"].model[4].act = torch.nn.ReLU()
    save_checkpoint(path, ckpt)
    with pytest.raises(AlignmentError, match=r"'model\.4\.act' is .*ReLU.*gives silu"):
        convert_weights(path, mini_spec)


# ----------------------------------------------------------------------------- hostile files


class _Run:
    """Unpickling this calls ``fn(*args)``: what a hostile checkpoint does."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _hostile(tmp_path, kind: str):
    marker = tmp_path / "pwned"
    if kind == "os.system":
        payload = _Run(os.system, f"touch {marker}")
    elif kind == "subprocess.Popen":
        payload = _Run(subprocess.Popen, ["touch", str(marker)])
    elif kind == "builtins.exec":
        payload = _Run(exec, f"open({str(marker)!r}, 'w').close()")
    else:  # a model whose attributes hide a call
        model = build_model()
        import functools

        model.hook = _Run(functools.partial(os.system, f"touch {marker}"))
        payload = model
    path = tmp_path / "hostile.pt"
    if kind == "builtins.exec":  # a plain pickle, not torch's zip archive
        path.write_bytes(pickle.dumps({"model": payload}, protocol=2))
    else:
        save_checkpoint(path, {"model": payload, "epoch": 1})
    return path, marker


@pytest.mark.parametrize(
    "kind, refused",
    [
        ("os.system", "posix.system"),
        ("subprocess.Popen", "subprocess.Popen"),
        ("builtins.exec", "exec"),
        ("partial in a model", "functools.partial"),
    ],
)
def test_hostile_pickles_are_refused_and_run_nothing(tmp_path, kind, refused):
    path, marker = _hostile(tmp_path, kind)
    with pytest.raises(ReferenceCheckpointError, match=f"refused.*{refused}"):
        read_reference_checkpoint(path)
    assert not marker.exists()


def test_cli_converts_and_refuses_in_one_line(tmp_path, reference_ckpt, mini_spec, capsys):
    out = tmp_path / "ours.pt"
    assert (
        main(["convert-weights", str(reference_ckpt), "--model", mini_spec, "--out", str(out)]) == 0
    )
    printed = capsys.readouterr().out
    assert "wrote" in printed and "mini-e, nc 2" in printed
    assert load_checkpoint(out)["kind"] == "converted"

    path, marker = _hostile(tmp_path, "os.system")
    bad_out = tmp_path / "never.pt"
    assert main(["convert-weights", str(path), "--model", "yolov7", "--out", str(bad_out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refused" in err and "posix.system" in err
    assert not marker.exists() and not bad_out.exists()

    assert (
        main(
            ["convert-weights", str(reference_ckpt), "--model", "yolov7-e6", "--out", str(bad_out)]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "differ" in err and not bad_out.exists()
