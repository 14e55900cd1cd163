"""scale(): Table 3 of the paper, hand-computed widths and depths, rounding, errors, purity."""

from dataclasses import dataclass, field

import pytest

from scaling_lab import (
    build_block_graph,
    count_graph,
    dump_spec,
    get_block_graph,
    get_layer_graph,
    parse_spec,
    register_block,
)
from scaling_lab.graph.registry import unregister_block
from scaling_lab.spec import SpecError
from scaling_lab.transforms.scale import round_channels, round_depth, scale
from tests.helpers.specs import graph_from

# Table 3 (deploy graph, 640 px, 80 classes): (scale() arguments, params_m, gflops)
TABLE3 = {
    "base": (None, 47.0, 125.5),
    "width only": ({"width": 1.25, "mode": "width"}, 73.4, 195.5),
    "depth only": ({"depth": 2.0, "mode": "depth"}, 69.3, 187.6),
    "compound": ({"depth": 1.5, "width": 1.25}, 71.3, 189.9),
}

SMALL = """\
name: small
img_size: 64
nc: 2
anchors: [[10, 13, 16, 30]]
nodes:
  stem: {type: conv, c: 16, k: 3, s: 2}
  elan1: {type: elan, c_hidden: 16, c_out: 32}
  down: {type: mp_down, c: 32}
  elan2: {type: eelan, c_hidden: 16, c_chain: 8, depth: 2, tap_every: 1, c_out: 64}
  spp: {type: sppcspc, c: 32, hidden: 24}
  pool: {type: maxpool, k: 3, s: 1}
  rep: {type: repconv, c: 40}
  head: {type: detect, from: [rep]}
"""


@pytest.fixture(scope="module")
def base():
    return get_block_graph("yolov7x-base")


@pytest.fixture
def small():
    return graph_from(SMALL)


def _cfg(graph, name):
    return graph.node(name).cfg


@pytest.mark.parametrize("row", list(TABLE3))
def test_table3_targets(base, row):
    args, params_m, gflops = TABLE3[row]
    graph = base if args is None else scale(base, **args)
    counted = count_graph(get_layer_graph(graph, deploy=True))
    assert abs(counted.params / 1e6 - params_m) <= 0.05
    assert abs(counted.gflops / gflops - 1) <= 0.005


def test_compound_of_the_base_is_yolov7x(base):
    scaled = scale(base, depth=1.5, width=1.25)
    assert scaled.nodes == get_block_graph("yolov7x").nodes
    ours = get_layer_graph(scaled, deploy=True).layers
    theirs = get_layer_graph("yolov7x", deploy=True).layers
    assert [(layer.op, layer.shape) for layer in ours] == [
        (layer.op, layer.shape) for layer in theirs
    ]
    assert ours == theirs  # names and wiring too


def test_compound_derives_width_from_the_blocks(base):
    assert scale(base, depth=1.5).nodes == scale(base, depth=1.5, width=1.25).nodes


def test_compound_w6_gives_the_e6_blocks():
    """E6's ELANs are W6's compound-scaled by 1.5 (depth 4 -> 6, transitions x1.25)."""
    scaled, e6 = scale(get_block_graph("yolov7-w6"), depth=1.5), get_block_graph("yolov7-e6")
    blocks = [n for n in scaled.nodes if n.role == "computational"]
    assert len(blocks) == 11
    assert all(n.cfg == e6.node(n.name).cfg for n in blocks)


