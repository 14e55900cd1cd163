"""A block registered from user code brings its own op: shapes, counts, fusing, the torch
build, the latency key and cost rule, and weight conversion from a reference checkpoint all
come from the op's class, with nothing in the package listing op types."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
import yaml
from torch import nn

import scaling_lab as sl
from scaling_lab.analyze.op_config import RunSettings, distinct_configs
from scaling_lab.cli import main
from scaling_lab.graph.registry import unregister_block
from scaling_lab.ops import ReferenceNaming
from scaling_lab.spec.layer_list import MODULES
from scaling_lab.spec.layer_modules import ModuleRule
from scaling_lab.train.checkpoint import load_checkpoint
from scaling_lab.weights import AlignmentError, convert_weights
from tests.helpers.weight_standins import Conv as RefConv
from tests.helpers.weight_standins import IDetect as RefIDetect

SPEC = """
name: scaled-tiny
nc: 2
img_size: 64
anchors: [[10, 13, 16, 30, 33, 23]]
nodes:
  stem: {type: conv, c: 8, k: 3, s: 2}
  body: {type: scaled_conv, c: 16, s: 2}
  head: {type: detect, from: [body]}
"""


class _ScaleModule(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.full((1, channels, 1, 1), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gain


@dataclass(frozen=True)
class ChannelScale(sl.Op):
    """A learned gain per channel (a user's op, not the package's)."""

    c: int

    prefix = "gain"

    def infer_shape(self, inputs: Sequence[sl.Port]) -> sl.Shape:
        (x,) = inputs
        if x.c != self.c:
            raise sl.SpecError(f"expects {self.c} channels, got {x.c}", field="c")
        return x.shape

    def count(self, inputs: Sequence[sl.Shape], out: sl.Shape) -> sl.OpCount:
        return sl.OpCount(params=self.c, thop_extra_ops=out.elements)

    def build(self) -> Any:
        return _ScaleModule(self.c)

    def fit_macs(self, inputs: Sequence[sl.Shape], out: sl.Shape) -> int:
        return out.elements  # one multiply per element: what its latency scales with


@dataclass(frozen=True)
class ScaledConvCfg:
    """A conv followed by a per-channel gain."""

    c: int = field(metadata={"scale": "width"})
    s: int = 1


@pytest.fixture
def scaled_conv_block():
    @sl.register_block("scaled_conv", ScaledConvCfg, role="computational")
    def lower_scaled_conv(cfg, inputs, lb):
        (x,) = inputs
        y = lb.conv(x, cfg.c, k=3, s=cfg.s)
        return lb.emit(ChannelScale(cfg.c), [y])

    yield
    unregister_block("scaled_conv")


def _graph():
    return sl.build_block_graph(sl.parse_spec(SPEC, source="scaled.yaml"))


def test_user_op_is_counted_and_built(scaled_conv_block):
    layers = sl.get_layer_graph(_graph())
    gain = layers["body.gain1"]
    assert gain.kind == "channelscale" and gain.shape == sl.Shape(16, 16, 16, 4)
    counts = {c.name: c for c in sl.count_graph(layers).per_layer}
    assert counts["body.gain1"].params == 16 and counts["body.gain1"].macs == 0
    model = sl.create_model(_graph())
    assert sum(p.numel() for p in model.parameters()) == sl.count_graph(layers).params
    assert "body.gain1" in dict(model.named_modules())
    model.eval()
    out = model(torch.rand(1, 3, 64, 64))
    assert out.shape == (1, 3 * 16 * 16, 7)


def test_user_op_survives_fusing_with_its_weights(scaled_conv_block):
    model = sl.create_model(_graph()).eval()
    with torch.no_grad():
        model.get_submodule("body.gain1").gain.uniform_(0.5, 2.0)
    fused = sl.reparameterize(model)
    x = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(fused(x), model(x), rtol=1e-4, atol=1e-4)
    assert torch.equal(
        fused.get_submodule("body.gain1").gain, model.get_submodule("body.gain1").gain
    )


def test_user_op_shape_error_names_the_node_and_field(scaled_conv_block):
    @sl.register_block("bad_gain", ScaledConvCfg)
    def lower_bad_gain(cfg, inputs, lb):
        return lb.emit(ChannelScale(cfg.c + 1), inputs)

    try:
        spec = SPEC.replace("type: scaled_conv, c: 16, s: 2", "type: bad_gain, c: 8")
        with pytest.raises(
            sl.SpecError, match=r"node 'body': field 'c': expects 9 channels, got 8"
        ):
            sl.get_layer_graph(sl.build_block_graph(sl.parse_spec(spec, source="bad.yaml")))
    finally:
        unregister_block("bad_gain")


def test_an_op_without_a_torch_form_says_which():
    @dataclass(frozen=True)
    class NoBuild(sl.Op):
        pass

    with pytest.raises(NotImplementedError, match="NoBuild declares no torch form"):
        NoBuild().build()


def test_user_op_has_a_latency_key_and_its_own_cost_rule(scaled_conv_block):
    layers = sl.get_layer_graph(_graph())
    configs = distinct_configs(layers, RunSettings(batch=2))
    (key,) = [k for k in configs if k.startswith("ChannelScale")]
    assert key == "ChannelScale(c=16) in=16x16x16 out=16x16x16 fp32 b2 nchw"
    config = configs[key]
    assert config.group == "channelscale"
    features = config.features()
    assert features["macs"] == 2 * 16 * 16 * 16  # ChannelScale.fit_macs, not the zero MACs
    assert features["params"] == 16


# --------------------------------------------------------------------- weight conversion
# The reference model the user's op came from: a layer-list config naming the user's own
# module, and that module's tensors as the reference stores them (``model.2.gain``).

REFERENCE_CONFIG = {
    "nc": 2,
    "depth_multiple": 1.0,
    "width_multiple": 1.0,
    "anchors": [[10, 13, 16, 30, 33, 23]],
    "backbone": [
        [-1, 1, "Conv", [8, 3, 2]],  # 0
        [-1, 1, "Conv", [16, 3, 2]],  # 1
        [-1, 1, "ChannelScale", []],  # 2: the user's module
    ],
    "head": [[[2], 1, "IDetect", ["nc", "anchors"]]],  # 3
}


class _RefChannelScale(nn.Module):
    """The user's module in the reference code base, its tensor under ``param``."""

    def __init__(self, channels: int, param: str) -> None:
        super().__init__()
        self.register_parameter(param, nn.Parameter(torch.ones(1, channels, 1, 1)))


