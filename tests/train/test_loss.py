"""YoloV7Loss: values against hand computations, the auxiliary-head assigners and the
constraint, gradients for every output, and a short fit of a tiny model."""

import math

import pytest
import torch

from scaling_lab import create_model, ops
from scaling_lab.ops.modules import Detect
from scaling_lab.train.loss import (
    ASSIGN_MODES,
    AUX_ASSIGNERS,
    YoloV7Loss,
    coarse_upper_bound,
    objectness_balance,
)
from tests.helpers.specs import TINY_SPEC, graph_from

HYP = {
    "box": 0.05,
    "obj": 0.7,
    "cls": 0.3,
    "cls_pw": 1.0,
    "obj_pw": 1.0,
    "anchor_t": 4.0,
    "fl_gamma": 0.0,
}

TINY_AUX_SPEC = """\
name: tiny-aux
nc: 3
img_size: 64
anchors:
  - [10, 13, 16, 30, 33, 23]
  - [30, 61, 62, 45, 59, 119]
nodes:
  stem: {type: conv, c: 16, k: 3, s: 2}
  down1: {type: mp_down, c: 32}
  elan1: {type: elan, c_hidden: 16, c_out: 32}
  down2: {type: mp_down, c: 64}
  elan2: {type: elan, c_hidden: 16, c_out: 64}
  up: {type: upsample}
  cat: {type: concat, from: [up, elan1]}
  fuse: {type: conv, c: 32}
  lead3: {type: conv, c: 32, k: 3}
  lead4: {type: conv, from: elan2, c: 64, k: 3}
  aux3: {type: conv, from: elan1, c: 24, k: 3}
  aux4: {type: conv, from: elan2, c: 48, k: 3}
  head: {type: aux_detect, from: [lead3, lead4, aux3, aux4]}
"""

# targets for a 64 x 64 input: [image, class, cx, cy, w, h], normalized
TARGETS = torch.tensor(
    [
        [0, 0, 0.30, 0.35, 0.25, 0.40],
        [0, 2, 0.70, 0.60, 0.50, 0.30],
        [0, 1, 0.52, 0.20, 0.15, 0.12],
    ]
)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread is faster, and steady when other jobs share the CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _head(nc=2, anchor=16.0, aux=False):
    """A one-level, one-anchor head (stride 8) for hand-built maps."""
    op = ops.Detect(
        nc=nc,
        anchors=((anchor, anchor),),
        strides=(8,),
        c_ins=(4,),
        aux_c_ins=(4,) if aux else (),
        implicit=False,
    )
    return Detect(op)


def _softplus(x):
    return math.log1p(math.exp(x))


