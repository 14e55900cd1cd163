"""Ports: ``from: node.port`` reads a named internal tensor of another block (E-ELAN's
cardinality groups before the merge): parsing, round trip, errors, the function it computes,
what an unread port costs (nothing), deploy pruning, scaling, overrides and ``lab show``."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from scaling_lab import create_model, get_block_graph, lower, ops, register_block
from scaling_lab.analyze.complexity import count_graph
from scaling_lab.cli import main as lab_main
from scaling_lab.graph.block_graph import build_block_graph, dump_spec
from scaling_lab.graph.lower import declared_ports
from scaling_lab.graph.registry import unregister_block
from scaling_lab.layers.fuse import drop_aux_layers
from scaling_lab.spec import SpecError, parse_spec
from scaling_lab.sweep.materialize import Overrides, materialize
from scaling_lab.transforms.deploy import drop_aux_heads
from scaling_lab.transforms.scale import scale
from scaling_lab.zoo import list_models
from tests.helpers.specs import graph_from, spec_text

PORT_SPEC = """\
img_size: 32
nc: 2
anchors: [[8, 8, 16, 16]]
nodes:
  stem: {type: conv, c: 8, k: 3, s: 2}
  e: {type: eelan, c_hidden: 4, c_chain: 2, depth: 3, tap_every: 1, c_out: 6}
  lead: {type: conv, c: 8, k: 3}
  aux: {type: conv, from: e.group1, c: 8, k: 3}
  head: {type: aux_detect, from: [lead, aux]}
"""


def _fragment(text: str):
    """A graph without a detection head (a block studied on its own)."""
    return build_block_graph(parse_spec(spec_text(text), source="test.yaml"), require_head=False)


def _with(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new)


# -- parsing, round trip, errors -------------------------------------------------------------


def test_port_input_parses_and_dump_round_trips():
    graph = graph_from(PORT_SPEC)
    assert graph.node("aux").inputs == ("e.group1",)
    assert graph.node("aux").sources == ("e",)
    assert graph.port_reads() == {"e": {"group1"}}
    text = dump_spec(graph)
    assert "from: e.group1" in text
    again = build_block_graph(parse_spec(text))
    assert again.nodes == graph.nodes
    a, b = create_model(graph), create_model(again)
    assert [(k, v.shape) for k, v in a.state_dict().items()] == [
        (k, v.shape) for k, v in b.state_dict().items()
    ]


@pytest.mark.parametrize("bad", ["e.group1.x", "e.", ".group1", "e.1st"])
def test_malformed_port_reference_is_refused(bad):
    with pytest.raises(SpecError) as err:
        graph_from(_with(PORT_SPEC, "from: e.group1", f"from: '{bad}'"))
    text = str(err.value)
    assert "node 'aux'" in text and "field 'from'" in text and "NODE.PORT" in text


def test_unknown_port_names_node_field_and_the_known_ports():
    with pytest.raises(SpecError) as err:
        graph_from(_with(PORT_SPEC, "e.group1", "e.group2"))  # cardinality 2: group0, group1
    assert str(err.value) == (
        "test.yaml:8: node 'aux': field 'from': unknown port 'group2' of 'e' "
        "(known: group0, group1)"
    )
    with pytest.raises(
        SpecError,
        match=r"node 'aux': field 'from': unknown port 'x' of "
        r"'stem' \('stem' has no ports\)",
    ):
        graph_from(_with(PORT_SPEC, "e.group1", "stem.x"))
    with pytest.raises(SpecError, match="'input' has no ports"):
        graph_from(_with(PORT_SPEC, "e.group1", "input.x"))
    with pytest.raises(SpecError, match=r"node 'aux': field 'from': unknown input 'nope'"):
        graph_from(_with(PORT_SPEC, "e.group1", "nope.group1"))


def test_a_cycle_through_a_port_is_refused():
    text = _with(PORT_SPEC, "  e: {type: eelan,", "  e: {type: eelan, from: aux,")
    with pytest.raises(SpecError, match="cycle in the graph"):
        graph_from(text)


def test_eelan_declares_one_port_per_cardinality_group():
    text = _with(PORT_SPEC, "c_out: 6}", "c_out: 6, cardinality: 3}")
    text = _with(text, "c_hidden: 4, c_chain: 2", "c_hidden: 3, c_chain: 3")
    ports = declared_ports(graph_from(_with(text, "e.group1", "e.group2")))
    assert ports == {"e": ("group0", "group1", "group2")}


# -- the function a port read computes -------------------------------------------------------

PAIR_TAP = """\
img_size: 32
nodes:
  stem: {type: conv, c: 8, k: 3, s: 2}
  left: {type: elan, c_hidden: 4, c_chain: 2, depth: 3, tap_every: 1, c_out: 6}
  right: {type: elan, from: stem, c_hidden: 4, c_chain: 2, depth: 3, tap_every: 1, c_out: 6}
  sum: {type: add, from: [left, right]}
  tap: {type: conv, from: right, c: 5, k: 3}
  out: {type: concat, from: [sum, tap]}
