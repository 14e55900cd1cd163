"""Record the public YOLOX code's SimOTA positives and loss on seeded inputs, as test fixtures.

Runs Megvii-BaseDetection/YOLOX's ``YOLOXHead`` (its ``get_output_and_grid`` decode,
``get_assignments`` and ``get_losses``; the head's convs are never run) on seeded raw
predictions and writes one ``.npz`` per case, so that ``tests/train/test_yolox_oracle.py``
checks ``scaling_lab.train.heads.yolox`` without YOLOX installed.

Usage (an interpreter with torch, loguru, tabulate, psutil and OpenCV, which ``yolox.utils``
imports; not the project's venv)::

    git -C <mirror> archive HEAD yolox | tar -x -C /tmp/yolox-src
    /tmp/oracle-venv/bin/python tools/record_yolox_oracle.py \\
        --yolox /tmp/yolox-src --out tests/fixtures/yolox_oracle/
    # the SimOTA prior of YOLOX 0.1-0.2 (simota.LEGACY): the commit before 14c62a7
    git -C <mirror> archive 14c62a7^ yolox | tar -x -C /tmp/yolox-legacy
    /tmp/oracle-venv/bin/python tools/record_yolox_oracle.py --legacy \\
        --yolox /tmp/yolox-legacy --out tests/fixtures/yolox_oracle/

Cases ``boxes_{1,6,30}``: 2 images of 128 px, 3 levels (strides 8, 16, 32), 3 classes, 1, 6
and 30 boxes per image (the second image of ``boxes_1`` has none); with ``--legacy`` the
same cases as ``legacy_boxes_{1,6,30}`` (the older code's ``get_assignments`` signature).
Boxes lie on a quarter-pixel grid so that the normalized targets times 128 are the oracle's
pixel labels exactly. Raw
predictions are seeded normal values stored as float16 (their float32 upcast is the input).

Each ``.npz`` holds ``map_<i>`` (B, 5 + nc, H, W) float16 raw level maps [box, obj, classes],
``targets`` (N, 6) float32 [image, class, cx, cy, w, h] normalized, ``img_size``,
``strides``, ``nc``; the oracle's positives ``positives`` (P, 3) int64 [image, cell, target row
of ``targets``]; ``loss`` / ``iou`` / ``obj`` / ``cls`` / ``num_fg`` of ``get_losses`` without
the L1 term and ``loss_l1`` / ``l1`` with it; ``yolox_version`` and ``torch_version``.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

import numpy as np
import torch

NC, IMG, STRIDES, BATCH = 3, 128, (8, 16, 32), 2


def make_inputs(n_boxes: int, seed: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Seeded raw maps (float16-representable) and targets (N, 6) normalized."""
    gen = torch.Generator().manual_seed(seed)
    maps = []
    for s in STRIDES:
        h = IMG // s
        m = torch.randn(BATCH, 5 + NC, h, h, generator=gen)
        m[:, 0:2] = m[:, 0:2] * 0.5 + 0.5
        m[:, 2:4] = m[:, 2:4] * 0.6 + 0.7
        m[:, 4:] = m[:, 4:] * 1.5 - 2.0
        maps.append(m.half().float())
    rows = []
    for b in range(BATCH):
        n = n_boxes if (b == 0 or n_boxes > 1) else 0
        wh = torch.randint(24, 257, (n, 2), generator=gen).float() / 4  # 6 .. 64 px
        lo, hi = wh / 2, IMG - wh / 2
        u = torch.randint(0, 1025, (n, 2), generator=gen).float() / 1024
        centre = torch.round((lo + u * (hi - lo)) * 4) / 4
        cls = torch.randint(0, NC, (n, 1), generator=gen).float()
        img = torch.full((n, 1), float(b))
        rows.append(torch.cat((img, cls, centre / IMG, wh / IMG), 1))
    return maps, torch.cat(rows)


