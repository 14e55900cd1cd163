"""Experiment specs: what loads, and every mistake rejected before a trial starts."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd
import pytest

from scaling_lab.errors import UserError
from scaling_lab.sweep.experiment import load_experiment
from scaling_lab.sweep.experiment_format import planned_epochs
from scaling_lab.sweep.materialize import Overrides, materialize
from scaling_lab.sweep.space import parse_constraint, parse_distribution
from scaling_lab.sweep.trial_keys import params_key, trial_key
from scaling_lab.train.config import TrainConfig

HERE = Path(__file__).parent

SEARCH = """\
base: yolov7-tiny
metrics: [params, gflops, AP]
search:
  space:
    elan2.depth: {type: int, low: 1, high: 3}
    scale.width: {type: float, low: 0.25, high: 0.5, step: 0.25}
    repconv: {type: categorical, choices: [none, planned]}
  trials: 4
  objectives: {AP: max, params: min}
  constraints: ["params <= 4e6"]
train: {data: synth, epochs: 1}
"""


def write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_search_experiment_loads_with_its_parts(tmp_path):
    exp = load_experiment(write(tmp_path, SEARCH))
    assert exp.kind == "search" and exp.name == "exp"
    assert exp.search.objectives == {"AP": "max", "params": "min"}
    assert exp.search.sampler == "nsga2"  # several objectives: NSGA-II by default
    assert [str(c) for c in exp.constraints] == ["params <= 4e+06"]
    assert exp.columns() == ("params", "params_m", "gmacs", "gflops", *exp.columns()[4:])
    assert "AP" in exp.columns() and "AP" not in exp.columns(profile_only=True)


def test_variants_get_keys_in_declared_order():
    exp = load_experiment(HERE / "tiny_train.yaml")
    assert [v.key for v in exp.variants] == [
        "00-base",
        "01-planned-repconv",
        "02-silu",
        "03-narrow",
    ]
    assert exp.baseline == "base" and exp.against == "narrow"
    assert exp.variants[1].changes == Overrides(settings={"repconv": "planned"})
    assert exp.variants[3].changes.scale == {"width": 0.5, "mode": "width"}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("elan2.depth", "elan9.depth"), "unknown node path 'elan9.depth': no node 'elan9'"),
        (("elan2.depth", "elan2.width"), "block 'elan' has no field 'width'"),
        (("elan2.depth", "zz*.act"), "no node matching 'zz*' has a field 'act'"),
        (
            ("type: int, low: 1", "type: gauss, low: 1"),
            "'search.space.elan2.depth.type': must be one of 'int'",
        ),
        (("low: 1, high: 3", "low: 3, high: 1"), "'low' (3) must be below 'high' (1)"),
        (("step: 0.25", "step: 0.25, log: true"), "'step' and 'log: true' cannot be combined"),
        (("choices: [none, planned]", "choices: []"), "non-empty list 'choices'"),
        (
            ("metrics: [params, gflops, AP]", "metrics: [params, mAP]"),
            "'metrics[1]': must be one of 'params', 'gmacs'",
        ),
        (("params: min}", "latency: min}"), "objective 'latency_ms' is not collected"),
        (("params <= 4e6", "weight <= 4e6"), "constraint on unknown metric 'weight'"),
        (("params <= 4e6", "params about 4e6"), "expected 'METRIC OP NUMBER'"),
        (("trials: 4", "trials: 0"), "must be an integer >= 1"),
        (("{AP: max", "{AP: up"), "'search.objectives.AP': must be one of 'max', 'min', got 'up'"),
        (("epochs: 1}", "epochs: 1, lr: 3}"), ":11: field 'train': unknown key 'lr' (known: data,"),
        (("epochs: 1}", "epochs: 0}"), ":11: field 'train.epochs': must be >= 1, got 0"),
        (("trials: 4", "trials: four"), ":8: field 'search.trials': must be int, got 'four'"),
        (("base: yolov7-tiny", "base: yolov99"), "yolov99"),
    ],
)
def test_bad_experiments_are_rejected_with_a_clear_error(tmp_path, edit, message):
    old, new = edit
    assert old in SEARCH
    path = write(tmp_path, SEARCH.replace(old, new))
    with pytest.raises(UserError) as info:
        exp = load_experiment(path)
        exp.check_runnable(profile_only=False)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_objective_on_ap_is_refused_for_a_profile_only_run(tmp_path):
    exp = load_experiment(write(tmp_path, SEARCH))
    with pytest.raises(UserError, match=r"objective 'AP' is not collected \(--profile-only"):
        exp.check_runnable(profile_only=True)


def test_a_search_value_a_block_refuses_is_caught_before_any_trial(tmp_path):
    text = SEARCH.replace(
        "elan2.depth: {type: int, low: 1, high: 3}", "elan2.tap_every: {type: int, low: 1, high: 9}"
    )
    with pytest.raises(UserError, match="elan2"):
        load_experiment(write(tmp_path, text))


@pytest.mark.parametrize(
    ("variants", "message"),
    [
        ("  - label: a\n  - label: a\n", "duplicate label 'a'"),
        ("  - label: a\n    overrides: {elan2.depht: 3}\n", "no field 'depht'"),
        ("  - label: a\n    overrides: {elan2.depth: two}\n", "must be int"),
        ("  - label: a\n    scale: {depth: -1}\n", "'depth' must be > 0"),
        ("  - label: a\n    colour: red\n", ":4: field 'variants\\[0\\]': unknown key 'colour'"),
        ("  - label: a\n    overrides: {widths: 2}\n", "unknown override 'widths'"),
        (
            "  - a\n  - label: b\n    scale: {depht: 2}\n",
            ":5: field 'variants\\[1\\].scale': unknown key",
        ),
        (
            "  - label: a\n    overrides: {elan9.depth: 2}\n",
            ":3: field 'elan9.depth': unknown node path 'elan9.depth'",
        ),
        ("  - model: yolov7\n", "field 'variants\\[0\\]': required key 'label' missing"),
    ],
)
def test_bad_variants_are_rejected(tmp_path, variants, message):
    text = f"base: yolov7-tiny\nvariants:\n{variants}"
    path = write(tmp_path, text)
    with pytest.raises(UserError, match=message) as info:
        load_experiment(path)
    assert str(info.value).startswith(str(path))


def test_variants_and_search_are_exclusive(tmp_path):
    text = SEARCH + "variants: [a]\n"
    with pytest.raises(UserError, match="not both"):
        load_experiment(write(tmp_path, text))


def test_unknown_top_level_key_names_its_line(tmp_path):
    path = write(tmp_path, SEARCH + "schedular: asha\n")
    with pytest.raises(UserError) as info:
        load_experiment(path)
    assert "unknown key 'schedular'" in str(info.value)
    assert f"{path}:12" in str(info.value)


def test_unknown_budget_is_named(tmp_path):
    exp = load_experiment(write(tmp_path, SEARCH))
    with pytest.raises(UserError, match="unknown budget 'paper'"):
        exp.train_config("paper")


def test_budget_is_laid_over_train_settings(tmp_path):
    text = SEARCH + "budgets:\n  big: {epochs: 300, hyp: {lr0: 0.02}}\n"
    text = text.replace(
        "train: {data: synth, epochs: 1}", "train: {data: synth, epochs: 1, hyp: {lrf: 0.1}}"
    )
    exp = load_experiment(write(tmp_path, text))
    assert exp.train_config("big") == {
        "data": "synth",
        "epochs": 300,
        "hyp": {"lrf": 0.1, "lr0": 0.02},
    }
    assert exp.train_config() == {"data": "synth", "epochs": 1, "hyp": {"lrf": 0.1}}


def test_overrides_set_every_matching_node_and_scale_comes_last():
    from scaling_lab.models import get_block_graph

    base = get_block_graph("yolov7-tiny")
    changes = {"elan*.depth": 3, "act": "silu", "scale.width": 0.5, "scale.mode": "width"}
    graph = materialize(base, Overrides.from_paths(changes))
    depths = {n.name: n.cfg.depth for n in graph.nodes if n.type == "elan"}
    assert {depths[f"elan{i}"] for i in range(1, 5)} == {3}
    assert depths["td4"] == base.node("td4").cfg.depth == 2  # not matched by elan*
    assert graph.act == "silu"
    assert graph.node("elan4").cfg.c_out == base.node("elan4").cfg.c_out // 2
    assert base.node("elan2").cfg.depth == 2  # the base is never changed


def test_overrides_sort_paths_by_what_they_change_and_lay_over_each_other():
    paths = {
        "repconv": "planned",
        "elan2.depth": 3,
        "scale.depth": 1.5,
        "train.aux_weight": 0.5,
        "train.hyp.lr0": 0.02,
    }
    split = Overrides.from_paths(paths)
    assert split.settings == {"repconv": "planned"}
    assert split.fields == {"elan2.depth": 3}
    assert split.scale == {"depth": 1.5}
    assert split.train == {"aux_weight": 0.5, "hyp": {"lr0": 0.02}}
    assert split.paths() == paths  # the record's flat form reads back the same
    top = Overrides.from_paths({"train.hyp.lrf": 0.1, "elan2.depth": 4})
    laid = split.over(top)
    assert laid.train == {"aux_weight": 0.5, "hyp": {"lr0": 0.02, "lrf": 0.1}}
    assert laid.fields == {"elan2.depth": 4}


def test_a_variants_repconv_scale_and_train_keys_win_over_its_override_paths(tmp_path):
    text = (
        "base: yolov7-tiny\nvariants:\n  - label: a\n"
        "    overrides: {repconv: all, scale.width: 0.25, train.epochs: 9, elan2.depth: 3}\n"
        "    repconv: planned\n    scale: {width: 0.5}\n    train: {epochs: 2}\n"
    )
    (variant,) = load_experiment(write(tmp_path, text), check_graphs=False).variants
    assert variant.changes == Overrides(
        settings={"repconv": "planned"},
        fields={"elan2.depth": 3},
        scale={"width": 0.5},
        train={"epochs": 2},
    )


def test_distribution_maps_to_the_same_optuna_distribution():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    dist = parse_distribution({"type": "int", "low": 1, "high": 4, "step": 1}, path="p", source="s")
    assert dist.to_optuna() == IntDistribution(1, 4, step=1)
    dist = parse_distribution(
        {"type": "float", "low": 0.1, "high": 1.0, "log": True}, path="p", source="s"
    )
    assert dist.to_optuna() == FloatDistribution(0.1, 1.0, log=True)
    dist = parse_distribution({"type": "categorical", "choices": ["a", "b"]}, path="p", source="s")
    assert dist.to_optuna() == CategoricalDistribution(["a", "b"])
    assert dist.corners() == ["a", "b"]


def test_constraint_holds_only_on_the_right_side():
    constraint = parse_constraint("params <= 40e6", source="s", known=("params",))
    assert constraint.holds(40e6) and not constraint.holds(40e6 + 1)
    assert not constraint.holds(None)
    assert parse_constraint("gflops > 1_0", source="s", known=("gflops",)).bound == 10


def test_params_key_is_stable_and_distinguishes_configs():
    assert params_key({"a": 1, "b": "x"}) == params_key({"b": "x", "a": 1})
    assert params_key({"a": 1}) != params_key({"a": 2})


def test_trial_key_names_a_variant_by_its_key_and_a_search_trial_by_its_sampled_values(tmp_path):
    grid = load_experiment(HERE / "tiny_train.yaml", check_graphs=False)
    assert trial_key(grid, {"variant": "02-silu"}) == "02-silu"
    search = load_experiment(write(tmp_path, SEARCH), check_graphs=False)
    sampled = {"elan2.depth": 2, "scale.width": 0.5, "repconv": "none"}
    key = trial_key(search, {**sampled, "other": 1})  # Ray's config holds more keys
    assert key == params_key(sampled) and key.startswith("s-")


def test_cli_reports_a_bad_experiment_in_one_line(tmp_path, capsys):
    from scaling_lab.cli import main

    path = write(tmp_path, SEARCH.replace("elan2.depth", "elan9.depth"))
    assert main(["sweep", str(path), "--storage", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown node path 'elan9.depth'" in err
    assert not (tmp_path / "runs").exists()  # rejected before anything started


def test_cli_report_without_results_and_with_a_bad_format(tmp_path, capsys):
    from scaling_lab.cli import main

    path = write(tmp_path, SEARCH)
    assert main(["report", str(path), "--reports", str(tmp_path)]) == 2
    assert "run `lab sweep` first" in capsys.readouterr().err
    assert main(["report", str(path), "--format", "md,docx"]) == 2
    assert "unknown format(s) docx" in capsys.readouterr().err


def test_asha_is_built_from_the_experiment(tmp_path):
    from ray.tune.schedulers import ASHAScheduler

    from scaling_lab.sweep.runner import _scheduler, _trained_to_the_end

    text = SEARCH + "scheduler: {type: asha, metric: AP50, grace_period: 2}\n"
    exp = load_experiment(write(tmp_path, text), check_graphs=False)
    with pytest.raises(UserError, match=r"grace_period \(2\) is longer than .* \(1 epochs\)"):
        exp.check_runnable(profile_only=False)
    scheduler = _scheduler(exp, {**exp.train_config(), "epochs": 8})
    assert isinstance(scheduler, ASHAScheduler)
    assert (scheduler._metric, scheduler._mode, scheduler._max_t) == ("AP50", "max", 8)
    assert [rung for rung, _ in scheduler._brackets[0]._rungs] == [8, 4, 2]  # grace 2, halving
    # ASHA stops every trial at max_t: a trial that trained all its epochs is finished
    assert _trained_to_the_end({"epochs_done": 8}, planned=8)
    assert not _trained_to_the_end({"epochs_done": 4}, planned=8)
    assert _trained_to_the_end({"epochs_done": 2, "train_settings": '{"epochs": 2}'}, planned=8)


@pytest.mark.parametrize(
    ("scheduler", "message"),
    [
        ("{type: hyperband}", ":12: field 'scheduler.type': must be one of 'asha', got 'hyp"),
        ("{type: asha, grace: 2}", ":12: field 'scheduler': unknown key 'grace' \\(known: type,"),
        ("often", "field 'scheduler': must be a mapping \\(Scheduler\\) or one of 'none', 'asha'"),
        ("{type: asha, metric: params}", "ASHA ranks trials by a per-epoch metric"),
        ("{type: asha, reduction_factor: 1}", "must be >= 2"),
    ],
)
def test_bad_scheduler_is_rejected(tmp_path, scheduler, message):
    with pytest.raises(UserError, match=message):
        load_experiment(write(tmp_path, SEARCH + f"scheduler: {scheduler}\n"), check_graphs=False)


def test_a_variants_training_settings_are_checked_up_front(tmp_path):
    text = (
        "base: yolov7-tiny\ntrain: {data: synth}\n"
        "variants:\n  - label: a\n    train: {aux_assigner: nonsense}\n"
    )
    with pytest.raises(
        UserError, match=r":5: field 'variants\[0\].train.aux_assigner': must be one"
    ):
        load_experiment(write(tmp_path, text))
    text = text.replace("aux_assigner: nonsense", "not_a_field: 3")
    with pytest.raises(UserError, match=r"field 'variants\[0\].train': unknown key 'not_a_field'"):
        load_experiment(write(tmp_path, text))
    # a row's setting that only a budget's makes invalid, and a path override
    text = text.replace("not_a_field: 3", "nominal_batch: 0")
    with pytest.raises(
        UserError, match=r":4: field 'variants\[0\].train.nominal_batch': must be >= 1"
    ):
        load_experiment(write(tmp_path, text))
    text = text.replace("train: {nominal_batch: 0}", "overrides: {train.epochs: 0}")
    with pytest.raises(UserError, match=r":4: field 'variants\[0\].train.epochs': must be >= 1"):
        load_experiment(write(tmp_path, text))


def test_repeats_give_each_seed_its_own_trial_key(tmp_path):
    text = (HERE / "tiny_train.yaml").read_text() + "seeds: 3\n"
    text = text.replace("  epochs: 3\n", "  epochs: 3\n  seed: 7\n")
    exp = load_experiment(write(tmp_path, text), check_graphs=False)
    trials = exp.trial_keys()
    assert list(trials)[:3] == ["00-base-seed7", "00-base-seed8", "00-base-seed9"]
    assert len(trials) == 12 and {seed for _, seed in trials.values()} == {7, 8, 9}
    assert trials["03-narrow-seed8"][0].label == "narrow"
    assert trial_key(exp, {"variant": "01-planned-repconv-seed9"}) == "01-planned-repconv-seed9"
    # counts do not depend on the seed: a profile-only sweep runs every design once
    assert (
        exp.trial_keys(profile_only=True) == {v.key: (v, None) for v in exp.variants}
        and exp.repeats(profile_only=True) == 1
    )


def test_the_committed_reports_keys_are_their_experiments_trial_keys():
    root = HERE.parents[1]
    checked = 0
    for results in sorted(root.glob("reports/*/results.csv")):
        experiment = root / "experiments" / f"{results.parent.name}.yaml"
        if not experiment.is_file():
            continue
        exp = load_experiment(experiment, check_graphs=False)
        rows = pd.read_csv(results)
        keys = set(rows.loc[rows["kind"] == "variant", "key"])
        assert keys <= set(exp.trial_keys(False)), results
        if exp.seeds == 1:  # one seed keeps a row's key its variant's own (as before repeats)
            assert keys <= set(exp.trial_keys(True)), results
            assert all(key in {v.key for v in exp.variants} for key in keys)
        else:  # repeats: one key per row and seed, every seed of every row reported
            assert len(keys) == exp.seeds * len(exp.variants), results
        checked += 1
    assert checked >= 3


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("seeds: 0\n", "from 1 to 100"),
        ("seeds: 101\n", "MAX_SEEDS"),
        ("seeds: two\n", "seeds"),
    ],
)
def test_bad_seeds_are_refused(tmp_path, extra, message):
    text = (HERE / "tiny_train.yaml").read_text() + extra
    with pytest.raises(UserError, match=message):
        load_experiment(write(tmp_path, text), check_graphs=False)


def test_a_search_refuses_repeats(tmp_path):
    with pytest.raises(UserError, match="not to a search"):
        load_experiment(write(tmp_path, SEARCH + "seeds: 2\n"), check_graphs=False)


def test_a_sweep_plans_train_configs_default_epochs():
    """Settings without ``epochs`` train TrainConfig's default, which the sweep's scheduler,
    rungs and checks read from there."""
    assert planned_epochs({}) == TrainConfig(model="-", data="synth").epochs
    assert planned_epochs({"epochs": 7}) == 7
