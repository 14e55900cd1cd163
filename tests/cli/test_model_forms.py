"""A model reference is parsed once: ``M-deploy`` and ``M --deploy`` are the same model."""

from __future__ import annotations

import json

import pytest

import scaling_lab as sl
from scaling_lab.cli import main
from scaling_lab.models import ModelRef, model_ref


def _profile_json(capsys, *argv: str) -> dict:
    assert main(["profile", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("name", sl.list_models())
def test_suffix_and_flag_give_the_same_deploy_profile(capsys, name):
    by_suffix = _profile_json(capsys, f"{name}-deploy")
    by_flag = _profile_json(capsys, name, "--deploy")
    assert by_suffix == by_flag
    assert by_flag["form"] == "deploy" and by_flag["model"] == f"{name}-deploy"
    training = _profile_json(capsys, name)
    assert training["form"] == "training" and training["params"] >= by_flag["params"]


def test_deploy_drops_aux_heads_and_fuses():
    """yolov7-w6-deploy used to lose its form after the first conversion (aux heads dropped,
    ops left unfused: 70.430M, neither figure of the model)."""
    deploy, fused, training = (sl.profile(f"yolov7-w6{s}") for s in ("-deploy", "-fused", ""))
    assert (deploy.form, fused.form, training.form) == ("deploy", "fused", "training")
    assert round(deploy.params_m, 1) == 70.4  # the paper's YOLOv7-W6
    assert deploy.params < fused.params < training.params


def test_model_ref_parses_suffixes_only_on_zoo_names(tmp_path):
    assert model_ref("yolov7-deploy") == ModelRef("yolov7", "deploy")
    assert model_ref("yolov7", deploy=True) == ModelRef("yolov7", "deploy")
    assert model_ref("yolov7-fused") == ModelRef("yolov7", "fused")
    assert model_ref("my-deploy.yaml") == ModelRef("my-deploy.yaml", "training")
    ref = model_ref("yolov7-deploy")
    assert model_ref(ref) == ref and model_ref(ref, deploy=True) == ref


def test_a_contradicting_form_and_an_unknown_form_are_refused():
    with pytest.raises(sl.UserError, match="names the fused form but the deploy form"):
        model_ref("yolov7-fused", deploy=True)
    with pytest.raises(sl.UserError, match="unknown model form 'int8'"):
        model_ref("yolov7", form="int8")


def test_fuse_check_refuses_a_deploy_name_in_one_line(capsys):
    assert main(["fuse-check", "yolov7-tiny-deploy"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "without the -deploy suffix" in err
