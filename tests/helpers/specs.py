"""Inline specs and spec helpers shared by the graph, model and training tests."""

from __future__ import annotations

import textwrap

import pytest

from scaling_lab.graph.block_graph import build_block_graph
from scaling_lab.models import resolve_spec
from scaling_lab.spec import parse_spec
from scaling_lab.zoo import list_models

# Zoo models that build in the default test run: every YOLOv7 model, and one of each baseline
# family (the others are marked slow; their blocks are covered by the small specs).
REPRESENTATIVES = {
    "YOLOv4": "yolov4-tiny",
    "YOLOR": "yolor-p6",
    "YOLOv5": "yolov5n",
    "YOLOX": "yolox-s",
    "PP-YOLOE": "ppyoloe-s",
}

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


def zoo_cases() -> list:
    """Zoo names for tests that build modules: baselines beyond one per family are slow."""
    cases = []
    for name in list_models():
        family = resolve_spec(name).family
        fast = family == "YOLOv7" or REPRESENTATIVES.get(family) == name
        cases.append(name if fast else pytest.param(name, marks=pytest.mark.slow))
    return cases


def small_size(name: str) -> int:
    """A small input size for building a zoo model: 128 for P5 models, 256 for P6."""
    return 128 if resolve_spec(name).img_size <= 640 else 256


def spec_text(body: str) -> str:
    """Dedent an inline spec."""
    return textwrap.dedent(body)


def graph_from(text: str, source: str = "test.yaml", require_head: bool = False):
    """A BlockGraph of inline spec text; small test graphs may leave the head out."""
    return build_block_graph(parse_spec(spec_text(text), source=source), require_head=require_head)


# a 3-stacked ELAN (Fig. 6) next to a CSPDarknet stage and its reversed form (Fig. 7)
ELAN_CSP_SPEC = """\
img_size: 64
nodes:
  stem: {type: conv, c: 32, k: 3, s: 2}
  elan: {type: elan, c_hidden: 16, depth: 3, tap_every: 1, c_out: 32}
  csp: {type: csp, c_out: 32, depth: 2}
  rcsp: {type: csp, c_out: 32, depth: 2, reversed: true}
"""
