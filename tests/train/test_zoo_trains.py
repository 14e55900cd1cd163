"""Every zoo model trains: scaled small (width 1/8, depth 1/3), each takes 12 Adam steps on one
fixed batch with the loss of its head family (as the trainer builds it), and its loss falls
(the median of the last 5 steps below the first).
The anchor-free heads also export to ONNX with their decode and match torch.

The default run trains one model per head family; the rest run with the slow tests."""

from __future__ import annotations

import pytest
import torch

from scaling_lab import list_models
from scaling_lab.data import default_hyp
from scaling_lab.models import create_model, get_block_graph
from scaling_lab.train.heads import head_family, with_decode
from scaling_lab.train.recipe_fit import detect_head, model_size
from scaling_lab.transforms.scale import scale

SIZE, P6_SIZE, NC, STEPS = 64, 128, 3, 12
TRAINED_BY_DEFAULT = {"yolov7-tiny", "yolox-s", "ppyoloe-s"}
# normalized (cx, cy, w, h): sizes from 5 to 45 px at 64 px, so every level gets positives
BOXES = [
    (0.5, 0.5, 0.7, 0.6),
    (0.25, 0.3, 0.35, 0.4),
    (0.7, 0.7, 0.2, 0.25),
    (0.2, 0.8, 0.12, 0.1),
    (0.8, 0.2, 0.08, 0.12),
    (0.55, 0.45, 0.3, 0.2),
]


def small_model(name: str, size: int = SIZE) -> torch.nn.Module:
    graph = get_block_graph(name, nc=NC, img_size=size)
    graph = scale(scale(graph, width=0.125, mode="width"), depth=0.34, mode="depth")
    model = create_model(graph)
    if model_size(model) == "p6" and size < P6_SIZE:  # not a P6 level of 1 cell
        return small_model(name, P6_SIZE)
    return model


def fixed_batch(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    rows = [[b, i % NC, *box] for b in (0, 1) for i, box in enumerate(BOXES)]
    return images, torch.tensor(rows, dtype=torch.float32)


def criterion(model: torch.nn.Module, size: int):
    """The loss as the trainer builds it: the family's recipe over the defaults, its gains."""
    family = head_family(model)
    hyp = {**default_hyp(model_size(model)), **family.recipe}
    if family.fit_gains is not None:
        head = detect_head(model)
        n_levels = head.n_levels if head is not None else 3
        hyp = family.fit_gains(hyp, n_levels=n_levels, nc=NC, img_size=size)
    return family.loss(model, hyp)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=() if name in TRAINED_BY_DEFAULT else pytest.mark.slow)
        for name in list_models()
    ],
)
def test_zoo_model_loss_falls_on_a_fixed_batch(name: str) -> None:
    torch.manual_seed(0)
    model = small_model(name).train()
    init = head_family(model).init
    if init is not None:  # as the trainer starts a fresh run
        init(model)
    size = model.layer_graph.input_shape.h
    loss_fn = criterion(model, size)
    images, targets = fixed_batch(size)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(STEPS):
        loss, items = loss_fn(model(images), targets, images)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        assert torch.isfinite(loss) and items.shape == (4,)
        losses.append(float(loss.detach()))
    # the median of the last 5 steps: a YOLO head's per-level box means jump when a level
    # gains its first positive, so single steps are noisy
    assert sorted(losses[-5:])[2] < losses[0], losses


@pytest.mark.parametrize("name", ["yolox-s", "ppyoloe-s"])
def test_anchor_free_export_with_decode_matches_torch(name: str, tmp_path) -> None:
    pytest.importorskip("onnxruntime", reason="ONNX checks need the 'onnx' extra")
    from scaling_lab.analyze import onnx_export

    module = with_decode(small_model(name)).eval()
    path = onnx_export.export_onnx(module, tmp_path / f"{name}.onnx", img_size=SIZE)
    check = onnx_export.check_onnx(module, path, img_size=SIZE)
    assert check.max_abs_diff_scores <= 1e-4, check
    assert check.ok, check
    with torch.inference_mode():
        out = module(torch.rand(1, 3, SIZE, SIZE))
    assert out.shape == (1, (8 * 8 + 4 * 4 + 2 * 2), 5 + NC)  # decoded rows of all cells
