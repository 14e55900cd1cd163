"""Record the reference implementation's label assignment and loss as test fixtures.

Runs WongKinYiu/yolov7's ``ComputeLossOTA`` (lead-only P5 head) and ``ComputeLossAuxOTA``
(P6 head with an auxiliary head) on seeded inputs and writes, per case, one ``.npz`` with the
inputs and what the reference made of them, so that ``tests/train/test_reference_assign.py``
checks ``YoloV7Loss(..., assign="reference")`` without the reference installed.

Usage::

    .venv/bin/python tools/record_reference_assignment.py \\
        --reference /work/reference_yolov7 --out tests/fixtures/reference_assign/

The reference is imported from ``--reference`` (its ``utils/loss.py``); any interpreter with
torch, numpy, pandas, PyYAML and matplotlib runs it (OpenCV, which the reference's
``utils.general`` imports but its loss does not use, is replaced by a stand-in when absent).

Cases: ``p5_lead_{1,6,30}`` (3 levels, strides 8-32, 128 px, 2 images) and
``p6_aux_{1,6,30}`` (4 levels, strides 8-64, 192 px, 2 images, auxiliary maps) with 1, 6 and 30
boxes per image; ``edges_p5`` / ``edges_p6`` with 3 images: boxes at the image borders and
with centres on cell borders, an image without boxes, a tiny box (dynamic k = 1) and a box
too small for any anchor. 3 classes. Predictions are seeded normal logits, stored as float16
(the float32 inputs are their exact upcast), so the files stay small.

Each ``.npz`` holds: ``lead_<i>`` / ``aux_<i>`` (B, na, H, W, 5 + nc) float16 maps, ``targets``
(N, 6) float32 [image, class, cx, cy, w, h] normalized, ``img_size``, ``strides`` (L,),
``anchors`` (L, na, 2) in pixels, ``nc``, ``hyp_<key>``; the reference's positives
``pos_lead`` and (P6) ``pos_aux``, (P, 6) int64 rows [level, image, anchor, gj, gi, target
row], in the reference's order (the target row found by matching the returned target to the
input rows, which are distinct); ``loss_items`` [box, obj, cls, total] and ``loss`` (total x
batch size) of the reference's ``__call__``; ``torch_version``.
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import numpy as np
import torch
import yaml

NC = 3
HYP_KEYS = ("box", "obj", "cls", "cls_pw", "obj_pw", "anchor_t", "fl_gamma")
# normalized [class, cx, cy, w, h] of the edge cases' first image: a full-image box, boxes
# touching the borders, centres on cell borders (copies of the centre cell), centres on the
# image border
EDGE_IMAGE0 = (
    (0, 0.5, 0.5, 1.0, 1.0),
    (1, 0.0625, 0.125, 0.125, 0.25),
    (2, 0.9, 0.95, 0.2, 0.1),
    (0, 0.25, 0.75, 0.3, 0.3),
    (1, 0.0, 0.3, 0.1, 0.1),
    (2, 1.0, 1.0, 0.1, 0.1),
)
# the third image (the second has no boxes): a tiny box (k = 1), one too small for any anchor
# (its prior is empty; the pooled match still gives it a positive), a medium one
EDGE_IMAGE2 = ((1, 0.4, 0.6, 0.04, 0.04), (0, 0.2, 0.2, 0.01, 0.01), (2, 0.7, 0.3, 0.3, 0.4))


def load_reference(root: Path) -> types.ModuleType:
    """The reference's ``utils.loss``, imported from ``root``."""
    if not (root / "utils" / "loss.py").is_file():
        raise SystemExit(f"{root} is not a yolov7 checkout (no utils/loss.py)")
    try:
        import cv2  # noqa: F401
    except ImportError:
        stand_in = types.ModuleType("cv2")
        stand_in.setNumThreads = lambda n: None  # type: ignore[attr-defined]
        sys.modules["cv2"] = stand_in
    sys.path.insert(0, str(root))
    import utils.loss

    return utils.loss


def reference_config(root: Path, name: str) -> tuple[list[list[float]], dict]:
    """Anchors (pixels, per level) of ``cfg/training/<name>.yaml`` and the P5 scratch hyp."""
    cfg = yaml.safe_load((root / "cfg" / "training" / f"{name}.yaml").read_text())
    hyp = yaml.safe_load((root / "data" / "hyp.scratch.p5.yaml").read_text())
    return [list(map(float, a)) for a in cfg["anchors"]], {k: float(hyp[k]) for k in HYP_KEYS}


class _Det:
    """The attributes of the reference's ``Detect`` that its losses read."""

    def __init__(self, anchors: list[list[float]], strides: list[float], nc: int) -> None:
        self.nl, self.na, self.nc = len(strides), len(anchors[0]) // 2, nc
        self.stride = torch.tensor(strides)
        pixels = torch.tensor(anchors, dtype=torch.float32).view(self.nl, -1, 2)
        self.anchors = pixels / self.stride.view(-1, 1, 1)  # grid units, as Model() stores them


class StandInModel(torch.nn.Module):
    """What ``ComputeLossOTA(model)`` reads from a model: hyp, gr, parameters, model[-1]."""

    def __init__(self, anchors: list[list[float]], strides: list[float], nc: int, hyp: dict):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.model = [_Det(anchors, strides, nc)]
        self.hyp, self.gr = hyp, 1.0


