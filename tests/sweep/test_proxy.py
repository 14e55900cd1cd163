"""``proxy:`` in an experiment: models scaled down by the project's scaling transform before
they train, block structure kept, factors stated in the table's note."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from scaling_lab.errors import UserError
from scaling_lab.report.sweep_report import _proxy_note
from scaling_lab.sweep.experiment import load_experiment
from scaling_lab.sweep.experiment_graphs import training_graph, variant_graph
from scaling_lab.transforms.scale import scale

TABLE = """\
base: BASE
metrics: [params, AP]
variants:
  - label: base
  - label: deeper
    overrides: {OVERRIDE}
train: {data: synth, img_size: 128, epochs: 1}
proxy: PROXY
"""


def _load(tmp_path, proxy: str, base: str = "yolov7-tiny", override: str = "elan2.depth: 4"):
    path = tmp_path / "proxy.yaml"
    text = TABLE.replace("BASE", base).replace("OVERRIDE", override).replace("PROXY", proxy)
    path.write_text(text)
    return load_experiment(path)


def test_the_proxy_is_the_scale_transform_depth_then_width(tmp_path):
    experiment = _load(tmp_path, "{width: 0.5, depth: 0.5}")
    assert experiment.proxy.describe() == "width 0.5, depth 0.5"
    full = variant_graph(experiment, experiment.variants[1])
    want = scale(scale(full, depth=0.5, mode="depth"), width=0.5, mode="width")
    got = training_graph(experiment, full)
    assert [(n.name, n.cfg) for n in got.nodes] == [(n.name, n.cfg) for n in want.nodes]
    assert got.node("elan2").cfg.depth == 2 and full.node("elan2").cfg.depth == 4
    no_proxy = _load(tmp_path, "null")
    assert training_graph(no_proxy, full) is full
    assert training_graph(experiment, full, "paper") is full  # a named budget: full size


def test_a_proxy_keeps_the_auxiliary_head_and_block_types(tmp_path):
    experiment = _load(tmp_path, "{width: 0.25}", base="yolov7-e6", override="act: silu")
    full = variant_graph(experiment, experiment.variants[0])
    proxy = training_graph(experiment, full)
    assert [(n.name, n.type, n.inputs) for n in proxy.nodes] == [
        (n.name, n.type, n.inputs) for n in full.nodes
    ]
    assert any(n.type == "aux_detect" for n in proxy.nodes)
    assert proxy.node("stem").cfg.c < full.node("stem").cfg.c


@pytest.mark.parametrize(
    ("proxy", "message"),
    [
        ("{width: 1.5}", r":8: field 'proxy.width': a proxy is smaller: a factor in \(0, 1\]"),
        ("{width: 0}", r":8: field 'proxy.width': a proxy is smaller"),
        ("{widht: 0.5}", r":8: field 'proxy': unknown key 'widht' \(known: width, depth, heads\)"),
        ("{depth: half}", r":8: field 'proxy.depth': must be float"),
    ],
)
def test_bad_proxies_are_refused_with_file_and_line(tmp_path, proxy, message):
    with pytest.raises(UserError, match=message):
        _load(tmp_path, proxy)


def test_rows_the_proxy_would_make_identical_are_refused(tmp_path):
    """elan2 at depth 1 and 2 both become depth 1 at half depth: the ablation would vanish."""
    with pytest.raises(UserError) as info:
        _load(tmp_path, "{depth: 0.5}", override="elan2.depth: 1")
    text = str(info.value)
    assert "proxy.yaml:5: field 'proxy'" in text  # the second row's line
    assert (
        "variants 'base' and 'deeper' train different models at full size but the same proxy"
        in text
    )


def test_the_tables_note_states_the_factors():
    frame = pd.DataFrame({"proxy": [json.dumps({"depth": 1.0, "width": 0.25}), None]})
    note = _proxy_note(frame)
    assert note.startswith("AP: proxy models, each row's model scaled by width 0.25 (")
    assert "#Param. and FLOPs: the full-size models" in note
    assert _proxy_note(pd.DataFrame({"params": [1]})) == ""


def test_a_proxy_with_heads_shrinks_the_decoupled_head_and_leaves_detect_alone(tmp_path):
    experiment = _load(tmp_path, "{width: 0.25, heads: true}", base="yolox-s", override="act: relu")
    assert experiment.proxy.describe() == "width 0.25, depth 1, heads"
    full = variant_graph(experiment, experiment.variants[0])
    head = next(n.name for n in full.nodes if n.block.head)
    assert full.node(head).cfg.c == 128  # 256 x YOLOX-S's width multiple 0.5
    assert training_graph(experiment, full).node(head).cfg.c == 32
    without = _load(tmp_path, "{width: 0.25}", base="yolox-s", override="act: relu")
    assert training_graph(without, full).node(head).cfg.c == 128  # the default: heads fixed
    # the YOLO Detect head has no width of its own: heads: true changes nothing there
    v7 = _load(tmp_path, "{width: 0.25, heads: true}")
    v7_full = variant_graph(v7, v7.variants[0])
    assert [n.cfg for n in training_graph(v7, v7_full).nodes] == [
        n.cfg for n in scale(v7_full, width=0.25, mode="width").nodes
    ]
