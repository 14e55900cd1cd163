"""The shipped experiments (``experiments/*.yaml``): each loads, names paper rows that exist,
trains with valid settings, and its rows are the models the paper's tables describe."""

from __future__ import annotations

import dataclasses
import itertools
from functools import cache
from pathlib import Path

import pytest
import yaml

from scaling_lab import ops, resolve_spec
from scaling_lab.analyze.profile import profile
from scaling_lab.layers.plan_repconv import feeds_join
from scaling_lab.models import get_block_graph, get_layer_graph
from scaling_lab.sweep.experiment import load_experiment
from scaling_lab.sweep.experiment_graphs import variant_graph
from scaling_lab.sweep.materialize import merge_train
from scaling_lab.sweep.paper_figures import paper_rows
from scaling_lab.train.config import TrainConfig

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
FILES = sorted(p.name for p in EXPERIMENTS.glob("*.yaml"))
# the zoo tests' tolerances against the paper (tests/analyze/test_complexity.py)
TOLERANCE = {"YOLOv7": (0.05, 0.005)}
BASELINE_TOLERANCE = (0.1, 0.01)


@cache
def experiment(name: str):
    return load_experiment(EXPERIMENTS / name)  # builds and lowers every variant


@cache
def graphs(name: str) -> dict:
    exp = experiment(name)
    return {v.label: variant_graph(exp, v) for v in exp.variants}


def repconvs(graph) -> frozenset[tuple[str, bool]]:
    """(layer, has identity) of every RepConv of the training-form layer graph."""
    layers = get_layer_graph(graph)
    return frozenset((x.name, x.op.identity) for x in layers if isinstance(x.op, ops.RepConv))


def deploy_cost(graph) -> tuple[int, float]:
    counted = profile(graph, deploy=True)
    return counted.params, counted.gflops


def test_the_paper_tables_are_all_there():
    wanted = {
        "table2_zoo.yaml",
        "table3_scaling.yaml",
        "table4_repconcat.yaml",
        "table5_represidual.yaml",
        "table6_aux.yaml",
        "table7_constraint.yaml",
        "table8_partial_aux.yaml",
    }
    assert wanted <= set(FILES)


@pytest.mark.parametrize("name", FILES)
def test_experiment_loads_and_its_rows_are_paper_rows(name):
    """A file with a paper table has rows, each a row of that table (its baseline may be
    another table's model); a file without one (a search) still has something to run, and
    names no paper row it could not be shown against.
    Which case applies is read from the file itself, so a loader that lost the table fails."""
    exp = experiment(name)
    declared = yaml.safe_load((EXPERIMENTS / name).read_text()).get("paper_table")
    assert exp.paper_table == declared, name
    if exp.paper_table is None:
        assert exp.variants or exp.search is not None, f"{name}: no rows and no search"
        assert not [v.label for v in exp.variants if v.paper_row is not None], name
    else:
        rows = paper_rows(exp.paper_table)
        assert rows and exp.variants, f"{name}: no rows to compare with Table {exp.paper_table}"
        # the baseline may come from another table (the peers table's yolov7-tiny: Table 1)
        missing = [
            v.label
            for v in exp.variants
            if (v.paper_row or v.label) not in rows and v.label != exp.baseline
        ]
        assert not missing, f"{name}: not rows of Table {exp.paper_table}: {missing}"


@pytest.mark.parametrize("name", FILES)
def test_every_row_trains_with_valid_settings(name):
    """Each row's training settings over the default budget and every named one make a
    TrainConfig (TrainConfig rejects unknown keys and bad values)."""
    exp = experiment(name)
    for budget, variant in itertools.product([None, *exp.budgets], exp.variants or [None]):
        settings = exp.train_config(budget)
        if variant is not None:
            settings = merge_train(settings, variant.changes.train)
        TrainConfig(**{"model": "-", "data": "synth", **settings})