def test_width_mode_on_a_small_spec(small):
    scaled = scale(small, width=1.5, mode="width")
    assert _cfg(scaled, "stem").c == 24
    elan1 = _cfg(scaled, "elan1")
    assert (elan1.c_hidden, elan1.c_chain, elan1.c_out, elan1.depth) == (24, None, 48, 4)
    assert _cfg(scaled, "down").c == 48
    elan2 = _cfg(scaled, "elan2")  # c_chain 8 * 1.5 = 12 -> 16 (halves up)
    assert (elan2.c_hidden, elan2.c_chain, elan2.c_out, elan2.depth) == (24, 16, 96, 2)
    assert (_cfg(scaled, "spp").c, _cfg(scaled, "spp").hidden) == (48, 40)  # 36 -> 40
    assert _cfg(scaled, "rep").c == 64  # 60 -> 64
    assert _cfg(scaled, "pool") == _cfg(small, "pool")  # fixed blocks are untouched
    layers = get_layer_graph(scaled)
    assert layers["stem"].shape.c == 24 and layers["rep"].shape.c == 64
    assert layers["elan1.cv1"].shape.c == 24
    assert [layer for layer in layers if layer.node == "elan2"][-1].shape.c == 96


def test_width_mode_shrinks_to_at_least_eight(small):
    scaled = scale(small, width=0.25, mode="width")
    assert _cfg(scaled, "stem").c == 8  # 4 -> 8
    assert _cfg(scaled, "elan2").c_out == 16
    get_layer_graph(scaled)  # still lowers


def test_depth_mode_keeps_transition_widths(base):
    scaled = scale(base, depth=2.0, mode="depth")
    for before, after in zip(base.nodes, scaled.nodes, strict=True):
        if before.role == "computational":
            assert after.cfg.depth == 8 and after.cfg.tap_every == 2
            assert (after.cfg.c_out, after.cfg.c_hidden) == (before.cfg.c_out, before.cfg.c_hidden)
            assert after.cfg.concat_width() == before.cfg.concat_width() * 3 // 2
        else:
            assert after == before


def test_depth_keeps_tap_every_within_depth(small):
    scaled = scale(small, depth=0.25, mode="depth")
    assert (_cfg(scaled, "elan1").depth, _cfg(scaled, "elan1").tap_every) == (1, 1)
    assert (_cfg(scaled, "elan2").depth, _cfg(scaled, "elan2").tap_every) == (1, 1)
    get_layer_graph(scaled)


def test_input_graph_is_not_changed(small):
    before, text = graph_from(SMALL), dump_spec(small)
    for args in (
        {"width": 2.0, "mode": "width"},
        {"depth": 2.0, "mode": "depth"},
        {"depth": 1.5, "width": 1.2},  # elan1 widens x1.25, elan2 x7/6
    ):
        scale(small, **args)
    assert small == before and dump_spec(small) == text


def test_unit_factors_change_nothing_but_the_reference(base):
    for mode in ("compound", "width", "depth"):
        scaled = scale(base, mode=mode)
        assert scaled.nodes == base.nodes and scaled.name == base.name
        assert scaled.reference == {}  # the base's published figures no longer apply


@pytest.mark.parametrize(
    ("c", "factor", "expected"),
    [(40, 1.25, 48), (20, 1.5, 32), (10, 2.0, 24), (3, 0.5, 8), (12, 1.0, 12), (256, 1.25, 320)],
)
def test_round_channels(c, factor, expected):
    assert round_channels(c, factor) == expected


@pytest.mark.parametrize(
    ("n", "factor", "expected"),
    [(4, 1.5, 6), (3, 1.5, 5), (5, 0.5, 3), (1, 0.1, 1), (4, 2.0, 8), (7, 1.0, 7)],
)
def test_round_depth(n, factor, expected):
    assert round_depth(n, factor) == expected


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ({"depth": 0}, "argument 'depth' must be > 0, got 0"),
        ({"depth": -1.5, "mode": "depth"}, "argument 'depth' must be > 0"),
        ({"width": -1.25, "mode": "width"}, "argument 'width' must be > 0, got -1.25"),
        ({"width": 0.0}, "argument 'width' must be > 0"),
        ({"width": float("nan"), "mode": "width"}, "argument 'width' must be a finite number"),
        ({"depth": True}, "argument 'depth' must be a finite number"),
        ({"mode": "stage"}, "argument 'mode' must be one of 'compound', 'width', 'depth'"),
        ({"depth": 2.0, "mode": "width"}, "argument 'depth' must be 1 in mode 'width'"),
        ({"width": 1.25, "mode": "depth"}, "argument 'width' must be None or 1 in mode 'depth'"),
        ({"depth": 1.5, "width": 1.0}, "argument 'width' .* disagrees"),
    ],
)
def test_bad_arguments(small, args, match):
    with pytest.raises(SpecError, match=match) as info:
        scale(small, **args)
    assert "\n" not in str(info.value)


