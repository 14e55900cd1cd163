"""Record the public reference implementation's outputs for the weight-conversion tests.

Run with the reference's own Python environment, against a checkout of it::

    /work/ref_venv/bin/python tools/record_reference_outputs.py \
        --reference /work/reference_yolov7 --out tests/fixtures/reference_outputs/

For each YOLOv7-family training config, the reference's ``models.yolo.Model`` is built with
``NC`` classes in float64, and every parameter and buffer except the anchors is filled from
``recipe_values`` in the order of its state dict (a counter-based generator in plain numpy, so
the test regenerates the same tensors without the reference). A seeded input batch is run in
eval mode (decoded predictions) and then in training mode (lead and auxiliary maps).
``<config>.npz`` holds the recipe (state-dict names and shapes, seed, the anchors as built, the
config the model keeps) and the outputs; ``tests/weights/test_reference_equivalence.py``
converts the regenerated state dict into our zoo model and compares. This script does not
import scaling_lab; the test imports its recipe functions from this file.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

CONFIGS = (
    "yolov7-tiny",
    "yolov7",
    "yolov7x",
    "yolov7-w6",
    "yolov7-e6",
    "yolov7-d6",
    "yolov7-e6e",
)
NC = 2  # a small head keeps the fixtures small
SEED = 20240707
IMG = 128  # divisible by every config's max stride (64)
BATCH = 2  # training-mode BatchNorm normalizes over the batch
FIXED = ("anchors", "anchor_grid")  # buffers kept as the reference builds them

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def uniform(seed: int, stream: int, n: int) -> np.ndarray:
    """``n`` floats in [0, 1): splitmix64 of a per-(seed, stream) counter (53-bit mantissas);
    integer arithmetic only, so every platform and numpy version gives the same values."""
    base = (seed * _GOLDEN + (stream + 1) * 0xD1B54A32D192ED03) & _MASK
    z = np.arange(n, dtype=np.uint64) * np.uint64(_GOLDEN) + np.uint64(base)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def recipe_values(name: str, shape: tuple[int, ...], seed: int, stream: int) -> np.ndarray:
    """The value of state-dict entry ``name`` (number ``stream`` in order): conv weights with
    variance 1/fan-in, BatchNorm scales and variances around 1, small shifts and biases,
    implicit knowledge around 0 (add) and 1 (multiply)."""
    n = math.prod(shape)
    u = uniform(seed, stream, max(n, 1))
    last = name.rsplit(".", 1)[-1]
    if last == "num_batches_tracked":
        return np.full(shape, int(u[0] * 1000), dtype=np.int64)
    if last == "running_var":
        v = 0.5 + u
    elif last == "running_mean":
        v = (u - 0.5) * 0.4
    elif last == "implicit":
        v = 1.0 + (u - 0.5) * 0.2 if ".im." in f".{name}" else (u - 0.5) * 0.2
    elif len(shape) == 4:  # conv weight
        fan_in = math.prod(shape[1:])
        v = (u - 0.5) * 2.0 * math.sqrt(3.0 / fan_in)
    elif last == "weight":  # BatchNorm scale
        v = 0.5 + u
    elif last == "bias":
        v = (u - 0.5) * 0.2
    else:
        v = u
    return v[:n].reshape(shape)


def input_batch(seed: int, batch: int = BATCH, img: int = IMG) -> np.ndarray:
    """The input images, values in [0, 1)."""
    return uniform(seed, -7, batch * 3 * img * img).reshape(batch, 3, img, img)


def regenerate(recipe: Any) -> dict[str, np.ndarray]:
    """The filled state dict from a recorded recipe (an ``np.load`` of a fixture)."""
    names = [str(n) for n in recipe["names"]]
    shapes = json.loads(str(recipe["shapes"]))
    seed = int(recipe["seed"])
    state = {}
    for stream, (name, shape) in enumerate(zip(names, shapes)):
        if name.rsplit(".", 1)[-1] in FIXED:
            state[name] = recipe[f"fixed:{name}"]
        else:
            state[name] = recipe_values(name, tuple(shape), seed, stream)
    return state


# ----------------------------------------------------------------------------- recording


def _commit(reference: Path) -> str:
    # imported here: the tests load this file as a module for its recipe, without tools/ on
    # the path; recording runs it as a script, where tools/ is the script's own folder
    from reference_checkout import reference_commit

    return reference_commit(reference) or "unknown"


def record(reference: Path, config: str, seed: int = SEED) -> dict[str, np.ndarray]:
    """Build, fill and run one config with the reference; the fixture's arrays."""
    import torch
    from models.yolo import Model  # the reference's model builder (on sys.path)

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        model = Model(str(Path("cfg/training") / f"{config}.yaml"), nc=NC)
    model = model.double()
    state = model.state_dict()
    names = list(state)
    shapes = [list(t.shape) for t in state.values()]
    fixed = {}
    with torch.no_grad():
        for stream, name in enumerate(names):
            tensor = state[name]
            if name.rsplit(".", 1)[-1] in FIXED:
                fixed[f"fixed:{name}"] = tensor.numpy().copy()
                continue
            values = recipe_values(name, tuple(tensor.shape), seed, stream)
            tensor.copy_(torch.from_numpy(values))
    x = torch.from_numpy(input_batch(seed))
    with torch.no_grad():
        model.eval()
        pred = model(x.clone())[0]
        model.train()
        maps = model(x.clone())
    arrays = {
        "names": np.array(names),
        "shapes": np.array(json.dumps(shapes)),
        "seed": np.array(seed),
        "img": np.array(IMG),
        "batch": np.array(BATCH),
        "nc": np.array(NC),
        "config": np.array(json.dumps(model.yaml)),
        "eval": pred.numpy(),
        "train_count": np.array(len(maps)),
        **fixed,
    }
    for i, m in enumerate(maps):
        arrays[f"train_{i}"] = m.numpy()
    return arrays


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True, help="reference checkout")
    parser.add_argument("--out", type=Path, required=True, help="fixture folder")
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), help="config names")
    args = parser.parse_args(argv)
    reference = args.reference.resolve()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(reference))
    cwd = os.getcwd()
    os.chdir(reference)  # the reference resolves some paths against its own root
    try:
        for config in args.configs:
            arrays = record(reference, config)
            arrays["reference_commit"] = np.array(_commit(reference))
            np.savez_compressed(out / f"{config}.npz", **arrays)
            size = (out / f"{config}.npz").stat().st_size
            print(f"{config}: {len(arrays['names'])} tensors, {size / 1e3:.0f} kB", file=sys.stderr)
    finally:
        os.chdir(cwd)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
