"""``assign="reference"`` against the reference implementation's recorded output.

The fixtures (``tests/fixtures/reference_assign/*.npz``, written by
``tools/record_reference_assignment.py`` from WongKinYiu/yolov7's ``ComputeLossOTA`` and
``ComputeLossAuxOTA``) hold seeded inputs, the reference's positives (level, image, anchor,
cell, target, with repeats) and its loss. Here the same inputs go through ``YoloV7Loss``.
"""

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from scaling_lab import ops
from scaling_lab.ops.modules import Detect
from scaling_lab.train.assign import FINE, AssignRule
from scaling_lab.train.assign_reference import assign_reference
from scaling_lab.train.loss import YoloV7Loss

FIXTURES = Path(__file__).parents[1] / "fixtures" / "reference_assign"
BOXES = (1, 6, 30)
CASES = [f"p5_lead_{n}" for n in BOXES] + [f"p6_aux_{n}" for n in BOXES] + ["edges_p5", "edges_p6"]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _load(name: str) -> dict:
    with np.load(FIXTURES / f"{name}.npz") as data:
        return {k: data[k] for k in data.files}


def _setup(data: dict) -> tuple[YoloV7Loss, list[torch.Tensor], torch.Tensor, torch.Tensor]:
    strides, anchors = data["strides"].tolist(), data["anchors"]
    n_levels = len(strides)
    aux = "aux_0" in data
    op = ops.Detect(
        nc=int(data["nc"]),
        anchors=tuple(tuple(a.reshape(-1).tolist()) for a in anchors),
        strides=tuple(int(s) for s in strides),
        c_ins=(4,) * n_levels,
        aux_c_ins=(4,) * n_levels if aux else (),
        implicit=False,
    )
    hyp = {k[4:]: float(v) for k, v in data.items() if k.startswith("hyp_")}
    loss_fn = YoloV7Loss(Detect(op), hyp, assign="reference")
    heads = ("lead", "aux") if aux else ("lead",)
    maps = [torch.from_numpy(data[f"{h}_{i}"]).float() for h in heads for i in range(n_levels)]
    targets = torch.from_numpy(data["targets"])
    img = int(data["img_size"])
    images = torch.zeros(maps[0].shape[0], 3, img, img)
    return loss_fn, maps, targets, images


def _rows(labels) -> list[tuple[int, ...]]:
    cols = (labels.level, labels.image, labels.anchor, labels.gj, labels.gi, labels.target)
    return list(zip(*(c.tolist() for c in cols)))


@pytest.mark.parametrize("name", CASES)
def test_same_positives_as_the_reference(name):
    data = _load(name)
    loss_fn, maps, targets, images = _setup(data)
    lead, aux = loss_fn._split(maps)
    labels = loss_fn.assign_labels(lead, aux, targets, images)
    expected = {"lead": data["pos_lead"]}
    if aux:
        expected["aux"] = data["pos_aux"]
    assert set(labels) == set(expected)
    for head, rows in expected.items():
        ours = _rows(labels[head])
        reference = [tuple(r) for r in rows.tolist()]
        assert Counter(ours) == Counter(reference), head  # the same multiset, repeats included
        assert ours == reference, head  # and in the reference's order


@pytest.mark.parametrize("name", CASES)
def test_same_loss_as_the_reference(name):
    data = _load(name)
    loss_fn, maps, targets, images = _setup(data)
    loss, items = loss_fn(maps, targets, images)
    expected = torch.from_numpy(data["loss_items"])
    assert torch.allclose(items, expected, rtol=1e-6, atol=0)
    assert loss.item() == pytest.approx(float(data["loss"]), rel=1e-6)


def test_fixtures_cover_the_cases():
    """The fixtures exercise what the reference rule is about: a prediction positive twice
    (copies), pooled candidates (a target matched outside its own prior), an image without
    boxes, boxes on the image border, a target with one positive (dynamic k 1)."""
    big = _load("p5_lead_30")
    rows = [tuple(r) for r in big["pos_lead"].tolist()]
    assert max(Counter(rows).values()) > 1  # the same (prediction, target) twice
    predictions = Counter(r[:5] for r in set(rows))
    assert max(predictions.values()) > 1  # one prediction, two targets
    assert sum(len(_load(f"p5_lead_{n}")["targets"]) for n in BOXES) == 2 * sum(BOXES)

    for name in ("edges_p5", "edges_p6"):
        edges = _load(name)
        targets, pos = edges["targets"], edges["pos_lead"]
        assert not (targets[:, 0] == 1).any() and not (pos[:, 1] == 1).any()  # empty image
        assert ((targets[:, 2] == 0.0) | (targets[:, 2] == 1.0)).any()  # centre on the border
        per_target = Counter(pos[:, 5].tolist())
        tiny = int(np.flatnonzero(targets[:, 4] == 0.04)[0])
        assert per_target[tiny] == 1
        # the box too small for any anchor has an empty prior, yet a positive (pooling)
        speck = int(np.flatnonzero(targets[:, 4] == 0.01)[0])
        assert per_target[speck] >= 1