def run_oracle(head, maps: list[torch.Tensor], targets: torch.Tensor) -> dict[str, np.ndarray]:
    """The oracle's positives and loss terms (with and without L1) on one case."""
    outputs, xs, ys, strides, origin = [], [], [], [], []
    for k, (m, s) in enumerate(zip(maps, STRIDES)):
        out, grid = head.get_output_and_grid(m.clone(), k, s, m.type())
        outputs.append(out)
        xs.append(grid[:, :, 0])
        ys.append(grid[:, :, 1])
        strides.append(torch.full((1, grid.shape[1]), float(s)))
        origin.append(m[:, :4].permute(0, 2, 3, 1).reshape(BATCH, -1, 4).clone())
    outputs = torch.cat(outputs, 1)
    counts = [int((targets[:, 0] == b).sum()) for b in range(BATCH)]
    labels = torch.zeros(BATCH, max(max(counts), 1), 5)
    for b in range(BATCH):
        mine = targets[targets[:, 0] == b]
        labels[b, : len(mine), 0] = mine[:, 1]
        labels[b, : len(mine), 1:] = mine[:, 2:] * IMG
    record: dict[str, np.ndarray] = {}
    for use_l1 in (False, True):
        head.use_l1 = use_l1
        loss, iou, obj, cls, l1, _ = head.get_losses(
            None, xs, ys, strides, labels, outputs.clone(), origin, dtype=torch.float32
        )
        suffix = "_l1" if use_l1 else ""
        record["loss" + suffix] = np.float64(float(loss))
        if use_l1:
            record["l1"] = np.float64(float(l1))
        else:
            record.update(iou=np.float64(float(iou)), obj=np.float64(float(obj)))
            record["cls"] = np.float64(float(cls))
    record["positives"] = positives(head, outputs, labels, counts, xs, ys, strides)
    record["num_fg"] = np.int64(len(record["positives"]))
    return record


def positives(head, outputs, labels, counts, xs, ys, strides) -> np.ndarray:
    """Rows [image, cell, target row of the flat targets] of the oracle's SimOTA."""
    x_shifts, y_shifts, expanded = torch.cat(xs, 1), torch.cat(ys, 1), torch.cat(strides, 1)
    rows, offset = [], 0
    for b, n in enumerate(counts):
        if n:
            gt_boxes, gt_classes, boxes = labels[b, :n, 1:5], labels[b, :n, 0], outputs[b, :, :4]
            cls, obj = outputs[:, :, 5:], outputs[:, :, 4:5]
            if "total_num_anchors" in inspect.signature(head.get_assignments).parameters:
                args = (b, n, outputs.shape[1], gt_boxes, gt_classes, boxes, expanded)
                rest = (x_shifts, y_shifts, cls, outputs[:, :, :4], obj, labels, None)
            else:
                args = (b, n, gt_boxes, gt_classes, boxes, expanded)
                rest = (x_shifts, y_shifts, cls, obj)
            _, fg, _, matched, _ = head.get_assignments(*args, *rest)
            cells = fg.nonzero().squeeze(1)
            for cell, gt in zip(cells.tolist(), matched.tolist()):
                rows.append((b, cell, offset + gt))
        offset += n
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--yolox", required=True, help="folder holding the yolox package")
    parser.add_argument("--out", required=True)
    parser.add_argument("--legacy", action="store_true", help="name the cases legacy_*")
    args = parser.parse_args()
    sys.path.insert(0, args.yolox)
    import yolox
    from yolox.models.yolo_head import YOLOXHead

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    head = YOLOXHead(NC, width=0.125, strides=list(STRIDES))
    for i, n_boxes in enumerate((1, 6, 30)):
        maps, targets = make_inputs(n_boxes, seed=100 + i)
        record = run_oracle(head, maps, targets)
        data = {f"map_{k}": m.half().numpy() for k, m in enumerate(maps)}
        data.update(
            targets=targets.numpy(),
            img_size=np.int64(IMG),
            strides=np.array(STRIDES, dtype=np.int64),
            nc=np.int64(NC),
            yolox_version=np.array(yolox.__version__),
            torch_version=np.array(torch.__version__),
            **record,
        )
        name = f"{'legacy_' if args.legacy else ''}boxes_{n_boxes}"
        np.savez_compressed(out / f"{name}.npz", **data)
        print(f"{name}: {len(record['positives'])} positives, loss {record['loss']:.6f}")


if __name__ == "__main__":
    main()
