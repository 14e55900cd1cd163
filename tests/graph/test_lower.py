"""Lowering: inferred shapes equal traced shapes; shape errors name the node and field."""

import pytest
import torch

from scaling_lab import create_model, get_layer_graph, lower, ops
from scaling_lab.spec import SpecError
from tests.helpers.specs import graph_from

HEAD = "img_size: 64\nnodes:\n"


def test_inferred_shapes_equal_traced_shapes(tiny_graph):
    layers = lower(tiny_graph)
    model = create_model(tiny_graph).eval()
    seen = {}
    for name, module in model.named_modules():
        if name in {layer.name for layer in layers} and not isinstance(module, torch.nn.Identity):
            module.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o))
    with torch.no_grad():
        model(torch.zeros(1, 3, 64, 64))
    checked = 0
    for layer in layers:
        if layer.name in seen and not isinstance(layer.op, ops.Detect):
            assert tuple(seen[layer.name].shape[1:]) == (
                layer.shape.c,
                layer.shape.h,
                layer.shape.w,
            )
            checked += 1
    assert checked >= 15


def test_strides(tiny_graph):
    layers = lower(tiny_graph)
    assert layers["stem"].shape.stride == 2
    assert layers["elan2.merge1"].shape.stride == 8
    assert layers["head"].op.strides == (4, 8)


def test_channel_mismatch_at_add():
    text = HEAD + (
        "  a: {type: conv, c: 8}\n  b: {type: conv, c: 16}\n  s: {type: add, from: [a, b]}\n"
    )
    with pytest.raises(
        SpecError,
        match=r"test.yaml:5: node 's': field 'from': add needs equal "
        r"channels, got 8 \('a'\) and 16 \('b'\)",
    ):
        lower(graph_from(text))


def test_spatial_mismatch_at_concat():
    text = HEAD + (
        "  a: {type: conv, c: 8}\n  b: {type: conv, c: 8, k: 3, s: 2}\n"
        "  j: {type: concat, from: [a, b]}\n"
    )
    with pytest.raises(
        SpecError,
        match=r"node 'j': field 'from': concat needs equal spatial "
        r"sizes, got 64x64 \('a'\) and 32x32 \('b'\)",
    ):
        lower(graph_from(text))


def test_input_size_not_divisible_by_max_stride(tiny_graph):
    with pytest.raises(
        SpecError,
        match="field 'img_size': input size 70 is not divisible by "
        r"the model's max stride 8 \(try 72\)",
    ):
        lower(tiny_graph.with_settings(img_size=70))


def test_zoo_input_size_check():
    with pytest.raises(SpecError, match="max stride 64"):
        get_layer_graph("yolov7-w6", img_size=640 + 32)
    assert get_layer_graph("yolov7-w6", img_size=640).input_shape.h == 640


def test_groups_must_divide_channels():
    text = HEAD + "  a: {type: conv, c: 6}\n  b: {type: conv, c: 8, groups: 4}\n"
    with pytest.raises(
        SpecError, match="node 'b': field 'groups': groups=4 must divide input channels 6"
    ):
        lower(graph_from(text))


def test_unknown_activation():
    text = HEAD + "  a: {type: conv, c: 8, act: gelu2}\n  b: {type: conv, c: 8}\n"
    with pytest.raises(SpecError, match="node 'a': field 'act': unknown activation 'gelu2'"):
        lower(graph_from(text))


def test_detect_needs_one_anchor_level_per_input():
    text = (
        "img_size: 64\nanchors: [[10, 13, 16, 30]]\nnodes:\n"
        "  a: {type: conv, c: 8}\n  b: {type: conv, c: 8, s: 2}\n"
        "  d: {type: detect, from: [a, b]}\n"
    )
    with pytest.raises(SpecError, match="node 'd': field 'from': 2 detection inputs but 1 anchor"):
        lower(graph_from(text))


def test_elan_taps_follow_the_reference_pattern():
    text = HEAD + (
        "  a: {type: conv, c: 8}\n"
        "  e: {type: elan, c_hidden: 4, depth: 6, c_out: 8}\n"
        "  n: {type: elan, from: a, c_hidden: 4, c_chain: 2, tap_every: 1, c_out: 8}\n"
    )
    layers = lower(graph_from(text))
    # backbone pattern: entries + every 2nd chain output, newest first
    assert layers["e.cat1"].inputs == ("e.cv8", "e.cv6", "e.cv4", "e.cv2", "e.cv1")
    assert layers["e.cat1"].shape.c == 5 * 4
    # neck pattern: all chain outputs, chain at half width
    assert layers["n.cat1"].inputs == ("n.cv6", "n.cv5", "n.cv4", "n.cv3", "n.cv2", "n.cv1")
    assert layers["n.cat1"].shape.c == 2 * 4 + 4 * 2
