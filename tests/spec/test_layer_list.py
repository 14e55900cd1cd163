"""The YOLO layer-list importer: parameter counts of the original modules, rounding, errors.

The configs under tests/fixtures/layer_list/ were written for these tests. Each expected
count is summed layer by layer from the public implementations' module definitions (written
out below as small formulas), independently of our blocks and their lowering.
"""

import csv
from pathlib import Path

import pytest
import torch

from scaling_lab import count_graph, create_model, get_layer_graph
from scaling_lab.graph.block_graph import build_block_graph
from scaling_lab.models import resolve_spec
from scaling_lab.spec import SpecError, parse_spec
from scaling_lab.spec.layer_list import (
    MODULES,
    import_layer_list,
    load_layer_list,
    make_divisible,
    scale_repeats,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "layer_list"
REFERENCE_CFG = FIXTURES.parent / "reference_cfg"  # the reference's cfg/ tree, copied
REFERENCE_PARAMS = FIXTURES.parent / "reference_config_params.csv"  # its counts of them


def _reference_params() -> dict[str, int]:
    with open(REFERENCE_PARAMS) as f:
        rows = csv.DictReader(line for line in f if not line.startswith("#"))
        return {row["config"]: int(row["params"]) for row in rows}


# ---------------------------------------------------------------- the reference modules
# Conv = conv (no bias) + BatchNorm (weight, bias); the others as the public code builds them.


def conv(c_in, c_out, k=1, groups=1):
    return c_out * (c_in // groups) * k * k + 2 * c_out


def bottleneck(c_in, c_out, e=0.5):  # 1x1 to int(c_out * e), 3x3 to c_out
    hidden = int(c_out * e)
    return conv(c_in, hidden) + conv(hidden, c_out, 3)


def res(c_in, c_out, e=0.5, groups=1):  # 1x1, 3x3 (grouped), 1x1
    hidden = int(c_out * e)
    return conv(c_in, hidden) + conv(hidden, hidden, 3, groups) + conv(hidden, c_out)


def csp_a(c_in, c_out, units):  # C3 = BottleneckCSPA: cv1, cv2 on the input, cv3 on the concat
    hidden = c_out // 2
    return conv(c_in, hidden) + conv(c_in, hidden) + conv(2 * hidden, c_out) + units(hidden)


def csp_b(c_in, c_out, units):  # cv1 to c_out, cv2 on cv1's output, cv3
    return conv(c_in, c_out) + conv(c_out, c_out) + conv(2 * c_out, c_out) + units(c_out)


def csp_c(c_in, c_out, units):  # CSPA with a 1x1 (cv3) after the units
    hidden = c_out // 2
    return csp_a(c_in, c_out, units) + conv(hidden, hidden)


def dark_units(n):
    return lambda c: n * bottleneck(c, c, e=1.0)


def res_units(n, e=0.5, groups=1):
    return lambda c: n * res(c, c, e, groups)


def implicit_head(c_ins, n_out):  # IDetect: 1x1 conv with bias, ImplicitA(c_in), ImplicitM
    return sum(c * n_out + n_out + c + n_out for c in c_ins)


def plain_head(c_ins, n_out):  # Detect: 1x1 conv with bias per level
    return sum(c * n_out + n_out for c in c_ins)


def _import_and_count(path):
    spec = load_layer_list(path).spec
    model = create_model(spec)
    built = sum(p.numel() for p in model.parameters())
    assert count_graph(get_layer_graph(spec)).params == built
    return spec, built


# ---------------------------------------------------------------- exact parameter counts


def test_yolov5_style_config_gives_the_reference_count():
    # width 0.3: 64 -> 24, 128 -> 40, 256 -> 80, 512 -> 160; depth 0.33: 3 -> 1, 6 -> 2, 9 -> 3
    expected = (
        conv(3, 24, 6)  # 0 Conv [64, 6, 2, 2]
        + conv(24, 40, 3)  # 1 Conv [128, 3, 2]
        + csp_a(40, 40, dark_units(1))  # 2 C3 [128] x1
        + conv(40, 80, 3)  # 3
        + csp_a(80, 80, dark_units(2))  # 4 C3 [256] x2
        + conv(80, 160, 3)  # 5
        + csp_a(160, 160, dark_units(3))  # 6 C3 [512] x3
        + conv(160, 80)
        + conv(4 * 80, 160)  # 7 SPPF: 1x1 to 160 / 2, 1x1 from 4 x 80
        + conv(160, 80)  # 8 Conv [256, 1, 1]
        + csp_a(80 + 80, 80, dark_units(1))  # 11 C3 on cat(up, layer 4); no add (False)
        + conv(80, 80, 3)  # 12
        + csp_a(80 + 80, 160, dark_units(1))  # 14 C3 on cat(12, 8)
        + plain_head([80, 160], 2 * (3 + 5))  # 15 Detect: 2 anchors, 3 classes
    )
    spec, built = _import_and_count(FIXTURES / "v5_style.yaml")
    assert built == expected
    assert spec.img_size == 640 and spec.nc == 3 and len(spec.anchors) == 2


def test_yolov7_style_config_gives_the_reference_count():
    expected = (
        conv(12, 16, 3)  # 1 Conv on ReOrg (3 x 4 channels)
        + conv(16, 16)
        + conv(16, 16, 3)
        + conv(16, 16)  # 2 DownC [32]
        + csp_a(32, 32, dark_units(2))  # 3 BottleneckCSPA x2
        + conv(32, 32)
        + conv(32, 32)
        + conv(32, 32, 3)  # 5, 6, 7
        + csp_c(64, 64, dark_units(2))  # 9 BottleneckCSPC x2
        + bottleneck(64, 64)  # 10 Bottleneck [64]: 1x1 to 32, 3x3 to 64, + input
        + conv(64, 64, 3)  # 11
        # 12 SPPCSPC [32]: cv1, cv2 (1x1), cv3 3x3, cv4 1x1, cv5 1x1 on 4 x 32, cv6 3x3, cv7
        + 2 * conv(64, 32)
        + conv(32, 32, 3)
        + conv(32, 32)
        + conv(128, 32)
        + conv(32, 32, 3)
        + conv(64, 32)
        + csp_b(32 + 64, 48, dark_units(2))  # 17 BottleneckCSPB x2 on cat(up, 9)
        + conv(48, 48, 3)
        + conv(48, 48)
        + 2 * 48  # 18 RepConv 48 -> 48: identity BN
        + conv(32, 64, 3)
        + conv(32, 64)  # 19 RepConv 32 -> 64: no identity branch
        + implicit_head([48, 64], 3 * (2 + 5))  # 20 IDetect
    )
    spec, built = _import_and_count(FIXTURES / "v7_style.yaml")
    assert built == expected
    assert [n.type for n in spec.nodes][:3] == ["reorg", "conv", "downc"]


def test_csp_families_config_gives_the_reference_count():
    bare_csp = (  # BottleneckCSP [32] x2: bare cv2, cv3; BatchNorm (2 x 16 ch) on the concat
        conv(32, 16) + 32 * 16 + 16 * 16 + conv(32, 32) + 2 * 32 + dark_units(2)(16)
    )
    csp_f = conv(32, 16) + 32 * 16 + conv(32, 32) + 2 * 32 + dark_units(1)(16)  # no cv3
    csp_2 = conv(32, 32) + 32 * 32 + conv(64, 32) + 2 * 64 + dark_units(2)(32)  # hidden 32
    expected = (
        conv(12, 16, 3)  # 0 Focus [16, 3]
        + conv(16, 32, 3)  # 1
        + bare_csp  # 2
        + csp_f  # 3 BottleneckCSPF
        + csp_2  # 4 BottleneckCSP2 x2
        + csp_a(32, 32, res_units(1))  # 5 ResCSPA: Res units at e 0.5
        + csp_b(32, 32, res_units(2))  # 6 ResCSPB x2
        + csp_c(32, 32, res_units(1))  # 7 ResCSPC
        + csp_a(32, 64, res_units(1, e=1.0, groups=32))  # 8 ResXCSPA: e 1, groups 32
        + csp_b(64, 64, res_units(1, e=1.0, groups=32))  # 9 ResXCSPB
        + csp_c(64, 64, res_units(1, e=1.0, groups=32))  # 10 ResXCSPC
        + 2 * res(64, 64)  # 11 Res x2
        + res(64, 64, groups=32)  # 12 ResX
        + conv(64, 64, 3)  # 13
        + conv(64, 32)
        + conv(4 * 32, 64)  # 14 SPP (5, 9, 13)
        + csp_a(64, 64, dark_units(1))  # 15 C3 [64, False]
        + plain_head([64], 3 * (1 + 5))  # 16 Detect
    )
    _, built = _import_and_count(FIXTURES / "csp_families.yaml")
    assert built == expected


# ---------------------------------------------------------------- the reference's own configs


def test_every_reference_config_has_a_recorded_count():
    configs = sorted(p.relative_to(REFERENCE_CFG).as_posix() for p in REFERENCE_CFG.rglob("*.yaml"))
    assert len(configs) == 26
    assert sorted(_reference_params()) == configs


@pytest.mark.parametrize("config", sorted(_reference_params()))
def test_reference_config_imports_with_the_reference_params(config):
    spec = load_layer_list(REFERENCE_CFG / config).spec
    assert count_graph(get_layer_graph(spec)).params == _reference_params()[config]


def test_stem_and_residual_csp_config_builds_the_counted_module():
    stem = conv(3, 64, 3) + conv(64, 64) + conv(64, 64, 3) + conv(128, 128)  # Stem [128]
    spec, built = _import_and_count(REFERENCE_CFG / "baseline" / "r50-csp.yaml")
    assert spec.nodes[0].type == "stem" and spec.nodes[0].fields == {"c": 128}
    first = sum(
        c.params
        for c, layer in zip(count_graph(get_layer_graph(spec)).per_layer, get_layer_graph(spec))
        if layer.node == spec.nodes[0].name
    )
    assert first == stem
    assert built == _reference_params()["baseline/r50-csp.yaml"]


LIST_ARGS = """\
nc: 1
anchors:
  - [10,13, 16,30]
backbone:
  [[-1, 1, Conv, [16, [3, 3], [2, 2], [1, 1]]],
   [-1, 1, MP, [[2, 2]]],
   [-1, 1, DownC, [32, [2, 2]]],
  ]
head:
  [[-1, 1, Conv, [32, [1, 1]]],
   [[-1], 1, Detect, [nc, anchors]],
  ]
"""


def test_square_list_arguments_are_integers():
    spec = import_layer_list(LIST_ARGS, source="pairs.yaml").spec
    first, pool, down, last = spec.nodes[:4]
    assert first.fields == {"c": 16, "k": 3, "s": 2} and pool.type == "maxpool"
    assert down.type == "downc" and "k" not in down.fields and "k" not in last.fields
    expected = conv(3, 16, 3) + conv(16, 16) + conv(16, 16, 3) + conv(16, 16) + conv(32, 32)
    assert count_graph(get_layer_graph(spec)).params == expected + plain_head([32], 2 * 6)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("[16, [3, 3], [2, 2], [1, 1]]", "[16, [1, 3]]", "argument 'k' [1, 3] is not square"),
        ("[16, [3, 3], [2, 2], [1, 1]]", "[16, 3, [2, 1]]", "argument 's' [2, 1] is not square"),
        ("[16, [3, 3], [2, 2], [1, 1]]", "[16, [3, 3, 3]]", "'k' must be an integer or a pair"),
        ("MP, [[2, 2]]", "SP, [[3, 3]]", "argument 'k' must be a non-negative integer"),
    ],
)
def test_list_arguments_that_are_refused(old, new, message):
    with pytest.raises(SpecError, match=message.replace("[", r"\[").replace("]", r"\]")):
        import_layer_list(LIST_ARGS.replace(old, new), source="pairs.yaml")