def test_table2_rows_are_the_paper_rows_in_order_and_match_its_counts():
    exp = experiment("table2_zoo.yaml")
    rows = paper_rows(2)
    assert [v.paper_row for v in exp.variants] == list(rows)
    assert [v.label for v in exp.variants] == list(rows)
    off = set()
    for variant in exp.variants:
        spec = resolve_spec(variant.model)
        assert spec.reference["paper_row"] == variant.paper_row
        params_tol, gflops_tol = TOLERANCE.get(spec.family, BASELINE_TOLERANCE)
        paper = rows[variant.paper_row]
        graph = graphs("table2_zoo.yaml")[variant.label]
        counted = profile(graph, deploy=True)  # what the sweep reports (form: deploy)
        if spec.reference.get("graph", "deploy") == "training":
            # the paper counted this one's training graph: compare like with like
            close = profile(graph, deploy=False)
            assert abs(close.params_m - paper["params_m"]) <= params_tol, variant.label
            assert abs(close.gflops / paper["gflops"] - 1) <= gflops_tol, variant.label
        if not (
            abs(counted.params_m - paper["params_m"]) <= params_tol
            and abs(counted.gflops / paper["gflops"] - 1) <= gflops_tol
        ):
            off.add(variant.label)
    # YOLOv7-D6's published figures are its training graph with the auxiliary head
    assert off == {"YOLOv7-D6"}


def test_table2_latency_options_are_accepted():
    from scaling_lab.analyze.latency import resolve_request

    exp = experiment("table2_zoo.yaml")
    assert exp.wants("latency_ms") and exp.form == "deploy"
    options = {k: v for k, v in exp.latency.given().items() if k != "channels_last"}
    resolve_request(**options)


def test_table4_rows_are_pairwise_different_planned_placements():
    exp = experiment("table4_repconcat.yaml")
    by_label = {label: repconvs(graph) for label, graph in graphs("table4_repconcat.yaml").items()}
    assert by_label["base (3-S ELAN)"] == frozenset()
    placements = list(by_label.values())
    assert len(set(placements)) == len(placements), "two Table 4 rows are the same model"
    layers = get_layer_graph(graphs("table4_repconcat.yaml")["Figure 6 (c)"])
    consumers = layers.consumers()
    elans = {n.name for n in get_block_graph(exp.base).nodes if n.type == "elan"}
    for layer in layers:
        if isinstance(layer.op, ops.RepConv):
            assert layer.node in elans, layer.name  # only the ELANs' 3x3 convs change
            # planned: no identity branch into the concat
            assert layer.op.identity != feeds_join(layer, consumers), layer.name
    # RepConv folds into a plain 3x3 conv: every row deploys as the base
    costs = {deploy_cost(graph) for graph in graphs("table4_repconcat.yaml").values()}
    assert len(costs) == 1


def test_table5_repcsp_puts_repconv_in_the_backbone_dark_blocks_only():
    found = graphs("table5_represidual.yaml")
    base, rep = found["base (YOLOR-W6)"], found["RepCSP"]
    assert repconvs(base) == frozenset()
    placed = repconvs(rep)
    assert placed and all(identity for _, identity in placed)
    base_layers = {x.name: x for x in get_layer_graph(base)}
    rep_layers = {x.name: x for x in get_layer_graph(rep)}
    assert base_layers.keys() == rep_layers.keys()
    changed = {name for name in base_layers if base_layers[name].op != rep_layers[name].op}
    assert changed == {name for name, _ in placed}
    consumers = get_layer_graph(rep).consumers()
    for name in changed:  # each the 3x3 of a residual dark block: it feeds the add
        assert name.startswith("stage")
        assert any(isinstance(c.op, ops.Add) for c in consumers[name]), name
    assert deploy_cost(base) == deploy_cost(rep)


def test_table5_rcsp_reverses_only_the_backbone_dark_blocks_at_equal_cost():
    found = graphs("table5_represidual.yaml")
    assert {"RCSP", "RepRCSP", "RepRCSP (YOLOR-CSP)"} <= set(found)
    base, reversed_ = found["base (YOLOR-W6)"], found["RCSP"]
    assert deploy_cost(base) == deploy_cost(reversed_)  # "exactly the same amount"
    flipped = {
        a.name
        for a, b in zip(base.nodes, reversed_.nodes, strict=True)
        if dataclasses.asdict(a.cfg) != dataclasses.asdict(b.cfg)
    }
    assert flipped and all(reversed_.node(n).cfg.reversed for n in flipped)
    outside = [x for x in get_layer_graph(base) if x.node not in flipped]
    rev_layers = {x.name: x for x in get_layer_graph(reversed_)}
    assert all(rev_layers[x.name] == x for x in outside)
    # RepRCSP: the reversed unit's 3x3 feeds a 1x1, so the rule keeps RepConv's identity
    reps = [x.op for x in get_layer_graph(found["RepRCSP"]) if type(x.op).__name__ == "RepConv"]
    assert reps and all(op.identity for op in reps)


