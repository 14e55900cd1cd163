"""Planned RepConv placement: the gradient-path rule, naive placement, explicit positions."""

import pytest

from scaling_lab import count_graph, dump_spec, get_layer_graph, ops, parse_spec
from scaling_lab.graph.block_graph import build_block_graph
from scaling_lab.layers.plan_repconv import feeds_join, parse_policy, repconv_summary
from scaling_lab.spec import SpecError
from tests.helpers.specs import ELAN_CSP_SPEC, graph_from


def _repconvs(layers):
    return [layer for layer in layers if isinstance(layer.op, ops.RepConv)]


def _block(layers, node):
    return [layer for layer in _repconvs(layers) if layer.node == node]


def test_planned_never_puts_identity_before_an_add_or_concat():
    layers = get_layer_graph(graph_from(ELAN_CSP_SPEC), repconv="planned")
    consumers = layers.consumers()
    reps = _repconvs(layers)
    assert reps
    for layer in reps:
        if feeds_join(layer, consumers):
            assert not layer.op.identity, layer.name
    # ...while convs whose output feeds another conv keep their identity where shapes allow
    assert any(layer.op.identity for layer in reps)


def test_all_puts_identity_before_joins():
    layers = get_layer_graph(graph_from(ELAN_CSP_SPEC), repconv="all")
    consumers = layers.consumers()
    naive = [
        layer for layer in _repconvs(layers) if feeds_join(layer, consumers) and layer.op.identity
    ]
    assert {layer.node for layer in naive} >= {"elan", "csp"}


def test_dark_block_vs_reversed_dark_block_under_planned():
    layers = get_layer_graph(graph_from(ELAN_CSP_SPEC), repconv="planned")
    # dark block: 1x1 -> 3x3 -> add: the 3x3 feeds the residual add, so RepConvN
    assert [layer.op.identity for layer in _block(layers, "csp")] == [False, False]
    # reversed dark block: 3x3 -> 1x1 -> add: the 3x3 feeds a conv, so a full RepConv
    assert [layer.op.identity for layer in _block(layers, "rcsp")] == [True, True]


def test_elan_chain_in_backbone_pattern():
    text = ELAN_CSP_SPEC.replace("depth: 3, tap_every: 1", "depth: 4, tap_every: 2")
    layers = get_layer_graph(graph_from(text), repconv="planned")
    elan = {layer.name: layer.op.identity for layer in _block(layers, "elan")}
    # chain outputs 2 and 4 are concatenated; 1 and 3 only feed the next conv
    assert elan == {"elan.cv3": True, "elan.cv4": False, "elan.cv5": True, "elan.cv6": False}


def test_none_removes_repconvs_and_counts_follow():
    planned = get_layer_graph("yolov7", repconv="planned")
    plain = get_layer_graph("yolov7", repconv="none")
    assert repconv_summary(plain)["repconv"] + repconv_summary(plain)["repconvn"] == 0
    n_rep = repconv_summary(planned)
    assert n_rep["repconvn"] > 0 and n_rep["repconv"] > 0
    # each RepConv adds a 1x1 conv + BN; each identity branch adds a BN of c_in
    extra = 0
    for layer in _repconvs(planned):
        op = layer.op
        extra += (
            op.c_out * op.c_in // op.groups + 2 * op.c_out + (2 * op.c_in if op.identity else 0)
        )
    assert count_graph(planned).params - count_graph(plain).params == extra
    # the deploy graph is the same whatever the plan
    fused = {
        count_graph(get_layer_graph("yolov7", repconv=p, deploy=True)).params
        for p in ("none", "all", "planned")
    }
    assert len(fused) == 1


def test_explicit_positions_fig6_style():
    policy = {"elan.cv3": "repconv", "elan.cv5": "repconvn"}
    layers = get_layer_graph(graph_from(ELAN_CSP_SPEC), repconv=policy)
    assert {layer.name: layer.op.identity for layer in _repconvs(layers)} == {
        "elan.cv3": True,
        "elan.cv5": False,
    }
    # later entries override earlier ones; globs select several convs
    layers = get_layer_graph(graph_from(ELAN_CSP_SPEC), repconv={"*": "planned", "elan.*": "conv"})
    assert not _block(layers, "elan") and _block(layers, "csp")


def test_cli_policy_syntax():
    assert parse_policy("planned") == "planned"
    assert parse_policy("elan.cv3=repconv, elan.cv5=repconvn") == {
        "elan.cv3": "repconv",
        "elan.cv5": "repconvn",
    }
    with pytest.raises(SpecError, match="expected PATTERN=PLACEMENT"):
        parse_policy("elan.cv3=")


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ("sometimes", "unknown RepConv policy 'sometimes'"),
        ({"elan.cv9": "repconv"}, "position 'elan.cv9' names no 3x3 conv (eligible: elan.cv3"),
        ({"stem": "repconv"}, "'stem' cannot have an identity branch (3 -> 32 channels, stride 2)"),
        ({"elan.cv3": "maybe"}, "unknown placement 'maybe'"),
    ],
)
def test_bad_positions_are_clear_errors(policy, message):
    with pytest.raises(SpecError) as err:
        get_layer_graph(graph_from(ELAN_CSP_SPEC), repconv=policy)
    assert message in str(err.value) and "field 'repconv'" in str(err.value)


def test_spec_key_and_dump_keep_the_plan():
    graph = graph_from("repconv: {'elan.cv3': repconv}\n" + ELAN_CSP_SPEC)
    again = build_block_graph(parse_spec(dump_spec(graph)), require_head=False)
    assert again.repconv == {"elan.cv3": "repconv"}
    assert [layer.name for layer in _repconvs(get_layer_graph(again))] == ["elan.cv3"]
