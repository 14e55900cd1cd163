"""Shared fixtures: small specs written inline, and helpers to build them."""

from __future__ import annotations

import textwrap

import pytest

from scaling_lab.graph.block_graph import build_block_graph
from scaling_lab.spec import parse_spec

TINY_SPEC = """\
name: tiny-test
nc: 3
img_size: 64
anchors:
  - [10, 13, 16, 30, 33, 23]
  - [30, 61, 62, 45, 59, 119]
nodes:
  stem: {type: conv, c: 16, k: 3, s: 2}
  down1: {type: mp_down, c: 32}
  elan1: {type: elan, c_hidden: 16, c_out: 32}
  down2: {type: mp_down, c: 64}
  elan2: {type: eelan, c_hidden: 16, c_chain: 8, depth: 2, tap_every: 1, c_out: 64}
  up: {type: upsample}
  cat: {type: concat, from: [up, elan1]}
  fuse: {type: conv, c: 32}
  rep3: {type: repconv, c: 32}
  rep4: {type: repconv, from: elan2, c: 64}
  head: {type: detect, from: [rep3, rep4]}
"""


def spec_text(body: str) -> str:
    """Dedent an inline spec."""
    return textwrap.dedent(body)


def graph_from(text: str, source: str = "test.yaml"):
    return build_block_graph(parse_spec(spec_text(text), source=source))


@pytest.fixture
def tiny_graph():
    return graph_from(TINY_SPEC)
