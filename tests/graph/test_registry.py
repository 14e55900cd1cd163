"""A block defined outside the package, through the public registry."""

from dataclasses import dataclass
from typing import Literal

import pytest
import torch

from scaling_lab import count_graph, create_model, get_layer_graph, register_block
from scaling_lab.graph.registry import BlockType, FieldError, make_cfg, unregister_block
from scaling_lab.spec import SpecError
from tests.helpers.specs import graph_from


@dataclass(frozen=True)
class GhostCfg:
    """Ghost-style block: a 1x1 primary conv and a cheap depthwise 3x3, concatenated."""

    c: int
    ratio: int = 2


def lower_ghost(cfg, inputs, lb):
    primary = lb.conv(inputs[0], cfg.c // cfg.ratio, k=1)
    cheap = lb.conv(primary, cfg.c // cfg.ratio, k=3, groups=cfg.c // cfg.ratio)
    return lb.concat([primary, cheap])


@pytest.fixture
def ghost():
    register_block("ghost_test", GhostCfg, role="computational")(lower_ghost)
    yield
    unregister_block("ghost_test")


SPEC = """\
img_size: 32
nodes:
  stem: {type: conv, c: 8, k: 3, s: 2}
  g: {type: ghost_test, c: 16}
  out: {type: conv, c: 4}
"""


def test_user_block_builds_and_counts(ghost):
    graph = graph_from(SPEC)
    assert graph.node("g").role == "computational"
    layers = get_layer_graph(graph)
    assert layers["out"].shape.c == 4 and layers["g.cat1"].shape.c == 16
    model = create_model(graph)
    assert count_graph(layers).params == sum(p.numel() for p in model.parameters())
    # primary 1x1: 8*8 + BN 16; depthwise 3x3: 8*9 + BN 16
    assert sum(p.numel() for n, p in model.named_parameters() if n.startswith("g.")) == 168
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 4, 16, 16)


def test_registering_twice_is_an_error(ghost):
    with pytest.raises(ValueError, match="'ghost_test' is already registered"):
        register_block("ghost_test", GhostCfg)(lower_ghost)


def test_unregistered_block_is_unknown():
    with pytest.raises(SpecError, match="unknown block type 'ghost_test'"):
        graph_from(SPEC)


@dataclass(frozen=True)
class PoolCfg:
    """A user block with typed fields: tuples, literals and a check()."""

    k: tuple[int, ...] = (5, 9)
    mode: Literal["max", "avg"] = "max"

    def check(self) -> None:
        if any(k % 2 == 0 for k in self.k):
            raise FieldError("k", f"kernels must be odd, got {list(self.k)}")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"k": [3, 5]}, None),
        ({"k": [3, "5"]}, "field 'k[1]': must be int, got '5'"),
        ({"k": [3, 4]}, "field 'k': kernels must be odd, got [3, 4]"),
        ({"mode": "min"}, "field 'mode': must be one of 'max', 'avg', got 'min'"),
        ({"kernel": 3}, "field 'kernel': unknown field for block 'pool_test' (known: k, mode)"),
    ],
)
def test_a_user_blocks_fields_are_checked_from_its_type_hints(fields, message):
    block = BlockType("pool_test", PoolCfg, lambda cfg, inputs, lb: inputs[0], "fixed", 1)
    if message is None:
        assert make_cfg(block, fields) == PoolCfg(k=(3, 5))  # a YAML list becomes the tuple
        return
    with pytest.raises(SpecError) as info:
        make_cfg(block, fields)
    assert str(info.value) == message
