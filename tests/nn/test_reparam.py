"""Re-parameterization: each fusion rule against plain torch, then every zoo model end to end."""

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

import scaling_lab
from scaling_lab import count_graph, create_model, get_layer_graph, list_models, ops
from scaling_lab.analyze.fuse_check import fuse_check, randomize_
from scaling_lab.graph.lower import max_stride
from scaling_lab.layers.fuse import deploy_layer_graph, drop_aux_layers
from scaling_lab.nn import build_module
from scaling_lab.nn.reparam import reparameterize
from scaling_lab.ops import modules
from scaling_lab.ops.fusion import fold_implicit, fuse_conv_bn, fuse_repconv, identity_kernel
from tests.helpers.specs import ELAN_CSP_SPEC, graph_from

P6 = {"yolov7-w6", "yolov7-e6", "yolov7-d6", "yolov7-e6e"}


def _size(name: str) -> int:
    return 256 if name in P6 else 128


def _random_bn(channels: int, gen: torch.Generator, eps: float = 1e-3) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels, eps=eps).double().eval()
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(channels, generator=gen, dtype=torch.float64))
        bn.running_var.copy_(torch.rand(channels, generator=gen, dtype=torch.float64) * 2 + 0.05)
        bn.weight.copy_(torch.randn(channels, generator=gen, dtype=torch.float64))
        bn.bias.copy_(torch.randn(channels, generator=gen, dtype=torch.float64))
    return bn


def _random_conv(c_in, c_out, k, s, p, groups, bias, gen) -> nn.Conv2d:
    conv = nn.Conv2d(c_in, c_out, k, s, p, groups=groups, bias=bias).double()
    with torch.no_grad():
        for t in conv.parameters():
            t.copy_(torch.randn(t.shape, generator=gen, dtype=torch.float64))
    return conv


# ---------------------------------------------------------------- fusion rules, hand-built


