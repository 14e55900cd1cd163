"""Time label assignment + loss: ``YoloV7Loss`` against the reference's ``ComputeLossOTA``.

Both run in one process on the same inputs: random raw maps (B, 3, H, W, 5 + nc) for the levels
of a square input (strides 8, 16, 32; with ``--aux`` a P6 head, strides 8-64, with auxiliary
maps, against ``ComputeLossAuxOTA``), and ``--targets`` boxes per image (uniform centres, sides
2-50% of the input, uniform classes). One untimed call first checks that the two agree (the
number of positives and the loss). Then the calls alternate (ours, the reference's, ...) so
that both see the same load; the first ``--warmup`` pairs are not timed and the median of the
next ``--steps`` is reported, with the ratio reference / ours. A call is the loss's forward:
label assignment and the loss terms (no backward).

The reference is imported from ``--reference`` (a WongKinYiu/yolov7 checkout; see
``tools/record_reference_assignment.py``).

Usage::

    .venv/bin/python benchmarks/assign_speed.py --reference /work/reference_yolov7
    .venv/bin/python benchmarks/assign_speed.py --reference ... --aux --img 1280 --batch 4
    .venv/bin/python benchmarks/assign_speed.py --reference ... --assign own_prior

Defaults: 640 px, batch 8, 30 boxes per image, 80 classes, one thread, CPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scaling_lab import ops
from scaling_lab.data import default_hyp
from scaling_lab.ops.modules import Detect
from scaling_lab.train.loss import ASSIGN_MODES, YoloV7Loss
from tools.record_reference_assignment import (
    StandInModel,
    load_reference,
    reference_config,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True, type=Path, help="yolov7 checkout")
    parser.add_argument("--assign", default="reference", choices=ASSIGN_MODES)
    parser.add_argument("--aux", action="store_true", help="P6 head with auxiliary maps")
    parser.add_argument("--img", type=int, default=640)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--targets", type=int, default=30, help="boxes per image")
    parser.add_argument("--nc", type=int, default=80)
    parser.add_argument("--steps", type=int, default=5, help="timed calls of each")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls of each first")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def random_targets(batch: int, per_image: int, nc: int, generator: torch.Generator):
    n = batch * per_image
    image = torch.arange(batch).repeat_interleave(per_image).float()[:, None]
    cls = torch.randint(0, nc, (n, 1), generator=generator).float()
    wh = torch.rand(n, 2, generator=generator) * 0.48 + 0.02
    xy = wh / 2 + torch.rand(n, 2, generator=generator) * (1 - wh)
    return torch.cat((image, cls, xy, wh), 1)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device) -> tuple[float, tuple]:
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    ref = load_reference(args.reference.resolve())
    anchors, _ = reference_config(args.reference, "yolov7-w6" if args.aux else "yolov7")
    strides = [8.0, 16.0, 32.0, 64.0] if args.aux else [8.0, 16.0, 32.0]
    hyp = default_hyp("p6" if args.aux else "p5")

    gen = torch.Generator().manual_seed(args.seed)
    shapes = [(args.batch, 3, args.img // int(s), args.img // int(s), 5 + args.nc) for s in strides]
    heads = 2 if args.aux else 1
    maps = [torch.randn(shape, generator=gen).to(device) for _ in range(heads) for shape in shapes]
    targets = random_targets(args.batch, args.targets, args.nc, gen).to(device)
    images = torch.zeros(args.batch, 3, args.img, args.img, device=device)

    op = ops.Detect(
        nc=args.nc,
        anchors=tuple(tuple(a) for a in anchors),
        strides=tuple(int(s) for s in strides),
        c_ins=(4,) * len(strides),
        aux_c_ins=(4,) * len(strides) if args.aux else (),
        implicit=False,
    )
    ours = YoloV7Loss(Detect(op).to(device), hyp, assign=args.assign)
    model = StandInModel(anchors, strides, args.nc, hyp).to(device)
    model.model[0].stride = model.model[0].stride.to(device)
    model.model[0].anchors = model.model[0].anchors.to(device)
    theirs = (ref.ComputeLossAuxOTA if args.aux else ref.ComputeLossOTA)(model)
    print(
        f"protocol: torch {torch.__version__}, threads {torch.get_num_threads()}, device "
        f"{device}, cpus {os.cpu_count()}, load {' '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    print(
        f"{'P6 + aux head (ComputeLossAuxOTA)' if args.aux else 'P5 lead head (ComputeLossOTA)'}"
        f", img {args.img}, batch {args.batch}, {args.targets} boxes/image, nc {args.nc}; "
        f"ours: assign={args.assign}; warmup {args.warmup}, median of {args.steps} calls"
    )

    # agreement: positives and loss on these inputs
    lead, aux = ours._split(maps)
    labels = ours.assign_labels(lead, aux, targets, images)
    build = theirs.build_targets(maps[: len(strides)], targets, images)
    ref_lead = sum(len(b) for b in build[0])
    _, our_items = ours(maps, targets, images)
    _, ref_items = theirs(maps, targets, images)
    rel = ((our_items - ref_items).abs() / ref_items.abs()).max().item()
    print(
        f"  agreement: lead positives {len(labels['lead'])} (reference {ref_lead}), "
        f"loss items max rel. difference {rel:.2e}"
    )

    times: dict[str, list[float]] = {"ours": [], "reference": []}
    for step in range(args.warmup + args.steps):
        t_ours, _ = _timed(lambda: ours(maps, targets, images), device)
        t_ref, _ = _timed(lambda: theirs(maps, targets, images), device)
        if step >= args.warmup:
            times["ours"].append(t_ours)
            times["reference"].append(t_ref)
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, value in med.items():
        spread = f"{1000 * min(times[name]):.1f}-{1000 * max(times[name]):.1f}"
        print(f"  {name:<10} {1000 * value:9.1f} ms/call   (range {spread} ms)")
    print(f"  ratio      {med['reference'] / med['ours']:9.2f} x  (reference / ours)")


if __name__ == "__main__":
    main()
