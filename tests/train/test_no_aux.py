"""Training without the auxiliary head (``TrainConfig.aux_head = False``, ``lab train
--no-aux-head``; the base rows of Tables 6-8): the head and every node only it reads leave the
training graph, so model, optimizer, checkpoint and loss have no auxiliary part."""

from __future__ import annotations

import pytest
import torch

from scaling_lab.cli import main as lab_main
from scaling_lab.models import create_model, get_block_graph
from scaling_lab.train.backends import Backends
from scaling_lab.train.checkpoint import load_checkpoint
from scaling_lab.train.evaluation import model_from_checkpoint
from scaling_lab.train.loss import YoloV7Loss
from scaling_lab.train.recipe_fit import detect_head
from scaling_lab.train.trainer import Trainer, train
from scaling_lab.transforms.deploy import drop_aux_heads
from tests.helpers import train_fakes
from tests.helpers.specs import graph_from

# aux_detect with a partial auxiliary conv: `side` is read only through a port by aux4
AUX_SPEC = """\
name: tiny-aux-ports
nc: 3
img_size: 64
anchors:
  - [10, 13, 16, 30, 33, 23]
  - [30, 61, 62, 45, 59, 119]
nodes:
  stem: {type: conv, c: 16, k: 3, s: 2}
  down1: {type: mp_down, c: 32}
  elan1: {type: eelan, c_hidden: 8, c_chain: 8, depth: 2, tap_every: 1, c_out: 32}
  down2: {type: mp_down, c: 64}
  elan2: {type: elan, c_hidden: 16, c_out: 64}
  side: {type: eelan, from: down2, c_hidden: 8, depth: 2, c_out: 32}
  up: {type: upsample, from: elan2}
  cat: {type: concat, from: [up, elan1]}
  fuse: {type: conv, c: 32}
  lead3: {type: conv, c: 32, k: 3}
  lead4: {type: conv, from: elan2, c: 64, k: 3}
  aux3: {type: conv, from: elan1.group0, c: 24, k: 3}
  aux4: {type: conv, from: side.group1, c: 48, k: 3}
  head: {type: aux_detect, from: [lead3, lead4, aux3, aux4]}
"""
AUX_NODES = ("aux3", "aux4", "side")


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def spec_path(tmp_path):
    path = tmp_path / "tiny_aux.yaml"
    path.write_text(AUX_SPEC)
    return path


def _real_loss_backends() -> Backends:
    backends = train_fakes.fake_backends()
    backends.criterion = None  # the real YoloV7Loss
    backends.default_hyp = None  # the real recipe (the loss needs all its gains)
    return backends


def _setup(spec_path, tmp_path, **kw) -> Trainer:
    cfg = train_fakes.fake_config(spec_path, tmp_path / "run", img_size=64, epochs=1, **kw)
    trainer = Trainer(cfg, backends=_real_loss_backends())
    trainer._setup()
    return trainer


def _ids(params) -> set[int]:
    return {id(p) for p in params}


def test_no_aux_head_model_optimizer_and_loss_have_no_auxiliary_part(spec_path, tmp_path):
    with_aux = _setup(spec_path, tmp_path / "a")
    without = _setup(spec_path, tmp_path / "b", aux_head=False)
    assert with_aux.criterion.has_aux and not without.criterion.has_aux
    assert len(detect_head(without.model).aux) == 0 < len(detect_head(with_aux.model).aux)
    names_with = {n for n, _ in with_aux.model.named_parameters()}
    names_without = {n for n, _ in without.model.named_parameters()}
    dropped = {n.split(".")[0] for n in names_with - names_without}
    assert {"aux3", "aux4", "side"} <= dropped and dropped <= {*AUX_NODES, "head"}
    assert not any(n.split(".")[0] in AUX_NODES for n in names_without)
    optimized = _ids(p for group in without.optimizer.param_groups for p in group["params"])
    assert optimized == _ids(without.model.parameters())
    # the spec the run stores (checkpoints, resume) is the lead-only graph
    assert "aux_detect" not in without.spec_text and "side:" not in without.spec_text
    assert "aux_detect" in with_aux.spec_text


def test_lead_only_loss_equals_the_aux_models_loss_at_aux_weight_zero(tmp_path):
    """No auxiliary term: the dropped model's loss is the lead head's loss alone."""
    full = create_model(graph_from(AUX_SPEC)).train()
    lead = create_model(drop_aux_heads(graph_from(AUX_SPEC))).train()
    lead.load_state_dict({k: v for k, v in full.state_dict().items() if k in lead.state_dict()})
    hyp = {"box": 0.05, "obj": 0.7, "cls": 0.3, "cls_pw": 1.0, "obj_pw": 1.0, "anchor_t": 4.0}
    hyp["fl_gamma"] = 0.0
    torch.manual_seed(0)
    images = torch.rand(2, 3, 64, 64)
    targets = torch.tensor([[0, 0, 0.3, 0.35, 0.25, 0.4], [1, 2, 0.7, 0.6, 0.5, 0.3]])
    out_full, out_lead = full(images), lead(images)
    assert len(out_full) == 4 and len(out_lead) == 2
    for a, b in zip(out_full[:2], out_lead, strict=True):
        torch.testing.assert_close(a, b)
    zero = YoloV7Loss(full, hyp, aux_weight=0.0, assign="own_prior")(out_full, targets, images)
    weighted = YoloV7Loss(full, hyp, aux_weight=0.25, assign="own_prior")(out_full, targets, images)
    alone = YoloV7Loss(lead, hyp, aux_weight=0.25, assign="own_prior")(out_lead, targets, images)
    torch.testing.assert_close(alone[0], zero[0])
    assert not torch.allclose(alone[0], weighted[0])


def test_training_without_aux_head_runs_and_its_checkpoint_rebuilds_lead_only(spec_path, tmp_path):
    out = tmp_path / "run"
    cfg = train_fakes.fake_config(spec_path, out, img_size=64, epochs=1, aux_head=False)
    train(cfg, backends=_real_loss_backends())
    ckpt = load_checkpoint(out)
    assert ckpt["config"]["aux_head"] is False
    model = model_from_checkpoint(ckpt)
    assert not detect_head(model).aux
    assert not any(n.split(".")[0] in AUX_NODES for n, _ in model.named_parameters())


def test_cli_no_aux_head_flag(spec_path, tmp_path, monkeypatch):
    seen = {}

    def fake_train(cfg, **kw):
        seen["cfg"] = cfg
        return {}

    monkeypatch.setattr("scaling_lab.train.trainer.train", fake_train)
    args = ["train", "--model", str(spec_path), "--data", "fake", "--out", str(tmp_path / "r")]
    assert lab_main([*args, "--no-aux-head"]) == 0
    assert seen["cfg"].aux_head is False
    assert lab_main(args) == 0
    assert seen["cfg"].aux_head is True


def test_zoo_aux_model_graph_without_aux_head_is_the_deploy_architecture():
    graph = get_block_graph("yolov7-e6e")
    lead_only = drop_aux_heads(graph)
    assert not any(n.name.startswith("aux") for n in lead_only.nodes)
    assert lead_only.port_reads() == {}