AUX = """\
nc: 1
depth_multiple: 1.0
width_multiple: 1.0
anchors:
  - [10,13, 16,30]
backbone:
  [[-1, 1, Conv, [16, 3, 2, None, 1, nn.LeakyReLU(0.1)]],
   [-1, 2, Conv, [10, 3, 1]],
   [-1, 1, Bottleneck, [32]],
   [-1, 1, Conv, [32, 3, 2]],
  ]
head:
  [[-1, 1, Conv, [32, 3, 1]],
   [3, 1, Conv, [16, 3, 1]],
   [[4, 5], 1, IAuxDetect, [nc, anchors]],
  ]
"""


def test_repeats_activations_unequal_bottleneck_and_aux_head():
    imported = import_layer_list(AUX, source="aux.yaml")
    n_out = 2 * (1 + 5)
    expected = (
        conv(3, 16, 3)
        + conv(16, 16, 3)
        + conv(16, 16, 3)  # x2 copies; 10 channels round up to 16
        + bottleneck(16, 32)  # c_in != c_out: the convs, no add
        + conv(32, 32, 3)
        + conv(32, 32, 3)
        + conv(32, 16, 3)
        + implicit_head([32], n_out)
        + plain_head([16], n_out)  # lead + auxiliary convs
    )
    model = create_model(imported.spec)
    assert sum(p.numel() for p in model.parameters()) == expected
    first = imported.spec.nodes[0]
    assert first.fields["act"] == "leaky_relu" and first.fields["s"] == 2
    assert [n.type for n in imported.spec.nodes].count("conv") == 8  # 1 + 2 + 2 + 1 + 2
    assert imported.spec.nodes[-1].type == "aux_detect"
    # the deploy graph drops the auxiliary conv (and the node that only fed it)
    deploy = count_graph(get_layer_graph(imported.spec, deploy=True))
    assert deploy.params < count_graph(get_layer_graph(imported.spec)).params


