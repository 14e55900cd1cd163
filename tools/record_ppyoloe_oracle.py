"""Record PaddleDetection's PP-YOLOE assignment and loss on seeded inputs, as test fixtures.

Runs PaddleDetection's ``PPYOLOEHead.get_loss`` (its decode, ``ATSSAssigner`` /
``TaskAlignedAssigner``, varifocal, GIoU and DFL losses; the head's convs are never run) with
paddlepaddle on the CPU, on seeded raw predictions, and writes one ``.npz`` per case, so that
``tests/train/test_ppyoloe_oracle.py`` checks ``scaling_lab.train.heads.ppyoloe`` without
Paddle installed.

Usage (an interpreter with paddlepaddle and numpy, not the project's venv; only the modules
the loss needs are loaded from the source tree, the rest of ``ppdet`` is stubbed)::

    git -C <mirror> archive HEAD ppdet/modeling | tar -x -C /tmp/ppdet-src
    /tmp/paddle-venv/bin/python tools/record_ppyoloe_oracle.py \\
        --ppdet /tmp/ppdet-src --out tests/fixtures/ppyoloe_oracle/

Cases ``{tal,atss}_{1,6,30,3_7}``: 2 images of 128 px, 3 levels in PaddleDetection's order
(strides 32, 16, 8), reg_max 16, 3 classes, 1, 6 and 30 boxes per image (the second image of
the 1-box cases has none) and 3 and 7 (padded targets); ``tal`` after the static epochs,
``atss`` within them. Raw predictions are seeded normal values stored as float16 (their
float32 upcast is the input).

Each ``.npz`` holds ``map_<i>`` (B, 4 x 17 + nc, H, W) float16 raw level maps [distance bins,
class logits], ``targets`` (N, 6) float32 [image, class, cx, cy, w, h] normalized,
``img_size``, ``strides``, ``nc``, ``reg_max``, ``static`` (1 for ATSS); the oracle's
positives ``positives`` (P, 3) int64 [image, cell, target row of ``targets``], its soft
scores' sum ``score_sum``, ``loss``, ``loss_cls``, ``loss_iou``, ``loss_dfl`` (unweighted;
``loss`` is 1 x cls + 2.5 x iou + 0.5 x dfl); ``paddle_version``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import types
from pathlib import Path

import numpy as np

NC, IMG, STRIDES, BATCH, REG_MAX = 3, 128, (32, 16, 8), 2, 16


def stub_ppdet(root: str) -> None:
    """Make ``ppdet.modeling``'s loss modules importable without the rest of ``ppdet``."""
    base = Path(root) / "ppdet"

    def package(name: str, path: Path | None) -> types.ModuleType:
        module = types.ModuleType(name)
        module.__path__ = [str(path)] if path else []
        sys.modules[name] = module
        return module

    package("ppdet", base)
    package("ppdet.core", None)
    workspace = types.ModuleType("ppdet.core.workspace")
    workspace.register = workspace.serializable = lambda cls: cls
    sys.modules["ppdet.core.workspace"] = workspace
    package("ppdet.modeling", base / "modeling")
    for sub in ("assigners", "heads", "losses", "backbones"):
        package(f"ppdet.modeling.{sub}", base / "modeling" / sub)
    ops = types.ModuleType("ppdet.modeling.ops")
    ops.get_static_shape = lambda t: t.shape
    ops.get_act_fn = lambda act, trt=False: act
    sys.modules["ppdet.modeling.ops"] = ops
    layers = types.ModuleType("ppdet.modeling.layers")
    layers.MultiClassNMS = type("MultiClassNMS", (), {})
    sys.modules["ppdet.modeling.layers"] = layers
    backbone = types.ModuleType("ppdet.modeling.backbones.cspresnet")
    backbone.ConvBNLayer = backbone.RepVggBlock = None
    sys.modules["ppdet.modeling.backbones.cspresnet"] = backbone
    iou_loss = importlib.import_module("ppdet.modeling.losses.iou_loss")
    sys.modules["ppdet.modeling.losses"].GIoULoss = iou_loss.GIoULoss


