"""Stand-ins for the reference implementation's classes, for checkpoints built in the tests.

The classes are installed as ``models.common.*`` / ``models.yolo.*`` in ``sys.modules`` only
while ``torch.save`` pickles a checkpoint, so the file names the reference's module paths
exactly as a real one does; they are removed before anything reads it back. ``build_model``
builds a reference-style module tree (``Model.model`` a ``Sequential`` of layers carrying
``i``, ``f``, ``type``, ``np``; ``Model.yaml`` the config) for the few modules MINI_CONFIG
uses: Conv, Concat, Shortcut, MP, RepConv, IDetect.
"""

from __future__ import annotations

import contextlib
import sys
import types
from collections.abc import Iterator
from copy import deepcopy
from typing import Any

import torch
from torch import nn

# A small model in the reference's layer-list format: an E-ELAN written as two ELAN branches
# summed by Shortcut (layers 2-14), an MP downsampling, a strided conv and RepConvs (one with
# an identity branch) before an implicit head. MINI_SPEC is the same model as our spec.
MINI_CONFIG: dict[str, Any] = {
    "nc": 2,
    "depth_multiple": 1.0,
    "width_multiple": 1.0,
    "anchors": [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119]],
    "backbone": [
        [-1, 1, "Conv", [16, 3, 2]],  # 0 P1/2
        [-1, 1, "Conv", [32, 3, 2]],  # 1 P2/4
        [-1, 1, "Conv", [16, 1, 1]],  # 2 branch 1
        [-2, 1, "Conv", [16, 1, 1]],  # 3
        [-1, 1, "Conv", [16, 3, 1]],  # 4
        [-1, 1, "Conv", [16, 3, 1]],  # 5
        [[-1, -2, -3, -4], 1, "Concat", [1]],  # 6
        [-1, 1, "Conv", [32, 1, 1]],  # 7
        [1, 1, "Conv", [16, 1, 1]],  # 8 branch 2
        [1, 1, "Conv", [16, 1, 1]],  # 9
        [-1, 1, "Conv", [16, 3, 1]],  # 10
        [-1, 1, "Conv", [16, 3, 1]],  # 11
        [[-1, -2, -3, -4], 1, "Concat", [1]],  # 12
        [-1, 1, "Conv", [32, 1, 1]],  # 13
        [[-1, -7], 1, "Shortcut", [1]],  # 14
        [-1, 1, "MP", []],  # 15
        [-1, 1, "Conv", [32, 1, 1]],  # 16
        [-3, 1, "Conv", [32, 1, 1]],  # 17
        [-1, 1, "Conv", [32, 3, 2]],  # 18
        [[-1, -3], 1, "Concat", [1]],  # 19 P3/8
        [-1, 1, "Conv", [64, 3, 2]],  # 20 P4/16
    ],
    "head": [
        [19, 1, "RepConv", [32, 3, 1]],  # 21
        [20, 1, "RepConv", [64, 3, 1]],  # 22 (identity branch: 64 -> 64, stride 1)
        [[21, 22], 1, "IDetect", ["nc", "anchors"]],  # 23
    ],
}

MINI_SPEC = """\
name: mini-e
nc: 2
img_size: 64
anchors:
  - [10, 13, 16, 30, 33, 23]
  - [30, 61, 62, 45, 59, 119]
nodes:
  stem: {type: conv, c: 16, k: 3, s: 2}
  down: {type: conv, c: 32, k: 3, s: 2}
  e: {type: eelan, c_hidden: 16, depth: 2, tap_every: 1, c_out: 32, cardinality: 2}
  d3: {type: mp_down, c: 64}
  d4: {type: conv, c: 64, k: 3, s: 2}
  rep3: {type: repconv, from: d3, c: 32}
  rep4: {type: repconv, from: d4, c: 64}
  detect: {type: detect, from: [rep3, rep4]}
"""


class Conv(nn.Module):
    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU()