def test_loss_by_hand():
    """One target 16 x 16 at grid (2.25, 2.25), class 1 of 2; anchor 16 x 16; objectness
    logits -2, box logits 0, class logits (0.5, 2.0) everywhere. The classification cost is
    the same for every cell, so the positive is the candidate of highest IoU: the centre cell
    (2, 2) alone (IoUs 0.62, 0.38, 0.38: k = 1)."""
    maps = torch.zeros(1, 1, 8, 8, 7)
    maps[..., 4] = -2.0
    maps[..., 5], maps[..., 6] = 0.5, 2.0
    targets = torch.tensor([[0, 1, 18 / 64, 18 / 64, 16 / 64, 16 / 64]])
    images = torch.zeros(1, 3, 64, 64)

    # prediction at cell (2, 2) in grid units relative to the cell: (0.5, 0.5, 2, 2);
    # target (0.25, 0.25, 2, 2); same shape, so CIoU has no aspect term
    iou = 1.75**2 / (8 - 1.75**2)
    ciou = iou - (0.25**2 + 0.25**2) / (2 * 2.25**2)
    box = 1 - ciou
    obj = (64 * _softplus(-2.0) + 2.0 * ciou) / 64  # BCE(x, t) = softplus(x) - t x
    obj *= objectness_balance(1)[0]
    cls = (_softplus(0.5) + _softplus(-2.0)) / 2  # BCE(0.5, 0) and BCE(2.0, 1)
    expected = [0.05 * box, 0.7 * obj, 0.3 * cls]
    expected.append(sum(expected))

    loss_fn = YoloV7Loss(_head(), HYP, assign="own_prior")
    loss, items = loss_fn([maps], targets, images)
    assert items.tolist() == pytest.approx(expected, rel=1e-5)
    assert loss.item() == pytest.approx(expected[3], rel=1e-5)

    tobj = loss_fn.objectness_targets([maps], targets, images)["lead"][0]
    assert tobj.nonzero().tolist() == [[0, 0, 2, 2]]
    assert tobj[0, 0, 2, 2].item() == pytest.approx(ciou, rel=1e-5)

    # label smoothing 0.1: class targets 0.05 and 0.95
    smooth = YoloV7Loss(_head(), {**HYP, "label_smoothing": 0.1}, assign="own_prior")
    cls_smooth = (_softplus(0.5) - 0.05 * 0.5 + _softplus(2.0) - 0.95 * 2.0) / 2
    assert smooth([maps], targets, images)[1][2].item() == pytest.approx(0.3 * cls_smooth, rel=1e-5)

    # the batch: two copies give the same means and twice the returned loss
    loss2, items2 = loss_fn(
        [maps.repeat(2, 1, 1, 1, 1)],
        torch.cat((targets, targets + torch.tensor([1, 0, 0, 0, 0, 0]))),
        images.repeat(2, 1, 1, 1),
    )
    assert items2.tolist() == pytest.approx(items.tolist(), rel=1e-5)
    assert loss2.item() == pytest.approx(2 * loss.item(), rel=1e-5)


def test_single_class_has_no_class_loss():
    maps = torch.zeros(1, 1, 8, 8, 6)
    targets = torch.tensor([[0, 0, 0.3, 0.3, 0.25, 0.25]])
    _, items = YoloV7Loss(_head(nc=1), HYP, assign="own_prior")(
        [maps], targets, torch.zeros(1, 3, 64, 64)
    )
    assert items[2].item() == 0.0 and items[0].item() > 0


def test_rectangular_input_maps_x_to_width():
    maps = torch.zeros(1, 1, 8, 16, 7)  # 64 x 128 input
    targets = torch.tensor([[0, 0, 20 / 128, 20 / 64, 16 / 128, 16 / 64]])  # cell (2, 2)
    loss_fn = YoloV7Loss(_head(), HYP, assign="own_prior")
    tobj = loss_fn.objectness_targets([maps], targets, torch.zeros(1, 3, 64, 128))["lead"][0]
    assert tobj.nonzero().tolist() == [[0, 0, 2, 2]]


def test_aux_weight_with_lead_guided_labels():
    """Auxiliary maps equal to the lead maps and the lead's labels: every term is 1.25 x."""
    torch.manual_seed(0)
    maps = torch.randn(1, 1, 8, 8, 7)
    targets = torch.tensor([[0, 1, 0.3, 0.4, 0.3, 0.25], [0, 0, 0.7, 0.6, 0.2, 0.3]])
    images = torch.zeros(1, 3, 64, 64)
    _, lead_only = YoloV7Loss(_head(aux=True), HYP, assign="own_prior")([maps], targets, images)
    for assigner in ("lead_guided", "independent"):
        loss_fn = YoloV7Loss(_head(aux=True), HYP, aux_assigner=assigner, assign="own_prior")
        _, both = loss_fn([maps, maps.clone()], targets, images)
        assert both.tolist() == pytest.approx((1.25 * lead_only).tolist(), rel=1e-5)
    loss_fn = YoloV7Loss(
        _head(aux=True), HYP, aux_assigner="lead_guided", aux_weight=0.5, assign="own_prior"
    )
    _, both = loss_fn([maps, maps.clone()], targets, images)
    assert both.tolist() == pytest.approx((1.5 * lead_only).tolist(), rel=1e-5)


def test_coarse_upper_bound():
    centre = torch.tensor([[3.3, 5.7]] * 4)
    cells = torch.tensor([[3, 5], [2, 5], [4, 5], [3, 7]]).float()
    # d = 0.2 (own cell), 0.8 (near side), 1.2 (far side), 1.8 (beyond the 5-cell prior)
    assert coarse_upper_bound(centre, cells).tolist() == pytest.approx([1.0, 1.0, 0.8, 0.2])