# ---------------------------------------------------------------- rounding rules


def test_width_rounds_up_to_multiples_of_8_and_depth_uses_python_round():
    assert [make_divisible(c * 0.3) for c in (64, 128, 256, 512)] == [24, 40, 80, 160]
    assert make_divisible(12 * 1.0) == 16
    assert [scale_repeats(n, 0.33) for n in (1, 3, 6, 9)] == [1, 1, 2, 3]
    assert [scale_repeats(n, 0.67) for n in (3, 9)] == [2, 6]
    assert [scale_repeats(n, 1.33) for n in (3, 9)] == [4, 12]
    assert scale_repeats(5, 0.5) == 2  # round half to even, as Python's round
    assert scale_repeats(2, 0.1) == 1  # never below 1


def test_head_width_is_not_scaled():
    text = (
        (FIXTURES / "v5_style.yaml")
        .read_text()
        .replace("[-1, 1, Conv, [256, 1, 1]],", "[-1, 1, Conv, [16, 1, 1]],")
    )  # 16 = 2 anchors x (3 + 5): the head's output width stays 16, not 8
    spec = import_layer_list(text, source="head.yaml").spec
    assert spec.nodes[8].fields["c"] == 16


# ---------------------------------------------------------------- spec text and CLI


@pytest.mark.parametrize("name", ["v5_style", "v7_style", "csp_families"])
def test_spec_text_builds_the_same_graph(name):
    imported = load_layer_list(FIXTURES / f"{name}.yaml")
    from_text = build_block_graph(parse_spec(imported.text, source="imported.yaml"))
    direct = build_block_graph(imported.spec)
    assert from_text.nodes == direct.nodes
    assert (from_text.nc, from_text.anchors, from_text.act) == (
        direct.nc,
        direct.anchors,
        direct.act,
    )
    assert "# 0: " in imported.text  # each node names the config layer it came from