class RepConv(nn.Module):
    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1) -> None:
        super().__init__()
        self.deploy = False
        self.act = nn.SiLU()
        self.rbr_identity = nn.BatchNorm2d(c1) if c1 == c2 and s == 1 else None
        self.rbr_dense = nn.Sequential(
            nn.Conv2d(c1, c2, k, s, k // 2, bias=False), nn.BatchNorm2d(c2)
        )
        self.rbr_1x1 = nn.Sequential(nn.Conv2d(c1, c2, 1, s, 0, bias=False), nn.BatchNorm2d(c2))


class Concat(nn.Module):
    def __init__(self, d: int = 1) -> None:
        super().__init__()
        self.d = d


class Shortcut(Concat):
    pass


class MP(nn.Module):
    def __init__(self, k: int = 2) -> None:
        super().__init__()
        self.m = nn.MaxPool2d(k, k)


class ImplicitA(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.implicit = nn.Parameter(torch.zeros(1, c, 1, 1))


class ImplicitM(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.implicit = nn.Parameter(torch.ones(1, c, 1, 1))


class IDetect(nn.Module):
    def __init__(self, nc: int, anchors: list, ch: list[int]) -> None:
        super().__init__()
        self.nc, self.no, self.nl, self.na = nc, nc + 5, len(anchors), len(anchors[0]) // 2
        self.grid = [torch.zeros(1)] * self.nl
        a = torch.tensor(anchors).float().view(self.nl, -1, 2)
        self.register_buffer("anchors", a)
        self.register_buffer("anchor_grid", a.clone().view(self.nl, 1, -1, 1, 1, 2))
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in ch)
        self.ia = nn.ModuleList(ImplicitA(c) for c in ch)
        self.im = nn.ModuleList(ImplicitM(self.no * self.na) for _ in ch)


class Model(nn.Module):
    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.traced = False
        self.yaml = deepcopy(cfg)
        self.yaml["ch"] = 3
        layers, widths = [], []
        entries = [*cfg["backbone"], *cfg["head"]]
        for i, (f, _, name, args) in enumerate(entries):
            c_in = (
                3
                if f == -1 and i == 0
                else (widths[f] if isinstance(f, int) else [widths[j] for j in f])
            )
            if name == "Conv":
                m, c = Conv(c_in, args[0], args[1], args[2]), args[0]
            elif name == "RepConv":
                m, c = RepConv(c_in, args[0], args[1], args[2]), args[0]
            elif name == "Concat":
                m, c = Concat(), sum(c_in)
            elif name == "Shortcut":
                m, c = Shortcut(), c_in[0]
            elif name == "MP":
                m, c = MP(), c_in
            else:
                m, c = IDetect(cfg["nc"], cfg["anchors"], c_in), 0
            m.i, m.f, m.type = i, f, f"models.common.{name}"
            m.np = sum(p.numel() for p in m.parameters())
            layers.append(m)
            widths.append(c)
        self.model = nn.Sequential(*layers)
        self.save = [1, 7, 13, 16, 19, 20, 21, 22]
        self.names = [str(i) for i in range(cfg["nc"])]


_CLASSES = {
    "models.common": (Conv, RepConv, Concat, Shortcut, MP, ImplicitA, ImplicitM),
    "models.yolo": (IDetect, Model),
}


@contextlib.contextmanager
def reference_modules() -> Iterator[None]:
    """``models``, ``models.common``, ``models.yolo`` importable (and the stand-ins named as
    the reference's classes) for as long as the block runs."""
    saved = {name: sys.modules.get(name) for name in ("models", *_CLASSES)}
    originals = {cls: (cls.__module__, cls.__qualname__) for c in _CLASSES.values() for cls in c}
    sys.modules["models"] = types.ModuleType("models")
    try:
        for module_name, classes in _CLASSES.items():
            module = types.ModuleType(module_name)
            for cls in classes:
                cls.__module__ = module_name
                setattr(module, cls.__name__, cls)
            sys.modules[module_name] = module
        yield
    finally:
        for cls, (module, qualname) in originals.items():
            cls.__module__, cls.__qualname__ = module, qualname
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def build_model(seed: int = 0, cfg: dict[str, Any] | None = None) -> Model:
    """The stand-in reference model with every parameter and buffer filled at random."""
    model = Model(cfg or MINI_CONFIG)
    for m in model.modules():  # as the reference's initialize_weights leaves them
        if isinstance(m, nn.BatchNorm2d):
            m.eps, m.momentum = 1e-3, 0.03
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith(("anchors", "anchor_grid", "num_batches_tracked")):
                continue
            tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
    return model


def save_checkpoint(path, obj: Any) -> None:
    """``torch.save`` with the stand-ins at the reference's module paths."""
    with reference_modules():
        torch.save(obj, path)


def training_checkpoint(seed: int = 0) -> dict[str, Any]:
    """What the reference's train.py saves (fp16 models, optimizer state, numpy fitness)."""
    import numpy as np

    model = build_model(seed)
    ema = build_model(seed + 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    return {
        "epoch": 4,
        "best_fitness": np.array([0.25]),
        "training_results": "results",
        "model": deepcopy(model).half(),
        "ema": deepcopy(ema).half(),
        "updates": 10,
        "optimizer": opt.state_dict(),
        "wandb_id": None,
    }