def _steered_maps():
    """Target 48 x 48 at grid (2.25, 2.25), anchor 48 x 48. The right cell (gi 3) predicts a
    box as close as it can reach (centre x 2.5): IoU 0.85 like the centre cell. Fine prior:
    centre, left, up; coarse prior adds right and down, and the relaxed k (3) takes it."""
    maps = torch.zeros(1, 1, 8, 8, 7)
    maps[0, 0, 2, 3, 0] = -20.0  # x offset -0.5 from the cell: centre x = 2.5
    targets = torch.tensor([[0, 1, 18 / 64, 18 / 64, 48 / 64, 48 / 64]])
    return maps, targets


def test_coarse_labels_and_the_constraint():
    maps, targets = _steered_maps()
    images = torch.zeros(1, 3, 64, 64)
    head = _head(anchor=48.0, aux=True)
    out = {}
    for constraint in (False, True):
        loss_fn = YoloV7Loss(
            head, HYP, aux_assigner="coarse_to_fine", aux_constraint=constraint, assign="own_prior"
        )
        out[constraint] = loss_fn.objectness_targets([maps, maps.clone()], targets, images)
    lead, aux = out[False]["lead"][0][0, 0], out[False]["aux"][0][0, 0]
    fine_cells = set(map(tuple, lead.nonzero().tolist()))
    coarse_cells = set(map(tuple, aux.nonzero().tolist()))
    assert (2, 3) in coarse_cells and (2, 3) not in fine_cells
    assert fine_cells < coarse_cells
    # the right cell is 1.25 cells from the centre: its target is capped at 0.75
    capped = out[True]["aux"][0][0, 0]
    assert aux[2, 3].item() > 0.8
    assert capped[2, 3].item() == pytest.approx(0.75, rel=1e-6)
    # cells within one cell of the centre keep their target; the lead head is never capped
    for cell in fine_cells:
        assert capped[cell].item() == pytest.approx(aux[cell].item())
    assert torch.equal(out[True]["lead"][0], out[False]["lead"][0])


def _tiny(spec):
    torch.manual_seed(0)
    model = create_model(graph_from(spec))
    return model.train()


@pytest.mark.parametrize("mode", ASSIGN_MODES)
@pytest.mark.parametrize("assigner", AUX_ASSIGNERS)
@pytest.mark.parametrize("constraint", [True, False])
def test_gradients_reach_every_output(assigner, constraint, mode):
    model = _tiny(TINY_AUX_SPEC)
    images = torch.rand(2, 3, 64, 64)
    targets = torch.cat((TARGETS, TARGETS[:2] + torch.tensor([1, 0, 0, 0, 0, 0])))
    outputs = model(images)
    assert len(outputs) == 4
    loss_fn = YoloV7Loss(model, HYP, aux_assigner=assigner, aux_constraint=constraint, assign=mode)
    loss, items = loss_fn(outputs, targets, images)
    assert torch.isfinite(loss) and torch.isfinite(items).all()
    assert items[3].item() == pytest.approx(loss.item() / 2, rel=1e-5)
    grads = torch.autograd.grad(loss, outputs)
    for g in grads:
        assert torch.isfinite(g).all() and g.abs().sum() > 0
    # box (channels 0-3) and class (5+) gradients reach positives of every head
    for g in grads:
        assert g[..., :4].abs().sum() > 0 and g[..., 5:].abs().sum() > 0


def test_coarse_positives_superset_on_a_model():
    model = _tiny(TINY_AUX_SPEC)
    images = torch.rand(1, 3, 64, 64)
    outputs = model(images)
    loss_fn = YoloV7Loss(model, HYP, assign="own_prior")
    labels = loss_fn.assign_labels(outputs[:2], outputs[2:], TARGETS, images)
    assert labels["lead"].cells() < labels["aux"].cells()