def test_dynamic_k_one_for_a_tiny_box():
    """A 5-pixel box: the sum of its best IoUs is below 2, so it takes exactly one
    candidate, the cheapest by the reference's cost."""
    data = _load("edges_p5")
    loss_fn, maps, targets, images = _setup(data)
    tiny = int(np.flatnonzero(data["targets"][:, 4] == 0.04)[0])
    labels = loss_fn.assign_labels(maps, [], targets[tiny : tiny + 1], images)
    assert len(labels["lead"]) == 1


def test_no_targets_and_unknown_images():
    """No boxes at all (the reference's loss fails on CPU there: it makes empty tensors on
    cuda:0): no positives, objectness loss only. Targets of images beyond the batch are
    ignored, as the reference's loop over the batch does."""
    data = _load("p5_lead_1")
    loss_fn, maps, targets, images = _setup(data)
    _, items = loss_fn(maps, torch.zeros(0, 6), images)
    assert items[0].item() == 0 and items[2].item() == 0 and items[1].item() > 0
    beyond = targets.clone()
    beyond[:, 0] += maps[0].shape[0]
    labels = loss_fn.assign_labels(maps, [], beyond, images)
    assert len(labels["lead"]) == 0


def test_copies_of_the_centre_cell():
    """A centre exactly on a cell border (gx = 4.0): the reference's 3-cell test takes the
    left neighbour (gx % 1 < 0.5) and the right one ((W - gx) % 1 < 0.5), and the right one is
    int(4.0 + 0.5) = 4, the centre cell again. The centre cell predicts the target exactly
    (IoU 1, twice): k = int(1 + 1 + 0.71) = 2 takes both copies."""
    maps = [torch.zeros(1, 1, 8, 8, 7)]
    maps[0][0, 0, 2, 4, 0] = math.log(0.25 / 0.75)  # x = (2 * 0.25 - 0.5 + 4) * 8 = 32
    target = torch.tensor([[0, 0, 32 / 64, 20 / 64, 24 / 64, 24 / 64]])
    labels = assign_reference(
        maps, target, (64, 64), torch.tensor([8.0]), torch.tensor([[[24.0, 24.0]]]), 4.0, FINE
    )
    # candidates: the centre (gj 2, gi 4) twice and the left cell; gy = 2.5 is not in the
    # upper half, and (8 - 2.5) % 1 = 0.5 is not < 0.5, so neither up nor down
    assert Counter(zip(labels.gj.tolist(), labels.gi.tolist())) == {(2, 4): 2}
    assert labels.target.tolist() == [0, 0]


def test_reference_mode_options():
    data = _load("p6_aux_6")
    _, maps, targets, images = _setup(data)
    head = _setup(data)[0].detect
    hyp = {k[4:]: float(v) for k, v in data.items() if k.startswith("hyp_")}
    lead, aux = maps[:4], maps[4:]
    guided = YoloV7Loss(head, hyp, assign="reference", aux_assigner="lead_guided")
    labels = guided.assign_labels(lead, aux, targets, images)
    assert _rows(labels["aux"]) == _rows(labels["lead"])
    independent = YoloV7Loss(head, hyp, assign="reference", aux_assigner="independent")
    labels = independent.assign_labels(lead, aux, targets, images)
    own = assign_reference(
        aux, targets, (192, 192), head.stride, head.anchors, 4.0, AssignRule(3, 20)
    )
    assert _rows(labels["aux"]) == _rows(own)
    # no auxiliary weight: the lead head gets ComputeLossOTA's labels (top 10 IoUs)
    plain = YoloV7Loss(head, hyp, assign="reference", aux_weight=0.0)
    lead_only = plain.assign_labels(lead, aux, targets, images)["lead"]
    expected = assign_reference(lead, targets, (192, 192), head.stride, head.anchors, 4.0, FINE)
    assert _rows(lead_only) == _rows(expected)
    # the explicit upper bound is a rule of the own-prior mode only
    capped = YoloV7Loss(head, hyp, assign="reference", aux_constraint=True)
    free = YoloV7Loss(head, hyp, assign="reference", aux_constraint=False)
    assert torch.equal(capped(maps, targets, images)[1], free(maps, targets, images)[1])
    with pytest.raises(ValueError, match="assign"):
        YoloV7Loss(head, hyp, assign="nope")


def test_selected_from_the_cli_and_the_config():
    from scaling_lab.cli.app import make_parser
    from scaling_lab.cli.train_commands import _train_config
    from scaling_lab.train.config import TrainConfig
    from scaling_lab.train.recipe import default_assign

    argv = ["train", "--model", "yolov7-tiny", "--data", "synth", "--out", "runs/x"]
    parser = make_parser()
    assert _train_config(parser.parse_args([*argv, "--assign", "reference"])).assign == "reference"
    # unnamed: the recipe's rule (the reference's under the default recipe)
    cfg = _train_config(parser.parse_args(argv))
    assert cfg.assign is None and default_assign(cfg.recipe) == "reference"
    ours = _train_config(parser.parse_args([*argv, "--recipe", "ours"]))
    assert ours.assign is None and default_assign(ours.recipe) == "own_prior"
    # an old checkpoint's config (no such keys) resumes with the rule and order it had
    old = TrainConfig.from_dict({"model": "m", "data": "synth"})
    assert old.assign == "own_prior" and old.recipe == "ours"
    with pytest.raises(ValueError, match="own_prior"):
        TrainConfig(model="m", data="synth", assign="nope")
