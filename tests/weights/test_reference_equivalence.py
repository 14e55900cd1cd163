"""Built from the same weights, every YOLOv7-family zoo model computes the reference's function.

The fixtures (``tests/fixtures/reference_outputs/*.npz``, written by
``tools/record_reference_outputs.py`` with the public reference implementation) hold a recipe
for the reference's state dict (names, shapes, seed; the tensors come from a counter-based
generator) and the reference's outputs for a seeded batch, in eval mode and in training mode.
Here the state dict is regenerated, mapped onto the zoo model by ``map_reference_weights``
(graph alignment, no per-model table) and run in float64; no reference code is needed.
"""

from __future__ import annotations

import gc
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from scaling_lab.nn import build_module
from scaling_lab.weights import map_reference_weights

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "reference_outputs"
TOLERANCE = 1e-9


def _recipe():
    spec = importlib.util.spec_from_file_location(
        "record_reference_outputs", ROOT / "tools" / "record_reference_outputs.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RECIPE = _recipe()


def _converted(name: str):
    data = np.load(FIXTURES / f"{name}.npz", allow_pickle=False)
    state = {k: torch.from_numpy(v) for k, v in RECIPE.regenerate(data).items()}
    config = json.loads(str(data["config"]))
    converted = map_reference_weights(state, config, name, source=f"{name}.npz")
    del state
    return data, converted


def _max_diff(ours: torch.Tensor, theirs: np.ndarray) -> float:
    assert tuple(ours.shape) == theirs.shape
    return float((ours.detach() - torch.from_numpy(theirs)).abs().max())


@pytest.mark.parametrize("name", RECIPE.CONFIGS)
def test_zoo_model_computes_the_reference_function(name):
    data, converted = _converted(name)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # build in float64 directly (E6E: 151M params)
    try:
        model = build_module(converted.layers).double()
    finally:
        torch.set_default_dtype(default)
    model.load_state_dict(converted.state)
    del converted
    gc.collect()
    seed, batch, img = int(data["seed"]), int(data["batch"]), int(data["img"])
    x = torch.from_numpy(RECIPE.input_batch(seed, batch, img))
    with torch.no_grad():
        model.eval()
        eval_diff = _max_diff(model(x), data["eval"])
        model.train()
        maps = model(x)
    count = int(data["train_count"])
    assert len(maps) == count  # lead levels, then auxiliary levels
    train_diff = max(_max_diff(m, data[f"train_{i}"]) for i, m in enumerate(maps))
    print(f"{name}: max abs diff eval {eval_diff:.3g}, training {train_diff:.3g}")
    assert eval_diff <= TOLERANCE
    assert train_diff <= TOLERANCE


@pytest.mark.parametrize("name", RECIPE.CONFIGS)
def test_zoo_spec_has_the_reference_anchors(name):
    """The converter takes the checkpoint's anchors; the zoo spec should not need that."""
    data = np.load(FIXTURES / f"{name}.npz", allow_pickle=False)
    grid = next(data[k] for k in data.files if k.endswith(".anchor_grid"))
    from scaling_lab.models import get_layer_graph

    head = get_layer_graph(name).output.op
    ours = np.array(head.anchors, dtype=np.float64).reshape(grid.shape)
    np.testing.assert_allclose(ours, grid, atol=1e-6)