def _reference_state(param: str = "gain") -> dict[str, torch.Tensor]:
    model = nn.Sequential(
        RefConv(3, 8, 3, 2),
        RefConv(8, 16, 3, 2),
        _RefChannelScale(16, param),
        RefIDetect(2, REFERENCE_CONFIG["anchors"], [16]),
    )
    gen = torch.Generator().manual_seed(7)
    state = {}
    for key, tensor in model.state_dict().items():
        if tensor.is_floating_point() and "anchor" not in key:
            tensor = torch.rand(tensor.shape, generator=gen) + 0.5
        state[f"model.{key}"] = tensor
    return state


@dataclass(frozen=True)
class ChannelScaleCfg:
    """The user's op alone (what their layer-list module imports as)."""

    c: int = field(metadata={"scale": "width"})


def _convert_channel_scale(model, layer, args):
    """Their layer-list module -> a ``channel_scale`` node (the user's importer rule)."""
    (x,) = layer.sources
    c, stride = model.width_of(x), model.stride_of(x)
    return model.emit(layer, "gain", stride, "channel_scale", [model.name_of(x)], c=c), c, stride


@contextlib.contextmanager
def user_blocks(op: type[ChannelScale]) -> Iterator[None]:
    """Our ``scaled_conv`` and the ``channel_scale`` their config imports as, emitting ``op``,
    and the layer-list importer knowing the user's module (all undone afterwards)."""

    @sl.register_block("scaled_conv", ScaledConvCfg, role="computational")
    def lower_scaled_conv(cfg, inputs, lb):
        (x,) = inputs
        return lb.emit(op(cfg.c), [lb.conv(x, cfg.c, k=3, s=cfg.s)])

    @sl.register_block("channel_scale", ChannelScaleCfg)
    def lower_channel_scale(cfg, inputs, lb):
        return lb.emit(op(cfg.c), inputs)

    MODULES["ChannelScale"] = ModuleRule((), 0, _convert_channel_scale)
    try:
        yield
    finally:
        del MODULES["ChannelScale"]
        unregister_block("channel_scale")
        unregister_block("scaled_conv")


@pytest.fixture
def files(tmp_path):
    """A bare reference checkpoint's config file and our spec file."""
    config = tmp_path / "scaled.yaml"
    config.write_text(yaml.safe_dump(REFERENCE_CONFIG))
    spec = tmp_path / "scaled-tiny.yaml"
    spec.write_text(SPEC)
    return tmp_path, config, spec


def test_user_op_converts_from_a_reference_checkpoint(files):
    folder, config, spec = files
    ref = _reference_state()
    ckpt = folder / "last.pt"
    torch.save({"model": ref}, ckpt)
    with user_blocks(ChannelScale):
        converted = convert_weights(ckpt, spec, config=config)
        assert converted.sources["body.gain1.gain"] == ["model.2.gain"]
        assert torch.equal(converted.state["body.gain1.gain"], ref["model.2.gain"])
        assert torch.equal(converted.state["body.cv1.conv.weight"], ref["model.1.conv.weight"])
        assert torch.equal(converted.state["head.m.0.weight"], ref["model.3.m.0.weight"])

        # built, counted and fused with the converted weights
        model = converted.create_model().eval()
        layers = sl.get_layer_graph(_graph())
        assert sum(p.numel() for p in model.parameters()) == sl.count_graph(layers).params
        fused = sl.reparameterize(model)
        x = torch.rand(1, 3, 64, 64)
        torch.testing.assert_close(fused(x), model(x), rtol=1e-4, atol=1e-4)

        # and through ``lab convert-weights``
        out = folder / "ours.pt"
        argv = ["convert-weights", str(ckpt), "--model", str(spec), "--config", str(config)]
        assert main([*argv, "--out", str(out)]) == 0
    assert torch.equal(load_checkpoint(out)["model"]["body.gain1.gain"], ref["model.2.gain"])


@dataclass(frozen=True)
class RenamedScale(ChannelScale):
    """The same op, whose module in the reference calls its tensor ``scale``."""

    def reference_naming(self) -> ReferenceNaming:
        return ReferenceNaming(self.kind, renames=(("gain", "scale"),), whole_layer=True)


def test_user_op_names_its_reference_tensors(files):
    folder, config, spec = files
    ref = _reference_state(param="scale")
    ckpt = folder / "renamed.pt"
    torch.save({"model": ref}, ckpt)
    with (
        user_blocks(ChannelScale),
        pytest.raises(
            AlignmentError,
            match=r"no 'model\.2\.gain' for our 'body\.gain1\.gain' \(ChannelScale declares no "
            r"reference_naming\(\)",
        ),
    ):
        convert_weights(ckpt, spec, config=config)
    with user_blocks(RenamedScale):
        converted = convert_weights(ckpt, spec, config=config)
    assert converted.sources["body.gain1.gain"] == ["model.2.scale"]
    assert torch.equal(converted.state["body.gain1.gain"], ref["model.2.scale"])