@pytest.mark.parametrize(
    ("k", "s", "groups", "bias"), [(1, 1, 1, False), (3, 2, 1, True), (3, 1, 4, False)]
)
def test_fuse_conv_bn_matches_conv_then_bn(k, s, groups, bias):
    gen = torch.Generator().manual_seed(1)
    conv = _random_conv(8, 12, k, s, k // 2, groups, bias, gen)
    bn = _random_bn(12, gen)
    x = torch.randn(2, 8, 9, 9, generator=gen, dtype=torch.float64)
    w, b = fuse_conv_bn(conv.weight, conv.bias, bn)
    assert w.shape == conv.weight.shape and b.shape == (12,)
    fused = F.conv2d(x, w, b, s, k // 2, groups=groups)
    torch.testing.assert_close(fused, bn(conv(x)), rtol=1e-12, atol=1e-12)


def test_fuse_conv_bn_by_hand():
    conv_w = torch.tensor([[[[2.0]]]])
    bn = nn.BatchNorm2d(1, eps=0.0).eval()
    with torch.no_grad():
        bn.running_mean.fill_(1.0)
        bn.running_var.fill_(4.0)
        bn.weight.fill_(3.0)
        bn.bias.fill_(0.5)
    w, b = fuse_conv_bn(conv_w, torch.tensor([5.0]), bn)
    # scale 3 / sqrt(4) = 1.5: W' = 3, b' = 0.5 + 1.5 * (5 - 1) = 6.5
    assert w.item() == 3.0 and b.item() == 6.5 and w.dtype == torch.float32


@pytest.mark.parametrize("groups", [1, 4])
def test_identity_kernel_copies_input(groups):
    x = torch.randn(1, 8, 5, 5)
    for k in (1, 3, 5):
        torch.testing.assert_close(
            F.conv2d(x, identity_kernel(8, k, groups), None, 1, k // 2, groups=groups), x
        )


@pytest.mark.parametrize(
    ("identity", "groups", "s", "k"),
    [(False, 1, 1, 3), (True, 1, 1, 3), (True, 4, 1, 3), (False, 2, 2, 3), (True, 2, 1, 5)],
)
def test_fuse_repconv_matches_three_branches(identity, groups, s, k):
    gen = torch.Generator().manual_seed(2)
    c = 8
    dense = _random_conv(c, c, k, s, k // 2, groups, False, gen)
    point = _random_conv(c, c, 1, s, 0, groups, False, gen)
    bn_d, bn_p = _random_bn(c, gen), _random_bn(c, gen)
    bn_i = _random_bn(c, gen) if identity else None
    x = torch.randn(2, c, 11, 11, generator=gen, dtype=torch.float64)
    reference = bn_d(dense(x)) + bn_p(point(x)) + (bn_i(x) if identity else 0)
    w, b = fuse_repconv(dense, bn_d, point, bn_p, bn_i)
    assert w.shape == dense.weight.shape
    torch.testing.assert_close(
        F.conv2d(x, w, b, s, k // 2, groups=groups), reference, rtol=1e-12, atol=1e-12
    )


def test_fuse_repconv_on_the_module_class():
    gen = torch.Generator().manual_seed(3)
    op = ops.RepConv(16, 16, 3, 1, groups=4, act="silu", identity=True)
    module = randomize_(modules.RepConv(op), gen).double().eval()
    x = torch.randn(1, 16, 7, 7, generator=gen, dtype=torch.float64)
    w, b = fuse_repconv(
        module.dense[0], module.dense[1], module.point[0], module.point[1], module.identity
    )
    with torch.no_grad():
        torch.testing.assert_close(
            F.silu(F.conv2d(x, w, b, 1, 1, groups=4)), module(x), rtol=1e-12, atol=1e-12
        )


def test_fuse_repconv_refuses_identity_with_stride():
    gen = torch.Generator().manual_seed(4)
    dense, point = (
        _random_conv(4, 4, 3, 2, 1, 1, False, gen),
        _random_conv(4, 4, 1, 2, 0, 1, False, gen),
    )
    with pytest.raises(ValueError, match="identity"):
        fuse_repconv(dense, _random_bn(4, gen), point, _random_bn(4, gen), _random_bn(4, gen))


def test_fold_implicit_matches_add_conv_mul():
    gen = torch.Generator().manual_seed(5)
    conv = _random_conv(6, 10, 1, 1, 0, 1, True, gen)
    a = torch.randn(1, 6, 1, 1, generator=gen, dtype=torch.float64)
    m = torch.randn(1, 10, 1, 1, generator=gen, dtype=torch.float64)
    x = torch.randn(2, 6, 4, 4, generator=gen, dtype=torch.float64)
    for add, mul in ((a, m), (a, None), (None, m), (None, None)):
        reference = conv(x + (add if add is not None else 0)) * (mul if mul is not None else 1)
        w, b = fold_implicit(conv.weight, conv.bias, add, mul)
        torch.testing.assert_close(F.conv2d(x, w, b), reference, rtol=1e-12, atol=1e-12)


def test_fold_implicit_by_hand():
    w = torch.tensor([[[[1.0]], [[2.0]]]])  # one output, two inputs
    w2, b2 = fold_implicit(w, torch.tensor([1.0]), torch.tensor([3.0, 4.0]), torch.tensor([2.0]))
    # b = 2 * (1 + 1*3 + 2*4) = 24, W = 2 * [1, 2]
    assert w2.flatten().tolist() == [2.0, 4.0] and b2.tolist() == [24.0]


# ---------------------------------------------------------------- graphs and modules

REPCONV_SPEC = """\
name: rep-test
nc: 2
img_size: 64
anchors:
  - [10, 13, 16, 30, 33, 23]
nodes:
  stem: {type: conv, c: 16, k: 3, s: 2}
  rep1: {type: repconv, c: 16}
  rep2: {type: repconv, c: 16, identity: false}
  rep3: {type: repconv, c: 24, k: 5, s: 2}
  rep4: {type: repconv, c: 24}
  head: {type: detect, from: [rep4]}
"""


@pytest.mark.parametrize("name", list_models())
def test_pruned_fused_graph_is_the_deploy_graph(name):
    assert deploy_layer_graph(get_layer_graph(name)) == get_layer_graph(name, deploy=True)


def test_drop_aux_layers_keeps_leads_and_names():
    graph = get_layer_graph("yolov7-w6", img_size=256)
    pruned = drop_aux_layers(graph)
    head = pruned.output
    assert head.op.aux_c_ins == () and len(head.inputs) == len(head.op.c_ins)
    assert {layer.name for layer in pruned} < {layer.name for layer in graph}
    assert pruned.form == "training" and drop_aux_layers(pruned) == pruned


def _compare(training: nn.Module, fused: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """Relative max diff of the decoded outputs and of the raw (pre-sigmoid) lead levels."""
    head = training.layer_graph.output.name
    with torch.no_grad():
        ref, out = training.eval()(x), fused.eval()(x)
        decoded = ((out - ref).abs().max() / ref.abs().max()).item()
        training.get_submodule(head).train()  # BN stays in eval; the head returns raw maps
        fused.get_submodule(head).train()
        n_lead = len(fused.get_submodule(head).m)
        raw_ref, raw_out = training(x)[:n_lead], fused(x)
    training.eval()
    fused.eval()
    raw = max(((o - r).abs().max() / r.abs().max()).item() for o, r in zip(raw_out, raw_ref))
    return decoded, raw


def _randomized(model, seed=0):
    return randomize_(model, torch.Generator().manual_seed(seed)).eval()


@pytest.mark.parametrize("spec", ["tiny", "repconv"])
def test_small_specs_fuse_exactly(spec, tiny_graph):
    graph = tiny_graph if spec == "tiny" else graph_from(REPCONV_SPEC)
    training = _randomized(create_model(graph)).double()
    fused = reparameterize(training)
    decoded, raw = _compare(training, fused, torch.rand(2, 3, 64, 64, dtype=torch.float64))
    assert decoded < 1e-12 and raw < 1e-12
    assert not any(isinstance(m, (nn.BatchNorm2d, modules.RepConv)) for m in fused.modules())


def test_result_is_eval_same_dtype_device_and_input_unchanged(tiny_graph):
    training = _randomized(create_model(tiny_graph)).double().train()
    before = {k: v.clone() for k, v in training.state_dict().items()}
    fused = reparameterize(training)
    assert not fused.training and training.training  # the input's mode is left alone
    assert {p.dtype for p in fused.parameters()} == {torch.float64}
    assert {b.dtype for b in fused.buffers()} == {torch.float64}
    assert fused.layer_graph == get_layer_graph(tiny_graph, deploy=True)
    assert fused.layer_graph.form == "deploy"
    for k, v in training.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_reparameterize_is_idempotent_on_a_deploy_model(tiny_graph):
    fused = reparameterize(_randomized(create_model(tiny_graph)))
    again = reparameterize(fused)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(again(x), fused(x))


def test_explicit_deploy_graph_is_checked(tiny_graph):
    training = create_model(tiny_graph)
    deploy = get_layer_graph(tiny_graph, deploy=True)
    assert reparameterize(training, deploy).layer_graph is deploy
    wrong = get_layer_graph(tiny_graph.with_settings(nc=5), deploy=True)
    with pytest.raises(ValueError, match="deploy layer 'head'"):
        reparameterize(training, wrong)


def test_model_without_layer_graph_is_refused():
    with pytest.raises(TypeError, match="layer_graph"):
        reparameterize(nn.Sequential(nn.Conv2d(3, 3, 1)))


# ---------------------------------------------------------------- every zoo model


# Building and checking a zoo model takes 2-40 s on 2 CPU cores (yolov7x under ``all``: 40 s).
# The default run checks every model under the planned policy, and every policy on the two
# models whose op mix covers the rest (yolov7-tiny: plain convs, leaky; yolov7: RepConvs,
# SiLU); the full grid runs with the slow tests.
EVERY_POLICY = {"yolov7-tiny", "yolov7"}


YOLOV7 = [name for name in list_models() if scaling_lab.resolve_spec(name).family == "YOLOv7"]


def _grid(policies, default_policies, models=None):
    """(model, policy) cases; those outside the default run are marked slow."""

    def fast(name: str, policy) -> bool:
        if models is not None:
            return name in models
        return name in EVERY_POLICY or policy in default_policies

    return [
        pytest.param(name, policy, marks=() if fast(name, policy) else pytest.mark.slow)
        for name in YOLOV7
        for policy in policies
    ]


@pytest.mark.parametrize(("name", "policy"), _grid([None, "none", "all", "planned"], {"planned"}))
def test_zoo_fuse_check_float32(name, policy):
    """Every zoo model under every policy: fused == training form, counts == deploy graph."""
    stride = max_stride(scaling_lab.get_block_graph(name))
    result = fuse_check(name, repconv=policy, img_size=2 * stride)  # every op is per-pixel
    assert result["ok"], result
    assert result["relative"] <= 1e-4 and result["max_abs_diff_scores"] <= 1e-4
    expected = count_graph(get_layer_graph(name, deploy=True)).params
    assert result["params_fused"] == result["params_deploy_expected"] == expected
    training = count_graph(get_layer_graph(name, repconv=policy)).params
    assert result["params_training"] == training


@pytest.mark.parametrize(("name", "policy"), _grid(["planned"], set(), models=EVERY_POLICY))
def test_zoo_float64_decoded_and_raw_outputs(name, policy):
    size = _size(name)
    graph = scaling_lab.get_layer_graph(name, img_size=size, repconv=policy)
    training = _randomized(build_module(graph), seed=1).double()
    fused = reparameterize(training)
    decoded, raw = _compare(training, fused, torch.rand(1, 3, size, size, dtype=torch.float64))
    assert decoded <= 1e-10 and raw <= 1e-10, (decoded, raw)
    assert (
        sum(p.numel() for p in fused.parameters())
        == count_graph(scaling_lab.get_layer_graph(name, deploy=True)).params
    )


def test_fuse_check_csp_elan_and_explicit_positions():
    graph = graph_from(ELAN_CSP_SPEC)  # 3-stacked ELAN, CSPDarknet, reversed CSPDarknet
    for policy in ("planned", "all", {"elan.cv3": "repconv", "rcsp.cv2": "repconv"}):
        result = fuse_check(graph, repconv=policy, dtype=torch.float64)
        assert result["ok"] and result["relative"] <= 1e-10, (policy, result)


@pytest.mark.gpu
def test_reparameterize_on_cuda_keeps_device_and_half():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    training = _randomized(create_model("yolov7", img_size=160)).cuda().half()
    fused = reparameterize(training)
    assert {p.device.type for p in fused.parameters()} == {"cuda"}
    assert {p.dtype for p in fused.parameters()} == {torch.float16}
    x = torch.rand(1, 3, 160, 160, device="cuda", dtype=torch.float16)
    decoded, raw = _compare(training, fused, x)
    assert decoded < 1e-2 and raw < 1e-2