def test_node_names_are_readable_and_unique():
    spec = load_layer_list(FIXTURES / "v5_style.yaml").spec
    names = [n.name for n in spec.nodes]
    assert len(set(names)) == len(names)
    assert names[:5] == ["down_p1", "down_p2", "c3_p2", "down_p3", "c3_p3"]
    assert names[-1] == "detect" and "sppf_p4" in names and "up_p3" in names


def test_profile_detects_a_layer_list_config():
    spec = resolve_spec(FIXTURES / "v7_style.yaml")
    assert spec.name == "v7_style" and spec.nodes[-1].type == "detect"
    layers = get_layer_graph(str(FIXTURES / "v7_style.yaml"), img_size=64)
    model = create_model(str(FIXTURES / "v7_style.yaml"), img_size=64).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 64, 64))
    assert out.shape == (1, 3 * (8 * 8 + 4 * 4), 2 + 5) and len(layers) > 20


def test_cli_import_and_profile(tmp_path, capsys):
    from scaling_lab.cli import main

    config = FIXTURES / "v5_style.yaml"
    assert main(["import", str(config)]) == 0
    printed = capsys.readouterr().out
    out = tmp_path / "spec.yaml"
    assert main(["import", str(config), "--out", str(out), "--name", "mine"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert printed.replace("name: v5_style", "name: mine") == out.read_text()
    assert main(["profile", str(config), "--json"]) == 0
    direct = capsys.readouterr().out
    assert main(["profile", str(out), "--json"]) == 0
    assert direct.replace('"v5_style"', '"mine"') == capsys.readouterr().out


# ---------------------------------------------------------------- errors name the layer

BASE = """\
nc: 1
depth_multiple: 1.0
width_multiple: 1.0
anchors:
  - [10,13, 16,30]
backbone:
  [[-1, 1, Conv, [16, 3, 2]],
   [-1, 1, Conv, [32, 3, 2]],
   LAYER
  ]
head:
  [[-1, 1, Conv, [32, 3, 2]],
   [[-1], 1, Detect, [nc, anchors]],
  ]
"""


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        ("[-1, 1, C2f, [64]],", "layer 2 (C2f): unknown module 'C2f' (supported: Conv, "),
        ("[5, 1, Conv, [16]],", "layer 2 (Conv): from index 5 does not name an earlier layer"),
        ("[-3, 1, Conv, [16]],", "layer 2 (Conv): from index -3 does not name an earlier layer"),
        ("[[-1, 9], 1, Concat, [1]],", "layer 2 (Concat): from index 9 does not name"),
        (
            "[-1, 1, Conv, [16, 3, 1, None, 1, True, 7]],",
            "layer 2 (Conv): takes 1 to 6 args [c_out, k, s, p, groups, act], got 7",
        ),
        ("[-1, 1, Conv, []],", "layer 2 (Conv): takes 1 to 6 args"),
        ("[-1, 1, nn.Upsample, [None]],", "layer 2 (nn.Upsample): takes 2 to 3 args"),
        ("[-1, 1, MP, [2, 2]],", "layer 2 (MP): takes 0 to 1 args [k], got 2"),
        ("[-1, 1, Conv, [16, 3.5]],", "layer 2 (Conv): argument 'k' must be a non-negative"),
        ("[-1, 0, Conv, [16]],", "layer 2 (Conv): number must be a positive integer, got 0"),
        ("[-1, 2, Concat, [1]],", "layer 2 (Concat): number must be 1 for this module"),
        ("[[-1, -2], 1, Conv, [16]],", "layer 2 (Conv): takes one input, got from [1, 0]"),
        ("[-1, 1, Conv, [16, 3, 1, None, 1, nn.GELU()]],", "unsupported activation 'nn.GELU()'"),
        ("[-1, Conv, [16]],", "layer 2: expected [from, number, module, args]"),
    ],
)
def test_errors_name_layer_and_module(layer, message):
    with pytest.raises(SpecError) as info:
        import_layer_list(BASE.replace("LAYER", layer), source="bad.yaml")
    text = str(info.value)
    assert message in text
    assert text.startswith("bad.yaml:9: ")  # the line of the layer in the config


