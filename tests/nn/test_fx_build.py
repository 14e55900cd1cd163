"""The built module: generated forward, outputs per mode, and E-ELAN equivalence."""

import torch
from torch import nn

from scaling_lab import create_model, get_layer_graph
from tests.helpers.specs import graph_from


def test_forward_is_generated_straight_line_code(tiny_graph):
    model = create_model(tiny_graph)
    code = model.code
    assert "torch.cat" in code and "for " not in code and "while " not in code
    # one call per layer: no graph interpretation at run time
    assert code.count("self.") >= len(get_layer_graph(tiny_graph)) - 6


def test_training_outputs_raw_levels_and_eval_decodes(tiny_graph):
    model = create_model(tiny_graph)
    x = torch.rand(2, 3, 64, 64)
    raw = model.train()(x)
    assert [tuple(t.shape) for t in raw] == [(2, 3, 16, 16, 8), (2, 3, 8, 8, 8)]
    with torch.no_grad():
        boxes = model.eval()(x)
    assert boxes.shape == (2, 3 * (16 * 16 + 8 * 8), 8)
    assert boxes[..., 4:].min() >= 0 and boxes[..., 4:].max() <= 1
    # centers lie within (-0.5, 1.5) cells of their grid cell: inside a widened image
    assert boxes[..., :2].min() > -0.5 * 8 and boxes[..., :2].max() < 64 + 0.5 * 8


def test_decode_matches_hand_computation():
    text = (
        "img_size: 32\nnc: 1\nanchors: [[8, 16]]\nnodes:\n"
        "  a: {type: conv, c: 4, k: 3, s: 2}\n  d: {type: detect, from: [a], implicit: false}\n"
    )
    model = create_model(graph_from(text)).eval()
    head = model.d
    with torch.no_grad():
        for p in head.parameters():
            p.zero_()
        head.m[0].bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, 2.0, -1.0]))
        out = model(torch.rand(1, 3, 32, 32))
    # sigmoid(0) = 0.5: xy = (0.5*2 - 0.5 + cell) * stride; wh = (0.5*2)^2 * anchor
    cell_x, cell_y = 3, 5
    row = out[0, cell_y * 16 + cell_x]
    assert torch.allclose(row[:4], torch.tensor([(0.5 + cell_x) * 2, (0.5 + cell_y) * 2, 8, 16]))
    assert torch.isclose(row[4], torch.sigmoid(torch.tensor(2.0)))
    assert torch.isclose(row[5], torch.sigmoid(torch.tensor(-1.0)))


def test_aux_head_outputs_in_training_only():
    model = create_model("yolov7-w6", img_size=128)  # the smallest size stride 64 allows
    raw = model.train()(torch.rand(1, 3, 128, 128))
    assert len(raw) == 8 and raw[0].shape == raw[4].shape == (1, 3, 16, 16, 85)
    with torch.no_grad():
        assert model.eval()(torch.rand(1, 3, 128, 128)).shape == (
            1,
            3 * (16**2 + 8**2 + 4**2 + 2**2),
            85,
        )


ELAN_PAIR = """\
img_size: 32
nodes:
  stem: {type: conv, c: 8, k: 3, s: 2}
  left: {type: elan, c_hidden: 4, c_chain: 2, depth: 3, tap_every: 1, c_out: 6}
  right: {type: elan, from: stem, c_hidden: 4, c_chain: 2, depth: 3, tap_every: 1, c_out: 6}
  out: {type: add, from: [left, right]}
"""
EELAN = """\
img_size: 32
nodes:
  stem: {type: conv, c: 8, k: 3, s: 2}
  out: {type: eelan, c_hidden: 4, c_chain: 2, depth: 3, tap_every: 1, c_out: 6}
"""


def _copy_pair_into_grouped(pair: nn.Module, grouped: nn.Module) -> None:
    """Stack the two ELANs' weights into the E-ELAN's expanded (grouped) convs."""
    src = dict(pair.named_modules())
    with torch.no_grad():
        grouped.stem.load_state_dict(pair.stem.state_dict())
        for i in range(1, 7):  # 2 entries, 3 chain convs, transition (cv6)
            dst = getattr(grouped.out, f"cv{i}")
            a, b = src[f"left.cv{i}"], src[f"right.cv{i}"]
            for name, tensor in dst.state_dict().items():
                parts = [dict(a.state_dict())[name], dict(b.state_dict())[name]]
                if name.endswith("num_batches_tracked"):
                    tensor.copy_(parts[0])
                else:
                    tensor.copy_(torch.cat(parts, 0))


def test_eelan_equals_two_parallel_elans_added():
    pair = create_model(graph_from(ELAN_PAIR)).eval()
    grouped = create_model(graph_from(EELAN)).eval()
    n_pair = sum(p.numel() for p in pair.parameters())
    assert n_pair == sum(p.numel() for p in grouped.parameters())
    for m in pair.modules():  # non-trivial BN statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    _copy_pair_into_grouped(pair, grouped)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(grouped(x), pair(x), atol=1e-5, rtol=1e-5)