def test_blocks_widening_differently_need_an_explicit_width():
    e6 = get_block_graph("yolov7-e6")  # depth 6 -> 9: x1.4 (every 2nd tap), x1.3 (all taps)
    with pytest.raises(SpecError, match=r"different factors \(x1.3: td5.*x1.4: elan1"):
        scale(e6, depth=1.5)
    scaled = scale(e6, depth=1.5, width=1.35)
    assert _cfg(scaled, "elan1").c_out == 224 and _cfg(scaled, "td5").c_out == 624
    assert _cfg(scaled, "lat5").c == 648  # 480 * 1.35
    get_layer_graph(scaled, img_size=256)


@pytest.mark.parametrize("args", [{"width": 1.25, "mode": "width"}, {"depth": 1.5}])
def test_scaled_graph_dumps_and_parses_back(base, args):
    scaled = scale(base, **args)
    text = dump_spec(scaled)
    again = build_block_graph(parse_spec(text, source="scaled.yaml"))
    assert again.nodes == scaled.nodes
    assert again.with_settings(source=scaled.source) == scaled
    assert dump_spec(again) == text


@dataclass(frozen=True)
class StackCfg:
    """Dense stack: ``depth`` 3x3 convs, all outputs concatenated, 1x1 transition."""

    c_out: int = field(metadata={"scale": "transition"})
    c_growth: int = field(metadata={"scale": "width"})
    depth: int = field(default=2, metadata={"scale": "depth"})

    def concat_width(self) -> int:
        return self.depth * self.c_growth


def lower_stack(cfg, inputs, lb):
    h, outs = inputs[0], []
    for _ in range(cfg.depth):
        h = lb.conv(h, cfg.c_growth, 3)
        outs.append(h)
    return lb.conv(lb.concat(outs), cfg.c_out, 1)


@pytest.fixture
def stack_block():
    register_block("stack_test", StackCfg, role="computational")(lower_stack)
    yield
    unregister_block("stack_test")


def test_user_block_scales_through_its_field_metadata(stack_block):
    graph = graph_from(
        """\
        img_size: 32
        nodes:
          stem: {type: conv, c: 8, k: 3, s: 2}
          st: {type: stack_test, c_growth: 8, c_out: 16}
          out: {type: conv, c: 16}
        """
    )
    compound = scale(graph, depth=2.0)  # concat 16 -> 32: transitions x2
    assert _cfg(compound, "st") == StackCfg(c_out=32, c_growth=8, depth=4)
    assert (_cfg(compound, "stem").c, _cfg(compound, "out").c) == (16, 32)
    widened = scale(graph, width=2.0, mode="width")
    assert _cfg(widened, "st") == StackCfg(c_out=32, c_growth=16, depth=2)
    assert get_layer_graph(compound)["out"].shape.c == 32


def test_registry_refuses_unknown_scale_metadata():
    @dataclass(frozen=True)
    class BadCfg:
        c: int = field(metadata={"scale": "channels"})

    with pytest.raises(ValueError, match="metadata scale must be one of"):
        register_block("bad_scale_test", BadCfg)(lower_stack)
    unregister_block("bad_scale_test")


def test_heads_scale_only_in_width_mode(base):
    with pytest.raises(SpecError, match="'heads' applies to mode 'width' only"):
        scale(base, depth=1.5, heads=True)