def test_lead_only_model_and_empty_targets():
    model = _tiny(TINY_SPEC)
    images = torch.rand(2, 3, 64, 64)
    outputs = model(images)
    assert len(outputs) == 2
    loss, items = YoloV7Loss(model, HYP, assign="own_prior")(outputs, TARGETS, images)
    assert torch.isfinite(loss)
    loss.backward()
    loss, items = YoloV7Loss(model, HYP, assign="own_prior")(
        model(images), torch.zeros(0, 6), images
    )
    assert items[0].item() == 0 and items[2].item() == 0 and items[1].item() > 0


def test_bad_arguments():
    model = _tiny(TINY_SPEC)
    with pytest.raises(ValueError, match="aux_assigner"):
        YoloV7Loss(model, HYP, aux_assigner="nope", assign="own_prior")
    with pytest.raises(ValueError, match="assign must be one of"):
        YoloV7Loss(model, HYP, assign="nope")
    with pytest.raises(KeyError, match="anchor_t"):
        YoloV7Loss(model, {k: v for k, v in HYP.items() if k != "anchor_t"}, assign="own_prior")
    with pytest.raises(ValueError, match="Detect"):
        YoloV7Loss(torch.nn.Linear(1, 1), HYP, assign="own_prior")
    loss_fn = YoloV7Loss(model, HYP, assign="own_prior")
    with pytest.raises(ValueError, match="output maps"):
        loss_fn([torch.zeros(1, 3, 8, 8, 8)] * 3, TARGETS, torch.zeros(1, 3, 64, 64))


def test_objectness_balance():
    assert objectness_balance(3) == (4.0, 1.0, 0.4)
    assert objectness_balance(4) == (4.0, 1.0, 0.25, 0.06)
    assert objectness_balance(2) == (4.0, 1.0)


def test_fitting_one_image_lowers_the_loss():
    model = _tiny(TINY_AUX_SPEC)
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    loss_fn = YoloV7Loss(model, HYP, assign="own_prior")
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(30):
        loss, items = loss_fn(model(images), TARGETS, images)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(items)
    first, last = history[0], history[-1]
    assert last[3] < 0.5 * first[3]
    assert last[0] < first[0]  # the boxes fit better, not only the background


@pytest.mark.parametrize("assign_mode", ["reference", "own_prior"])
def test_loss_ota_zero_makes_every_prior_candidate_positive(assign_mode):
    """``loss_ota: 0`` (the reference's YOLOv5-style ComputeLoss): the positives are the centre
    prior's candidates, counted independently with ``reference_candidates`` (repeats kept by
    the reference rule; one per prediction by ``own_prior``); ``loss_ota: 1`` keeps fewer."""
    from scaling_lab.train.assign_reference import reference_candidates

    model = create_model(graph_from(TINY_SPEC))
    images = torch.zeros(1, 3, 64, 64)
    maps = model(images)
    plain = YoloV7Loss(model, {**HYP, "loss_ota": 0}, assign=assign_mode)
    ota = YoloV7Loss(model, {**HYP, "loss_ota": 1}, assign=assign_mode)
    labels = plain.assign_labels(maps, [], TARGETS, images)["lead"]
    head = next(m for m in model.modules() if isinstance(m, Detect))
    grids = [(m.shape[2], m.shape[3]) for m in maps]
    anchors_grid = head.anchors.float() / head.stride.float()[:, None, None]
    t, level, anchor, gj, gi = reference_candidates(TARGETS, grids, anchors_grid, 4.0, 0.5)
    if assign_mode == "reference":
        assert len(labels) == len(t)
    else:
        distinct = {(int(a), int(b), int(c), int(d)) for a, b, c, d in zip(level, anchor, gj, gi)}
        assert len(labels) == len(distinct)
    assert len(ota.assign_labels(maps, [], TARGETS, images)["lead"]) < len(labels)


def test_default_assignment_is_the_default_recipes():
    """The Python API trains the rule ``lab train`` trains when neither names one."""
    from scaling_lab.train.config import TrainConfig
    from scaling_lab.train.recipe import default_assign

    recipe = TrainConfig(model="m", data="synth").recipe
    assert YoloV7Loss(_head(), HYP).assign == default_assign(recipe) == "reference"
    assert YoloV7Loss(_head(), HYP, assign="own_prior").assign == "own_prior"
