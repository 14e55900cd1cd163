"""BlockGraph checks: block types, fields, inputs, cycles, and the dump round trip."""

import pytest
import torch

from scaling_lab import create_model, dump_spec
from scaling_lab.graph.block_graph import build_block_graph
from scaling_lab.models import get_block_graph
from scaling_lab.spec import SpecError, parse_spec
from tests.helpers.specs import graph_from, small_size, zoo_cases


def _nodes(body: str) -> str:
    return "img_size: 64\nnodes:\n" + body


def test_default_input_is_previous_node(tiny_graph):
    assert tiny_graph.node("stem").inputs == ("input",)
    assert tiny_graph.node("down1").inputs == ("stem",)
    assert tiny_graph.node("cat").inputs == ("up", "elan1")


def test_unknown_block_type_lists_known():
    with pytest.raises(SpecError) as err:
        graph_from(_nodes("  a: {type: conv, c: 8}\n  b: {type: elann, c_hidden: 8, c_out: 8}\n"))
    msg = str(err.value)
    assert "test.yaml:4: node 'b': field 'type': unknown block type 'elann'" in msg
    assert "elan" in msg and "eelan" in msg


def test_unknown_field_lists_known():
    with pytest.raises(
        SpecError,
        match=r"node 'a': field 'kernel': unknown field for block "
        r"'conv' \(known: c, k, s, groups, act, p\)",
    ):
        graph_from(_nodes("  a: {type: conv, c: 8, kernel: 3}\n  b: {type: conv, c: 8}\n"))


def test_wrong_field_type():
    with pytest.raises(SpecError, match="node 'a': field 'c': must be int, got '8'"):
        graph_from(_nodes("  a: {type: conv, c: '8'}\n  b: {type: conv, c: 8}\n"))


def test_field_value_check():
    with pytest.raises(SpecError, match="node 'e': field 'depth': must be >= 1, got 0"):
        graph_from(
            _nodes("  a: {type: conv, c: 8}\n  e: {type: elan, c_hidden: 8, c_out: 8, depth: 0}\n")
        )


def test_missing_required_field():
    with pytest.raises(SpecError, match="node 'a': field 'c': required field missing"):
        graph_from(_nodes("  a: {type: conv, k: 3}\n  b: {type: conv, c: 8}\n"))


def test_unknown_from_name():
    with pytest.raises(
        SpecError,
        match=r"node 'b': field 'from': unknown input 'p9' \(known: "
        r"input, a, b\)",
    ):
        graph_from(_nodes("  a: {type: conv, c: 8}\n  b: {type: concat, from: [a, p9]}\n"))


def test_cycle_is_reported_with_its_path():
    text = _nodes(
        "  a: {type: conv, from: c, c: 8}\n  b: {type: conv, c: 8}\n  c: {type: conv, c: 8}\n"
    )
    with pytest.raises(SpecError, match="cycle in the graph: a -> c -> b -> a"):
        graph_from(text)


def test_wrong_number_of_inputs():
    with pytest.raises(SpecError, match="block 'conv' takes 1 input"):
        graph_from(_nodes("  a: {type: conv, c: 8}\n  b: {type: conv, from: [a, input], c: 8}\n"))


def test_nodes_written_out_of_order_are_sorted():
    graph = graph_from(
        _nodes("  b: {type: conv, from: a, c: 8}\n  a: {type: conv, from: input, c: 4}\n")
    )
    assert graph.names == ["a", "b"]


def _param_shapes(model):
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


@pytest.mark.parametrize("name", zoo_cases())
def test_dump_round_trip_builds_identical_model(name):
    graph = get_block_graph(name)
    text = dump_spec(graph)
    again = build_block_graph(parse_spec(text, source="dumped.yaml"))
    assert again.nodes == graph.nodes
    assert dump_spec(again) == text
    small = small_size(name)
    original = create_model(graph, img_size=small)
    rebuilt = create_model(again, img_size=small)
    assert _param_shapes(original) == _param_shapes(rebuilt)
    assert len(_param_shapes(original)) > 50


def test_dump_keeps_settings(tiny_graph):
    again = build_block_graph(parse_spec(dump_spec(tiny_graph)))
    assert (again.nc, again.img_size, again.anchors) == (3, 64, tiny_graph.anchors)
    x = torch.zeros(1, 3, 64, 64)
    a, b = create_model(tiny_graph).eval(), create_model(again).eval()
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
