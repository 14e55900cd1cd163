"""COCOeval time of pycocotools and faster-coco-eval on the main job's evaluation, side by
side in one run, and whether their AP agrees.

The evaluation the main job (experiments/elan_search.yaml) runs: the synthetic set's val
split (400 images at 128 px, 30% val: 120 images), the predictions of a YOLOv7-tiny through
the project's pipeline (NMS at conf 0.001, up to 300 boxes per image; an untrained model fills
them, as an early-epoch one does). Each evaluator scores the same COCO-format predictions from
the annotation file (ground truth read, results loaded, evaluate, accumulate, summarize: what
``coco_eval.evaluate`` does per evaluation), alternating, ``--repeats`` times; the median.

    .venv/bin/python benchmarks/coco_eval_speed.py [--repeats 5] [--data SYNTH]

Last line: ``COCOeval s per evaluation: pycocotools A, faster-coco-eval B, R x``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch

from scaling_lab.data import build_dataloader, resolve_data
from scaling_lab.eval_protocol import AP_KEYS
from scaling_lab.models import create_model, get_block_graph
from scaling_lab.train.coco_eval import coco_metrics, evaluate

DATA = "synth:images=400,size=128,val_fraction=0.3"  # experiments/elan_search.yaml's


def predictions(data: str, img_size: int) -> tuple[Path, list[dict]]:
    """The val annotation file and an untrained YOLOv7-tiny's COCO predictions on it."""
    info = resolve_data(data)
    loader = build_dataloader(info, "val", img_size=img_size, batch_size=16, augment=False)
    torch.manual_seed(0)
    model = create_model(get_block_graph("yolov7-tiny", nc=info.nc, img_size=img_size))
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "pred.json"
        evaluate(model, loader, info.val_ann, save_json=out, progress=False)
        return info.val_ann, json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data", default=DATA)
    parser.add_argument("--img", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(1)
    ann, results = predictions(args.data, args.img)
    images = len({r["image_id"] for r in results})
    print(f"{len(results)} predictions on {images} images ({args.data}, {args.img} px)")
    times: dict[str, list[float]] = {"pycocotools": [], "faster": []}
    metrics = {}
    for _ in range(args.repeats):
        for evaluator in times:
            started = time.perf_counter()
            metrics[evaluator] = coco_metrics(ann, results, evaluator=evaluator)
            times[evaluator].append(time.perf_counter() - started)
    fast, ref = metrics["faster"], metrics["pycocotools"]
    same = all(fast[k] == ref[k] or (math.isnan(fast[k]) and math.isnan(ref[k])) for k in AP_KEYS)
    print(f"AP keys identical: {same} (AP50 {metrics['faster']['AP50']:.6f})")
    old, new = (statistics.median(times[e]) for e in ("pycocotools", "faster"))
    print(
        f"COCOeval s per evaluation: pycocotools {old:.3f}, faster-coco-eval {new:.3f}, "
        f"{old / new:.2f}x"
    )


if __name__ == "__main__":
    main()