def random_targets(n_images: int, per_image: int, generator: torch.Generator, max_side: float):
    rows = []
    for image in range(n_images):
        wh = torch.rand(per_image, 2, generator=generator) * (max_side - 0.02) + 0.02
        xy = wh / 2 + torch.rand(per_image, 2, generator=generator) * (1 - wh)
        cls = torch.randint(0, NC, (per_image, 1), generator=generator).float()
        rows.append(torch.cat((torch.full((per_image, 1), float(image)), cls, xy, wh), 1))
    return torch.cat(rows)


def edge_targets() -> torch.Tensor:
    rows = [(0, *r) for r in EDGE_IMAGE0] + [(2, *r) for r in EDGE_IMAGE2]
    return torch.tensor(rows, dtype=torch.float32)


def positives(built: tuple, targets: torch.Tensor) -> np.ndarray:
    """(P, 6) [level, image, anchor, gj, gi, target row] of a ``build_targets`` result."""
    bs, anchors, gjs, gis, matched = built[:5]
    out = []
    for level in range(len(bs)):
        for b, a, gj, gi, row in zip(
            bs[level].tolist(),
            anchors[level].tolist(),
            gjs[level].tolist(),
            gis[level].tolist(),
            matched[level],
        ):
            hits = (targets == row).all(1).nonzero()[:, 0].tolist()
            if len(hits) != 1:
                raise SystemExit("targets must be distinct rows")
            out.append((level, b, a, gj, gi, hits[0]))
    return np.asarray(out, dtype=np.int64).reshape(-1, 6)


def record_case(
    ref, root: Path, out: Path, name: str, aux: bool, targets: torch.Tensor, seed: int
) -> dict:
    anchors, hyp = reference_config(root, "yolov7-w6" if aux else "yolov7")
    strides = [8.0, 16.0, 32.0, 64.0] if aux else [8.0, 16.0, 32.0]
    img = 192 if aux else 128
    n_images = int(targets[:, 0].max()) + 1 if len(targets) else 1
    n_images = max(n_images, 2)
    generator = torch.Generator().manual_seed(seed)
    shapes = [(n_images, 3, img // int(s), img // int(s), 5 + NC) for s in strides]
    heads = ("lead", "aux") if aux else ("lead",)
    stored = {
        f"{head}_{i}": torch.randn(shape, generator=generator).half()
        for head in heads
        for i, shape in enumerate(shapes)
    }
    maps = {k: v.float() for k, v in stored.items()}
    lead = [maps[f"lead_{i}"] for i in range(len(strides))]
    outputs = lead + ([maps[f"aux_{i}"] for i in range(len(strides))] if aux else [])
    images = torch.zeros(n_images, 3, img, img)
    model = StandInModel(anchors, strides, NC, hyp)
    loss_cls = ref.ComputeLossAuxOTA if aux else ref.ComputeLossOTA
    loss_fn = loss_cls(model)
    data = {k: v.numpy() for k, v in stored.items()}
    data["pos_lead"] = positives(loss_fn.build_targets(lead, targets, images), targets)
    if aux:
        data["pos_aux"] = positives(loss_fn.build_targets2(lead, targets, images), targets)
    loss, items = loss_fn(outputs, targets, images)
    data.update(
        targets=targets.numpy(),
        img_size=np.int64(img),
        strides=np.asarray(strides, dtype=np.float32),
        anchors=np.asarray(anchors, dtype=np.float32).reshape(len(strides), -1, 2),
        nc=np.int64(NC),
        loss_items=items.numpy(),
        loss=loss.detach().numpy().reshape(()),
        torch_version=np.str_(torch.__version__),
        **{f"hyp_{k}": np.float64(v) for k, v in hyp.items()},
    )
    path = out / f"{name}.npz"
    np.savez_compressed(path, **data)
    return {"case": name, "lead": len(data["pos_lead"]), "aux": len(data.get("pos_aux", []))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True, type=Path, help="yolov7 checkout")
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/reference_assign"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    ref = load_reference(args.reference.resolve())
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for aux in (False, True):
        prefix = "p6_aux" if aux else "p5_lead"
        for per_image in (1, 6, 30):
            seed = args.seed + 100 * per_image + aux
            generator = torch.Generator().manual_seed(seed)
            targets = random_targets(2, per_image, generator, 0.8 if aux else 0.5)
            name = f"{prefix}_{per_image}"
            rows.append(record_case(ref, args.reference, args.out, name, aux, targets, seed))
        edges = f"edges_{prefix[:2]}"
        rows.append(record_case(ref, args.reference, args.out, edges, aux, edge_targets(), 7))
    total = sum(p.stat().st_size for p in args.out.glob("*.npz"))
    for row in rows:
        print(f"  {row['case']:<10} lead positives {row['lead']:4d}  aux positives {row['aux']:4d}")
    size = f"{total / 1024:.0f} KiB"
    print(f"wrote {len(rows)} cases to {args.out} ({size}, torch {torch.__version__})")


if __name__ == "__main__":
    main()