"""
EELAN_TAP = """\
img_size: 32
nodes:
  stem: {type: conv, c: 8, k: 3, s: 2}
  e: {type: eelan, c_hidden: 4, c_chain: 2, depth: 3, tap_every: 1, c_out: 6}
  tap: {type: conv, from: e.group1, c: 5, k: 3}
  out: {type: concat, from: [e, tap]}
"""


def _randomize_bn(model: nn.Module) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)


def test_group_port_is_the_second_parallel_elan_as_the_reference_wires_e6e_aux_convs():
    """The reference's E-ELAN is parallel ELANs summed; its partial aux conv reads the second
    ELAN's transition output. Stacking the ELANs' weights in order into our grouped convs,
    ``e.group1`` is exactly that tensor (float64, BatchNorm in eval and training mode)."""
    pair = create_model(_fragment(PAIR_TAP)).double()
    grouped = create_model(_fragment(EELAN_TAP)).double()
    assert sum(p.numel() for p in pair.parameters()) == sum(p.numel() for p in grouped.parameters())
    _randomize_bn(pair)
    src = dict(pair.named_modules())
    with torch.no_grad():
        grouped.stem.load_state_dict(pair.stem.state_dict())
        grouped.tap.load_state_dict(pair.tap.state_dict())
        for i in range(1, 7):  # 2 entries, 3 chain convs, transition (cv6)
            parts = [src[f"left.cv{i}"].state_dict(), src[f"right.cv{i}"].state_dict()]
            for name, tensor in getattr(grouped.e, f"cv{i}").state_dict().items():
                if name.endswith("num_batches_tracked"):
                    continue
                tensor.copy_(torch.cat([parts[0][name], parts[1][name]], 0))
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    for mode in (False, True):  # eval statistics, then batch statistics
        pair.train(mode), grouped.train(mode)
        with torch.no_grad():
            torch.testing.assert_close(grouped(x), pair(x), rtol=1e-12, atol=1e-12)


def test_consumer_of_group0_reads_channel_slice_0_of_the_pre_merge_tensor():
    graph = graph_from(_with(PORT_SPEC, "e.group1", "e.group0"))
    layers = lower(graph)
    assert layers["e.group0"].inputs == ("e.cv6",) and layers["aux"].inputs == ("e.group0",)
    assert layers["e.group0"].op == ops.Chunk(2, 0)
    model = create_model(graph).double().eval()
    seen = {}
    model.e.cv6.register_forward_hook(lambda m, i, o: seen.setdefault("pre_merge", o))
    model.aux.register_forward_pre_hook(lambda m, i: seen.setdefault("aux_in", i[0]))
    with torch.no_grad():
        model(torch.rand(1, 3, 32, 32, dtype=torch.float64))
    pre = seen["pre_merge"]
    assert pre.shape[1] == 12  # c_out 6 x cardinality 2
    assert torch.equal(seen["aux_in"], pre[:, :6])


# -- what a port costs -----------------------------------------------------------------------


def test_unread_ports_add_no_layer_and_no_work():
    read = lower(graph_from(PORT_SPEC))
    unread = lower(graph_from(_with(PORT_SPEC, "from: e.group1", "from: e")))
    assert [x.name for x in read if x.name not in unread._index] == ["e.group1"]
    assert not any(isinstance(x.op, ops.Chunk) for x in unread)
    a, b = count_graph(read), count_graph(unread)
    assert (a.params, a.macs) == (b.params, b.macs)
    code = create_model(graph_from(_with(PORT_SPEC, "from: e.group1", "from: e"))).code
    assert "chunk" not in code


def test_only_e6e_reads_ports_in_the_zoo_and_its_counts_equal_the_merged_wiring():
    for name in list_models():
        reads = get_block_graph(name).port_reads()
        expected = {"out3": {"group1"}, "td4": {"group1"}, "td5": {"group1"}}
        assert reads == (expected if name == "yolov7-e6e" else {}), name
    e6e = get_block_graph("yolov7-e6e")
    merged = materialize(
        e6e, Overrides.from_paths({"aux3.from": "out3", "aux4.from": "td4", "aux5.from": "td5"})
    )
    a, b = count_graph(lower(e6e)), count_graph(lower(merged))
    assert (a.params, a.macs, a.thop_extra_ops) == (b.params, b.macs, b.thop_extra_ops)
    assert len(lower(e6e)) == len(lower(merged)) + 3  # the three free channel slices


def test_e6e_aux_convs_read_group_1_before_the_merge():
    layers = lower(get_block_graph("yolov7-e6e"), 256)
    for aux, node, c in (("aux3", "out3", 160), ("aux4", "td4", 320), ("aux5", "td5", 480)):
        (src,) = layers[aux].inputs
        assert src == f"{node}.group1" and layers[src].op == ops.Chunk(2, 1)
        assert layers[src].inputs == (f"{node}.cv9",)  # the grouped transition, pre-merge
        assert layers[f"{node}.cv9"].shape.c == 2 * c and layers[src].shape.c == c
        own = [x.name for x in layers if x.node == node]
        assert own[-2:] == [src, f"{node}.merge1"]  # the node's output stays its last layer
    assert layers["aux6"].inputs == ("spp.cv7",)


# -- transforms ------------------------------------------------------------------------------


def test_deploy_prunes_a_node_read_only_through_a_port_by_an_aux_conv():
    text = _with(
        PORT_SPEC,
        "  lead:",
        "  side: {type: eelan, from: stem, c_hidden: 4, depth: 1, tap_every: 1, c_out: 6}\n  lead:",
    )
    text = _with(text, "  lead: {type: conv,", "  lead: {type: conv, from: e,")
    text = _with(text, "from: e.group1", "from: side.group0")
    graph = graph_from(text)
    deployed = drop_aux_heads(graph)
    assert deployed.names == ["stem", "e", "lead", "head"]
    assert drop_aux_layers(lower(graph)).layers == lower(deployed).layers
    # a node that the lead path also reads stays, through its output or through a port
    kept = drop_aux_heads(graph_from(PORT_SPEC))
    assert kept.names == ["stem", "e", "lead", "head"]
    text = _with(PORT_SPEC, "  lead: {type: conv,", "  lead: {type: conv, from: e.group0,")
    kept = drop_aux_heads(graph_from(text))
    assert kept.names == ["stem", "e", "lead", "head"]
    assert lower(kept)["lead"].inputs == ("e.group0",)


def test_e6e_deploy_has_no_slice_and_equals_the_pruned_training_graph():
    graph = get_block_graph("yolov7-e6e")
    deployed = drop_aux_heads(graph)
    assert deployed.port_reads() == {}
    assert drop_aux_layers(lower(graph, 256)).layers == lower(deployed, 256).layers


@pytest.mark.parametrize(
    "args",
    [{"width": 1.25, "mode": "width"}, {"depth": 1.5, "width": 1.35}],
    ids=["width", "compound"],
)
def test_scaling_keeps_port_reads_and_their_widths_follow(args):
    graph = get_block_graph("yolov7-e6e")
    scaled = scale(graph, **args)
    assert scaled.port_reads() == graph.port_reads()
    layers = lower(scaled, 256)
    for aux, node in (("aux3", "out3"), ("aux4", "td4"), ("aux5", "td5")):
        c_out = scaled.node(node).cfg.c_out
        assert layers[f"{node}.group1"].shape.c == c_out == layers[f"{node}.merge1"].shape.c
        assert layers[aux].op.c_in == c_out
    assert c_out != graph.node("td5").cfg.c_out


def test_from_override_rewires_and_is_checked():
    base = graph_from(PORT_SPEC)
    merged = materialize(base, Overrides.from_paths({"aux.from": "e"}))
    assert merged.node("aux").inputs == ("e",) and merged.port_reads() == {}
    back = materialize(merged, Overrides.from_paths({"aux.from": "e.group0"}))
    assert back.node("aux").inputs == ("e.group0",)
    listed = materialize(base, Overrides.from_paths({"head.from": ["lead", "e.group0"]}))
    assert listed.node("head").inputs == ("lead", "e.group0")
    bad = [
        ("aux.from", "e.group7", "override: unknown port 'group7' of 'e' (known: group0, group1)"),
        ("lead.from", ["e", "stem"], "takes 1 input(s), got 2"),
        ("stem.from", "aux", "cycle in the graph"),
        ("e.from", "a.b.c", "neither a node name nor NODE.PORT"),
        ("e.from", None, "must be a node name"),
        ("nope.from", "e", "no node 'nope'"),
    ]
    for path, value, message in bad:
        with pytest.raises(SpecError) as err:
            materialize(base, Overrides.from_paths({path: value}), source="x.yaml")
        assert message in str(err.value) and str(err.value).startswith("x.yaml"), path


# -- the builder API and lab show ------------------------------------------------------------


@dataclass(frozen=True)
class _TwoCfg:
    c: int


def test_a_registered_block_declares_ports_through_the_builder():
    def lower_two(cfg, inputs, lb):
        mid = lb.conv(inputs[0], cfg.c, 3)
        lb.port("mid", mid)  # an existing layer's output
        lb.chunk_port("half", mid, 2, 1)  # a recipe: emitted only where read
        return lb.conv(mid, cfg.c, 1)

    def lower_one(cfg, inputs, lb):
        out = lb.conv(inputs[0], cfg.c, 1)
        lb.port("same", out)  # a single-layer node: the layer takes the node's name
        return out

    register_block("two_test", _TwoCfg)(lower_two)
    register_block("one_test", _TwoCfg)(lower_one)
    try:
        graph = _fragment(
            """\
            img_size: 32
            nodes:
              a: {type: two_test, c: 8}
              b: {type: one_test, c: 4}
              x: {type: conv, from: a.mid, c: 4}
              y: {type: conv, from: a.half, c: 4}
              z: {type: conv, from: b.same, c: 4}
              out: {type: concat, from: [x, y, z]}
            """
        )
        layers = lower(graph)
        assert layers["x"].inputs == ("a.cv1",)
        assert layers["y"].inputs == ("a.half",) and layers["a.half"].op == ops.Chunk(2, 1)
        assert layers["z"].inputs == ("b",)
        assert declared_ports(graph) == {"a": ("mid", "half"), "b": ("same",)}
    finally:
        unregister_block("two_test")
        unregister_block("one_test")


def test_a_port_declared_twice_is_a_block_error():
    def lower_dup(cfg, inputs, lb):
        out = lb.conv(inputs[0], cfg.c, 1)
        lb.port("p", out)
        lb.port("p", out)
        return out

    register_block("dup_test", _TwoCfg)(lower_dup)
    try:
        with pytest.raises(SpecError, match="node 'a': port 'p' declared twice"):
            lower(_fragment("img_size: 32\nnodes:\n  a: {type: dup_test, c: 4}\n"))
    finally:
        unregister_block("dup_test")


def test_lab_show_lists_ports_and_port_inputs(capsys):
    assert lab_main(["show", "yolov7-e6e"]) == 0
    out = capsys.readouterr().out.splitlines()
    td5 = out.index(next(line for line in out if line.startswith("td5 ")))
    assert "ports: group0, group1" in out[td5 + 1]
    aux5 = next(line for line in out if line.startswith("aux5 "))
    assert "td5.group1" in aux5
    lead5 = out.index(next(line for line in out if line.startswith("lead5 ")))
    assert "ports:" not in out[lead5 + 1]


def test_a_port_emitted_after_the_output_layer_is_a_block_error():
    def lower_late(cfg, inputs, lb):
        out = lb.conv(inputs[0], cfg.c, 1)
        lb.chunk_port("half", out, 2, 0)  # after the output: would become the node's last
        return out

    register_block("late_test", _TwoCfg)(lower_late)
    try:
        text = "img_size: 32\nnodes:\n  a: {type: late_test, c: 4}\n  b: {type: conv, from: a}\n"
        lower(_fragment(text.replace("from: a}", "from: a, c: 4}")))  # unread: fine
        with pytest.raises(SpecError, match="node 'a': ports must be declared before"):
            lower(_fragment(text.replace("from: a}", "from: a.half, c: 4}")))
    finally:
        unregister_block("late_test")
