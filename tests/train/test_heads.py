"""Head families: which family trains each zoo model, the registry's rules, and the anchor-free
decoders on hand-made raw outputs (numbers worked out by hand, not by the decoder)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from scaling_lab import list_models
from scaling_lab.errors import UserError
from scaling_lab.models import create_model, get_block_graph, get_layer_graph
from scaling_lab.train.heads import (
    HeadFamily,
    families,
    head_family,
    prediction_convs,
    register_head,
    with_decode,
)
from scaling_lab.train.heads.ppyoloe import reg_max_of
from scaling_lab.transforms.scale import scale

SIZE, NC = 64, 3


def small(name: str) -> torch.nn.Module:
    graph = get_block_graph(name, nc=NC, img_size=SIZE)
    return create_model(scale(graph, width=0.125, mode="width")).eval()


def test_every_zoo_model_has_its_family() -> None:
    for name in list_models():
        graph = get_layer_graph(name, nc=NC, img_size=SIZE)  # what the family is read from
        family = head_family(SimpleNamespace(layer_graph=graph))
        expected = name.split("-")[0] if name.startswith(("yolox", "ppyoloe")) else "yolov7"
        assert family.name == expected, name


def test_a_block_type_has_one_family_and_unknown_heads_are_refused() -> None:
    existing = families()["yolox_head"]
    with pytest.raises(ValueError, match="'yolox_head' already has a head family"):
        register_head(HeadFamily(name="again", block_types=("yolox_head",), loss=object))
    model = small("yolox-s")
    model.layer_graph.meta["head"] = "no_such_head"
    with pytest.raises(UserError, match="no loss for head block 'no_such_head'"):
        head_family(model)
    assert families()["yolox_head"] is existing


def test_yolov7_decodes_itself() -> None:
    model = small("yolov7-tiny")
    assert with_decode(model) is model


def test_yolox_decode_by_hand() -> None:
    model = small("yolox-s")
    n_cells = 8 * 8 + 4 * 4 + 2 * 2
    raw = torch.zeros(1, n_cells, 5 + NC)
    raw[0, 9, :4] = torch.tensor([0.25, -0.5, math.log(2.0), 0.0])  # level 0 (stride 8), x1 y1
    raw[0, 64 + 3, 4] = 2.0  # level 1 (stride 16), cell x3 y0
    out = with_decode(model)._decode(model, raw, (SIZE, SIZE))
    assert out[0, 9, :4].tolist() == pytest.approx([(1 + 0.25) * 8, (1 - 0.5) * 8, 16.0, 8.0])
    assert out[0, 67, :4].tolist() == pytest.approx([3 * 16, 0.0, 16.0, 16.0])
    assert float(out[0, 67, 4]) == pytest.approx(1 / (1 + math.exp(-2.0)))
    assert out[0, 0, 5:].tolist() == pytest.approx([0.5] * NC)


def test_ppyoloe_decode_by_hand() -> None:
    model = small("ppyoloe-s")
    reg_max = reg_max_of(model)
    assert reg_max == 16
    n_cells = 2 * 2 + 4 * 4 + 8 * 8  # levels as the spec lists them: stride 32 first
    raw = torch.zeros(1, n_cells, 4 * (reg_max + 1) + NC)
    bins = raw[0, 5, : 4 * (reg_max + 1)].view(4, reg_max + 1)  # level 1 (stride 16), x1 y0
    for side, distance in enumerate((1, 2, 3, 4)):
        bins[side, distance] = 60.0  # all the mass on one bin: the integral is that bin
    raw[0, 5, -NC:] = torch.tensor([0.0, 3.0, -3.0])
    out = with_decode(model)._decode(model, raw, (SIZE, SIZE))
    centre = torch.tensor([1.5, 0.5])  # cell centre, in strides
    x1, y1 = centre - torch.tensor([1.0, 2.0])
    x2, y2 = centre + torch.tensor([3.0, 4.0])
    expected = [(x1 + x2) / 2 * 16, (y1 + y2) / 2 * 16, (x2 - x1) * 16, (y2 - y1) * 16]
    assert out[0, 5, :4].tolist() == pytest.approx([float(v) for v in expected], abs=1e-4)
    assert float(out[0, 5, 4]) == 1.0  # no objectness: the NMS scores by the class alone
    probs = [0.5, 1 / (1 + math.exp(-3.0)), 1 / (1 + math.exp(3.0))]
    assert out[0, 5, 5:].tolist() == pytest.approx(probs)
    assert out[0, 0, 2:4].tolist() == pytest.approx([reg_max * 32.0] * 2)  # uniform bins: 8+8


def test_fresh_heads_start_as_the_public_code() -> None:
    """YOLOX: class and objectness biases at logit(0.01); PP-YOLOE: zero prediction weights,
    class biases logit(0.01), distance biases 1 (so every cell starts at probability 0.01)."""
    prior = math.log(0.01 / 0.99)
    yolox = small("yolox-s")
    head_family(yolox).init(yolox)
    convs = prediction_convs(yolox)
    assert [c.out_channels for c in convs] == [NC, 4, 1] * 3
    for cls, box, obj in zip(convs[::3], convs[1::3], convs[2::3]):
        assert cls.bias.tolist() == pytest.approx([prior] * NC)
        assert obj.bias.tolist() == pytest.approx([prior])
        assert box.bias.abs().max() < 1  # left as built
    ppyoloe = small("ppyoloe-s")
    head_family(ppyoloe).init(ppyoloe)
    convs = prediction_convs(ppyoloe)
    assert [c.out_channels for c in convs] == [NC, 68] * 3
    assert all(float(c.weight.detach().abs().max()) == 0 for c in convs)
    assert convs[0].bias.tolist() == pytest.approx([prior] * NC)
    assert set(convs[1].bias.tolist()) == {1.0}
    with torch.inference_mode():
        out = with_decode(ppyoloe)(torch.rand(1, 3, SIZE, SIZE))
    assert out[..., 5:].flatten().tolist() == pytest.approx([0.01] * out[..., 5:].numel())


def test_the_wrapper_follows_the_wrapped_models_mode() -> None:
    """``evaluate_model`` puts the model in eval mode, then wraps it: the wrapper decodes."""
    model = small("ppyoloe-s")  # eval mode
    decoded = with_decode(model)
    x = torch.rand(1, 3, SIZE, SIZE)
    with torch.inference_mode():
        assert decoded(x).shape == (1, 84, 5 + NC)
    model.train()
    assert [m.shape[1] for m in decoded(x)] == [4 * 17 + NC] * 3  # training: the level maps