def test_other_config_errors():
    with pytest.raises(SpecError, match="needs 'backbone' and 'head' lists"):
        import_layer_list("nc: 3\n", source="x.yaml")
    bad_anchors = BASE.replace("LAYER", "").replace("  - [10,13, 16,30]", "  - [10,13, 16]")
    with pytest.raises(SpecError, match="field 'anchors'"):
        import_layer_list(bad_anchors, source="x.yaml")
    wrong_nc = BASE.replace("LAYER", "").replace("[nc, anchors]", "[20, anchors]")
    with pytest.raises(SpecError, match=r"layer 3 \(Detect\): class count 20 differs"):
        import_layer_list(wrong_nc, source="x.yaml")
    no_head = BASE.replace("LAYER", "").replace("   [[-1], 1, Detect, [nc, anchors]],\n", "")
    with pytest.raises(SpecError, match="last layer must be Detect"):
        import_layer_list(no_head, source="x.yaml")


def test_cli_error_is_one_line_with_exit_2(tmp_path, capsys):
    from scaling_lab.cli import main

    path = tmp_path / "bad.yaml"
    path.write_text(BASE.replace("LAYER", "[-1, 1, C2f, [64]],"))
    assert main(["import", str(path)]) == 2
    assert main(["profile", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("layer 2 (C2f): unknown module" in line for line in err)


def test_every_module_in_the_table_is_documented():
    from scaling_lab.spec import layer_list

    assert set(MODULES) >= {
        "Conv", "Concat", "MP", "SP", "SPPCSPC", "SPPF", "RepConv", "Shortcut", "DownC",
        "ReOrg", "BottleneckCSP", "BottleneckCSPA", "BottleneckCSPB", "BottleneckCSPC",
        "ResCSPA", "C3", "Focus", "nn.Upsample", "Detect", "IDetect", "IAuxDetect", "Stem",
    }  # fmt: skip
    assert layer_list.__doc__ and "parse_model" in layer_list.__doc__


def test_anchor_count_gives_placeholder_anchors():
    text = BASE.replace("LAYER", "").replace("anchors:\n  - [10,13, 16,30]\n", "anchors: 3\n")
    spec = import_layer_list(text, source="count.yaml").spec
    assert spec.anchors == ((1.0,) * 6,)
    head = count_graph(get_layer_graph(spec)).per_layer[-1]
    assert head.params == plain_head([32], 3 * (1 + 5))