def make_inputs(n_boxes: int | tuple[int, int], seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Seeded raw maps (float16-representable) and targets (N, 6) normalized; ``n_boxes`` per
    image, or one count per image."""
    rng = np.random.default_rng(seed)
    maps = []
    for s in STRIDES:
        h = IMG // s
        m = rng.normal(size=(BATCH, 4 * (REG_MAX + 1) + NC, h, h)).astype(np.float32)
        m[:, : 4 * (REG_MAX + 1)] *= 2.0
        m[:, 4 * (REG_MAX + 1) :] = m[:, 4 * (REG_MAX + 1) :] * 1.5 - 2.0
        maps.append(m.astype(np.float16).astype(np.float32))
    rows = []
    for b in range(BATCH):
        counts = n_boxes if isinstance(n_boxes, tuple) else (n_boxes, n_boxes if n_boxes > 1 else 0)
        n = counts[b]
        wh = rng.uniform(6, 64, size=(n, 2)).astype(np.float32)
        centre = (wh / 2 + rng.uniform(0, 1, size=(n, 2)) * (IMG - wh)).astype(np.float32)
        cls = rng.integers(0, NC, size=(n, 1)).astype(np.float32)
        img = np.full((n, 1), float(b), dtype=np.float32)
        rows.append(np.concatenate((img, cls, centre / IMG, wh / IMG), 1))
    return maps, np.concatenate(rows).astype(np.float32)


def run_oracle(maps: list[np.ndarray], targets: np.ndarray, static: bool) -> dict:
    """The oracle's positives and loss terms on one case."""
    import paddle
    import paddle.nn as nn
    from ppdet.modeling.assigners.atss_assigner import ATSSAssigner
    from ppdet.modeling.assigners.task_aligned_assigner import TaskAlignedAssigner
    from ppdet.modeling.assigners.utils import generate_anchors_for_grid_cell
    from ppdet.modeling.heads.ppyoloe_head import PPYOLOEHead
    from ppdet.modeling.losses.iou_loss import GIoULoss

    head = PPYOLOEHead.__new__(PPYOLOEHead)
    nn.Layer.__init__(head)
    head.num_classes, head.sm_use, head.for_distill = NC, False, False
    head.reg_range, head.reg_channels = (0, REG_MAX + 1), REG_MAX + 1
    head.iou_loss, head.use_varifocal_loss = GIoULoss(), True
    head.loss_weight = {"class": 1.0, "iou": 2.5, "dfl": 0.5}
    head.static_assigner_epoch = 100
    head.proj_conv = nn.Conv2D(REG_MAX + 1, 1, 1, bias_attr=False)
    head.proj_conv.weight.set_value(
        paddle.linspace(0, REG_MAX, REG_MAX + 1).reshape([1, REG_MAX + 1, 1, 1])
    )
    seen: dict = {}

    def recording(assigner):
        def run(*args, **kwargs):
            out = assigner(*args, **kwargs)
            seen["labels"], seen["boxes"], seen["scores"] = (o.numpy() for o in out)
            return out

        return run

    head.static_assigner = recording(ATSSAssigner(topk=9, num_classes=NC))
    head.assigner = recording(TaskAlignedAssigner(topk=13, alpha=1.0, beta=6.0))
    feats = [paddle.to_tensor(m) for m in maps]
    anchors, points, counts, stride = generate_anchors_for_grid_cell(feats, list(STRIDES), 5.0, 0.5)
    flat = [f.flatten(2).transpose([0, 2, 1]) for f in feats]
    raw = paddle.concat(flat, axis=1)
    n_bins = 4 * (REG_MAX + 1)
    scores = paddle.nn.functional.sigmoid(raw[:, :, n_bins:])
    labels, boxes, mask = pad(targets)
    gt_meta = {
        "gt_class": paddle.to_tensor(labels),
        "gt_bbox": paddle.to_tensor(boxes),
        "pad_gt_mask": paddle.to_tensor(mask),
        "epoch_id": 0 if static else 100,
    }
    head_outs = [scores, raw[:, :, :n_bins], anchors, points, counts, stride]
    loss = head.get_loss(head_outs, gt_meta)
    record = {k: np.float64(float(v)) for k, v in loss.items() if k != "loss_l1"}
    record["positives"] = positives(seen, labels, boxes, mask)
    record["score_sum"] = np.float64(float(seen["scores"].sum()))
    return record


def pad(targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    counts = [int((targets[:, 0] == b).sum()) for b in range(BATCH)]
    n = max(counts)
    labels = np.zeros((BATCH, n, 1), dtype=np.int32)
    boxes = np.zeros((BATCH, n, 4), dtype=np.float32)
    mask = np.zeros((BATCH, n, 1), dtype=np.float32)
    for b in range(BATCH):
        mine = targets[targets[:, 0] == b]
        centre, wh = mine[:, 2:4] * IMG, mine[:, 4:6] * IMG
        labels[b, : len(mine), 0] = mine[:, 1].astype(np.int32)
        boxes[b, : len(mine)] = np.concatenate((centre - wh / 2, centre + wh / 2), 1)
        mask[b, : len(mine)] = 1.0
    return labels, boxes, mask


def positives(seen: dict, labels, boxes, mask) -> np.ndarray:
    """Rows [image, cell, target row]: the target found by its (distinct) box."""
    rows, offset = [], 0
    for b in range(BATCH):
        n = int(mask[b].sum())
        for cell in np.nonzero(seen["labels"][b] != NC)[0]:
            hit = np.nonzero(np.all(boxes[b, :n] == seen["boxes"][b, cell], axis=1))[0]
            assert len(hit) == 1, "assigned box matches no unique target"
            rows.append((b, int(cell), offset + int(hit[0])))
        offset += n
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ppdet", required=True, help="folder holding ppdet/modeling")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    stub_ppdet(args.ppdet)
    import paddle

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for static in (False, True):
        for i, n_boxes in enumerate((1, 6, 30, (3, 7))):
            maps, targets = make_inputs(n_boxes, seed=200 + i)
            record = run_oracle(maps, targets, static)
            count = "_".join(map(str, n_boxes)) if isinstance(n_boxes, tuple) else n_boxes
            name = f"{'atss' if static else 'tal'}_{count}"
            data = {f"map_{k}": m.astype(np.float16) for k, m in enumerate(maps)}
            data.update(
                targets=targets,
                img_size=np.int64(IMG),
                strides=np.array(STRIDES, dtype=np.int64),
                nc=np.int64(NC),
                reg_max=np.int64(REG_MAX),
                static=np.int64(static),
                paddle_version=np.array(paddle.__version__),
                **record,
            )
            np.savez_compressed(out / f"{name}.npz", **data)
            print(f"{name}: {len(record['positives'])} positives, loss {record['loss']:.6f}")


if __name__ == "__main__":
    main()
