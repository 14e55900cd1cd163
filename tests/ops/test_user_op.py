"""A block registered from user code brings its own op: shapes, counts, fusing and the torch
build all come from the op's class, with nothing in the package listing op types."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch import nn

import scaling_lab as sl
from scaling_lab.graph.registry import unregister_block

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
