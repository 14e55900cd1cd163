"""Blocks of the baseline detectors (YOLOv4/YOLOR CSP families, YOLOv5, YOLOX, PP-YOLOE):
hand-computed counts, counts == built module == thop's rules, and fusing."""

import pytest
import torch

from scaling_lab import count_graph, create_model, get_block_graph, get_layer_graph
from scaling_lab.analyze.counters import count_thop
from scaling_lab.analyze.fuse_check import fuse_check
from scaling_lab.graph.lower import max_stride
from scaling_lab.spec import SpecError
from tests.helpers.specs import REPRESENTATIVES, graph_from


def conv(c_in, c_out, k=1, groups=1):  # conv + BatchNorm (weight, bias)
    return c_out * (c_in // groups) * k * k + 2 * c_out


def plain(c_in, c_out, k=1):  # conv with bias, no BatchNorm
    return c_out * c_in * k * k + c_out


EVERY_BLOCK = """\
img_size: 64
nc: 2
anchors: [[10, 13, 16, 30], [30, 61, 62, 45]]
nodes:
  stem: {type: focus, c: 16, k: 3}
  big: {type: conv, c: 16, k: 6, s: 2, p: 2}
  c3: {type: c3, c_out: 32, depth: 2}
  cspb: {type: csp_b, c_out: 32, unit: res, expansion: 0.5, shortcut: true}
  cspc: {type: csp_c, c_out: 32, unit: res, groups: 8}
  bare: {type: csp, c_out: 32, tail: false, bypass: entry, hidden: 32, shortcut: false}
  res: {type: res, unit: res, groups: 4}
  down: {type: conv, c: 32, k: 3, s: 2}
  spp: {type: spp, c: 32}
  sppf: {type: sppf, c: 32}
  part: {type: csp_tiny, c: 32}
  stage: {type: cspres_stage, c_out: 64, depth: 2}
  pan: {type: csp_stage, c_out: 32, depth: 3, spp: true}
  up: {type: upsample}
  cat: {type: concat, from: [up, sppf]}
  lead3: {type: conv, c: 32}
  lead4: {type: conv, from: pan, c: 32}
  yolo: {type: detect, from: [lead3, lead4], implicit: false}
"""


def _heads(head: str) -> str:
    """The same graph with a decoupled head instead of the YOLO head."""
    width = ", c: 16" if head == "yolox_head" else ""
    return EVERY_BLOCK.replace(
        "  yolo: {type: detect, from: [lead3, lead4], implicit: false}\n",
        f"  head: {{type: {head}, from: [lead3, lead4]{width}}}\n",
    )


@pytest.mark.parametrize("head", ["detect", "yolox_head", "ppyoloe_head"])
@pytest.mark.parametrize("deploy", [False, True], ids=["training", "deploy"])
def test_counts_equal_module_and_thop(head, deploy):
    graph = graph_from(EVERY_BLOCK if head == "detect" else _heads(head))
    ours = count_graph(get_layer_graph(graph, deploy=deploy))
    model = create_model(graph, deploy=deploy)
    assert ours.params == sum(p.numel() for p in model.parameters())
    assert count_thop(model, 64).macs == ours.thop_equivalent


@pytest.mark.parametrize("head", ["detect", "yolox_head", "ppyoloe_head"])
def test_fused_equals_training(head):
    graph = graph_from(EVERY_BLOCK if head == "detect" else _heads(head))
    result = fuse_check(graph, img_size=64)
    assert result["ok"], result


def _node_params(spec: str, node: str) -> int:
    layers = get_layer_graph(graph_from(spec))
    return sum(c.params for c, layer in zip(count_graph(layers).per_layer, layers)
               if layer.node == node)  # fmt: skip


def test_hand_counts():
    p = lambda node: _node_params(EVERY_BLOCK, node)  # noqa: E731
    assert p("stem") == conv(12, 16, 3)  # space-to-depth: 3 x 4 channels
    assert p("big") == conv(16, 16, 6)
    # C3: entry and bypass 1x1 (16 each), 2 dark units at 16, 1x1 on the concat
    assert p("c3") == conv(16, 16) * 2 + 2 * (conv(16, 16) + conv(16, 16, 3)) + conv(32, 32)
    # CSPB: entry 1x1 to 32, bypass 1x1 on it, a ResNet unit (inner 16), 1x1 on 64 channels
    assert p("cspb") == conv(32, 32) * 2 + conv(32, 16) + conv(16, 16, 3) + conv(16, 32) + conv(
        64, 32
    )
    # CSPC: entry + bypass (16), ResNeXt unit (inner 16, 3x3 groups 8), 1x1 tail, 1x1 out
    unit = conv(16, 16) + conv(16, 16, 3, groups=8) + conv(16, 16)
    assert p("cspc") == conv(32, 16) * 2 + unit + conv(16, 16) + conv(32, 32)
    # CSP2 (bare): entry 1x1 (BN), dark unit, bare 1x1 bypass of the entry, BN on 64, 1x1
    assert p("bare") == conv(32, 32) + conv(32, 32) + conv(32, 32, 3) + 32 * 32 + 2 * 64 + conv(
        64, 32
    )
    assert p("res") == conv(32, 16) + conv(16, 16, 3, groups=4) + conv(16, 32)
    assert p("spp") == conv(32, 16) + conv(64, 32)
    assert p("sppf") == conv(32, 16) + conv(64, 32)
    # csp_tiny: two 3x3 (16) on the second half (16 channels), 1x1 on their concat
    assert p("part") == conv(16, 16, 3) + conv(16, 16, 3) + conv(32, 32)
    # CSPRes stage 32 -> 64: 3x3 s2 to 48, two 1x1 to 24, 2 blocks (3x3 + RepVGG 3x3/1x1),
    # ESE (1x1 with bias on 48), 1x1 to 64
    block = conv(24, 24, 3) + conv(24, 24, 3) + conv(24, 24)
    expected = conv(32, 48, 3) + 2 * conv(48, 24) + 2 * block + plain(48, 48) + conv(48, 64)
    assert p("stage") == expected
    # CSP-PAN stage 64 -> 32 with SPP after block 1: halves of 16, 3 blocks, SPP 1x1 on 64
    block = conv(16, 16, 3) + conv(16, 16, 3) + conv(16, 16)
    assert p("pan") == 2 * conv(64, 16) + 3 * block + conv(64, 16) + conv(32, 32)


def test_decoupled_head_counts():
    yolox = _node_params(_heads("yolox_head"), "head")
    per_level = conv(32, 16) + 4 * conv(16, 16, 3) + plain(16, 2) + plain(16, 4) + plain(16, 1)
    assert yolox == 2 * per_level
    ppyoloe = _node_params(_heads("ppyoloe_head"), "head")
    per_level = 2 * (plain(32, 32) + conv(32, 32)) + plain(32, 2, 3) + plain(32, 4 * 17, 3)
    assert ppyoloe == 2 * per_level


def test_decoupled_outputs():
    graph = graph_from(_heads("yolox_head"))
    model = create_model(graph)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        maps = model.train()(x)
        flat = model.eval()(x)
    assert [tuple(m.shape) for m in maps] == [(2, 4 + 1 + 2, 8, 8), (2, 7, 4, 4)]
    assert flat.shape == (2, 8 * 8 + 4 * 4, 7)


def test_chunk_takes_the_second_half():
    graph = graph_from(
        "img_size: 32\nnodes:\n  a: {type: conv, c: 8, k: 3}\n  b: {type: csp_tiny, c: 8}\n"
    )
    model = create_model(graph).eval()
    chunk = next(n for n in model.graph.nodes if n.op == "call_function" and "chunk" in str(n))
    assert chunk.args[1:] == (2, 1)


STEM = """\
img_size: 64
nc: 2
anchors: [[10, 13, 16, 30]]
nodes:
  stem: {type: stem, c: 32}
  wide: {type: stem, from: input, c: 16, hidden: 12}
  cat: {type: concat, from: [stem, wide]}
  detect: {type: detect, from: [cat]}
"""


def test_stem_counts_shapes_and_fusing():
    # 3x3 s2 to c/2, [1x1, 3x3 s2] on it, max pool of it, concat, 1x1 to c: stride 4
    assert _node_params(STEM, "stem") == conv(3, 16, 3) + conv(16, 16) + conv(16, 16, 3) + conv(
        32, 32
    )
    assert _node_params(STEM, "wide") == conv(3, 12, 3) + conv(12, 12) + conv(12, 12, 3) + conv(
        24, 16
    )
    graph = graph_from(STEM)
    layers = get_layer_graph(graph)
    assert max_stride(get_block_graph(graph)) == 4
    assert [(s.c, s.h) for s in layers.input_shapes(layers.output)] == [(48, 16)]
    for deploy in (False, True):
        ours = count_graph(get_layer_graph(graph, deploy=deploy))
        model = create_model(graph, deploy=deploy)
        assert ours.params == sum(p.numel() for p in model.parameters())
        assert count_thop(model, 64).macs == ours.thop_equivalent
    assert fuse_check(graph, img_size=64)["ok"]


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ("{type: stem, c: 8, hidden: 0}", "field 'hidden': must be >= 1"),
        ("{type: csp_tiny, c: 7}", "field 'c': must be even"),
        ("{type: res, unit: res, reversed: true}", "only the dark unit can be reversed"),
        ("{type: c3, c_out: 16, expansion: 0}", "field 'expansion': must be in (0, 4]"),
        ("{type: sppf, c: 8, k: 4}", "pool kernels must be odd"),
        ("{type: csp_b, c_out: 16, unit: dense}", "field 'unit': must be one of 'dark', 'res'"),
        ("{type: conv, c: 8, p: -1}", "field 'p': must be >= 0"),
    ],
)
def test_block_field_errors(node, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        get_layer_graph(
            graph_from(f"img_size: 32\nnodes:\n  a: {{type: conv, c: 8}}\n  b: {node}\n")
        )


@pytest.mark.parametrize("name", sorted(REPRESENTATIVES.values()))
def test_baseline_representatives_fuse(name):
    result = fuse_check(name, img_size=2 * max_stride(get_block_graph(name)))
    assert result["ok"], result
    assert result["params_fused"] == count_graph(get_layer_graph(name, deploy=True)).params