@pytest.mark.parametrize(
    "name", ["table6_aux.yaml", "table7_constraint.yaml", "table8_partial_aux.yaml"]
)
def test_aux_tables_base_rows_train_without_the_aux_head(name):
    exp = experiment(name)
    for variant in exp.variants:
        changes = variant.changes
        assert not (changes.settings or changes.scale)
        assert variant.model is None
    base = exp.variants[0]
    # the base row drops the auxiliary head from the training graph, not its loss weight
    assert base.label.startswith("base") and base.changes.train == {"aux_head": False}
    assert all(v.changes.train.get("aux_head", True) for v in exp.variants[1:])
    assert all(v.changes.train.get("aux_weight", 0.25) > 0 for v in exp.variants)
    assert exp.train_config("paper")["img_size"] == 1280
    assert "left out" not in exp.description.lower()
    costs = {deploy_cost(graph) for graph in graphs(name).values()}
    assert len(costs) == 1  # the auxiliary head is dropped at deploy in every row


@pytest.mark.parametrize("name", ["table6_aux.yaml", "table7_constraint.yaml"])
def test_table6_7_rows_differ_only_in_training(name):
    assert not any(v.changes.fields for v in experiment(name).variants)


def _aux_inputs(graph) -> dict[str, tuple[str, ...]]:
    return {n.name: n.inputs for n in graph.nodes if n.name.startswith("aux")}


def test_table8_partial_aux_reads_one_cardinality_group_and_aux_the_merged_output():
    exp = experiment("table8_partial_aux.yaml")
    assert [v.label for v in exp.variants] == list(paper_rows(8))
    found = graphs("table8_partial_aux.yaml")
    merged = {"aux3": ("out3",), "aux4": ("td4",), "aux5": ("td5",), "aux6": ("spp",)}
    partial = {"aux3": ("out3.group1",), "aux4": ("td4.group1",), "aux5": ("td5.group1",)}
    assert _aux_inputs(found["aux"]) == merged
    assert _aux_inputs(found["partial aux"]) == {**merged, **partial}
    assert _aux_inputs(found["base (v7-E6E)"]) == _aux_inputs(found["partial aux"])
    # the rows differ only in the auxiliary convs' inputs and the training settings
    strip = [{n.name: (n.type, n.cfg) for n in g.nodes} for g in found.values()]
    assert all(s == strip[0] for s in strip)
    aux, partial_aux = found["aux"], found["partial aux"]
    assert {n.name for n in aux.nodes if n not in partial_aux.nodes} == {"aux3", "aux4", "aux5"}
    # same training-graph counts: a cardinality group is as wide as the merged output
    assert profile(aux).params == profile(partial_aux).params
    assert profile(aux).gflops == profile(partial_aux).gflops


@pytest.mark.parametrize("name", FILES)
def test_named_budgets_set_back_what_the_small_budget_changes(name):
    """``hyp`` merges key by key, so a gain raised for the CPU budget (the objectness gain at
    128 px, say) reaches ``--budget paper`` unless that budget sets it again."""
    exp = experiment(name)
    small = set(exp.train.get("hyp", {}))
    for budget, settings in exp.budgets.items():
        missing = sorted(small - set(settings.get("hyp", {})))
        assert not missing, f"{name}: budgets.{budget}.hyp inherits {missing} from train.hyp"
        # so would an optimizer chosen for the small budget (its lrs are in hyp, above)
        if "optimizer" in exp.train:
            assert "optimizer" in settings, f"{name}: budgets.{budget} inherits train.optimizer"


def test_a_budget_hyp_key_set_to_null_gives_each_row_its_own_recipe_again():
    base = {"epochs": 10, "hyp": {"mixup": 0.0, "lr0": 0.001}}
    merged = merge_train(base, {"epochs": 300, "hyp": {"mixup": None, "obj": 0.7}})
    assert merged == {"epochs": 300, "hyp": {"lr0": 0.001, "obj": 0.7}}
    paper = experiment("table2_peers.yaml").train_config("paper")
    assert paper["hyp"] == {} and paper["optimizer"] == "sgd"  # every row: its public recipe
