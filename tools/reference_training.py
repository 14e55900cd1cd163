"""Train side by side with the public reference trainer (WongKinYiu/yolov7 ``train.py``) and
record the numbers in ``reports/recipe_fidelity/``.

The reference's code is run, never copied: ``prepare`` copies a checkout into a scratch folder
and changes three constants of its ``train.py`` there (nominal batch, minimum warm-up steps,
seed), because the comparison's budget (10 epochs of 30 steps) needs them lowered in both
trainers and the reference has no flags for them. Both trainers read the same files: the
synthetic set exported to the YOLO layout with one polygon per object (its visible outline),
so the reference's mask-based paste-in has masks to cut from. Both runs' final EMA weights are
evaluated by our pycocotools evaluator (the reference's checkpoint through
``lab convert-weights``).

Steps (each resumable; a finished run is skipped)::

    python tools/reference_training.py export  --out /tmp/fidelity/data
    python tools/reference_training.py reference --reference /work/reference_yolov7 \\
        --python /work/ref_venv/bin/python --seeds 0 1 --work /tmp/fidelity
    python tools/reference_training.py ours --seeds 0 1 --work /tmp/fidelity
    python tools/reference_training.py report --work /tmp/fidelity

``export`` and ``reference`` need OpenCV (the contour tracing of ``export`` and the reference's
own imports); run them with a Python that has it (the reference's environment).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BUDGET = {"img": 320, "batch": 16, "epochs": 10, "nominal_batch": 16, "warmup_min_steps": 0}
MODEL = "yolov7-tiny"
REFERENCE_CFG = "cfg/training/yolov7-tiny.yaml"
REFERENCE_HYP = "data/hyp.scratch.tiny.yaml"
# the three constants of the reference's train.py the comparison lowers, and one call its
# metrics.py makes that numpy 2 removed (file, pattern, replacement)
PATCHES = (
    ("train.py", r"nbs = 64 ", "nbs = {nominal_batch} "),
    (
        "train.py",
        r"round\(hyp\['warmup_epochs'\] \* nb\), 1000\)",
        "round(hyp['warmup_epochs'] * nb), {warmup})",
    ),
    ("train.py", r"init_seeds\(2 \+ rank\)", "init_seeds({seed} + 1 + rank)"),
    ("utils/metrics.py", r"np\.trapz\(", "np.trapezoid("),
)


def export(out: Path, images: int, size: int, seed: int) -> None:
    """The synthetic set in the YOLO layout: polygon label lines (``class x1 y1 x2 y2 ...``,
    normalized), one per object, traced from its visible mask (the largest outline)."""
    import cv2
    import numpy as np
    from pycocotools import mask as mask_utils

    from scaling_lab.data.synth import CLASSES, ensure_synth

    src = ensure_synth(out.parent / "synth-cache", images=images, size=size, seed=seed)
    for split in ("train", "val"):
        coco = json.loads((src / "annotations" / f"instances_{split}.json").read_text())
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        by_image: dict[int, list[dict]] = {}
        for ann in coco["annotations"]:
            by_image.setdefault(ann["image_id"], []).append(ann)
        for img in coco["images"]:
            shutil.copyfile(
                src / "images" / split / img["file_name"], out / "images" / split / img["file_name"]
            )
            w, h = img["width"], img["height"]
            lines = []
            for ann in by_image.get(img["id"], []):
                rle = dict(ann["segmentation"], counts=ann["segmentation"]["counts"].encode())
                mask = mask_utils.decode(rle)
                contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
                outline = max(contours, key=cv2.contourArea).reshape(-1, 2).astype(np.float64)
                if len(outline) < 3:  # a sliver: keep its box
                    x, y, bw, bh = ann["bbox"]
                    outline = np.array([[x, y], [x + bw, y], [x + bw, y + bh], [x, y + bh]])
                pts = (outline / [w, h]).clip(0, 1).reshape(-1)
                lines.append(" ".join([str(ann["category_id"] - 1), *(f"{v:.6f}" for v in pts)]))
            stem = Path(img["file_name"]).stem
            (out / "labels" / split / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    names = list(CLASSES)
    (out / "data.yaml").write_text(
        f"train: {out / 'images' / 'train'}\nval: {out / 'images' / 'val'}\n"
        f"nc: {len(names)}\nnames: {names}\n"
    )
    print(f"exported {src} -> {out}")


def _patched_reference(reference: Path, work: Path, seed: int) -> Path:
    """A scratch copy of the reference checkout whose train.py has the comparison's constants."""
    dest = work / f"reference-code-seed{seed}"
    if not dest.exists():
        shutil.copytree(reference, dest, ignore=shutil.ignore_patterns(".git", "runs"))
    values = {
        "nominal_batch": BUDGET["nominal_batch"],
        "warmup": BUDGET["warmup_min_steps"],
        "seed": seed,
    }
    for name, pattern, replacement in PATCHES:
        path = dest / name
        text, n = re.subn(pattern, replacement.format(**values), path.read_text())
        if n != 1 and replacement.format(**values) not in text:
            raise SystemExit(f"reference {name}: pattern {pattern!r} not found once")
        path.write_text(text)
    return dest


def run_reference(reference: Path, python: str, work: Path, seeds: list[int]) -> None:
    data = work / "data"
    for seed in seeds:
        run = work / "runs" / f"reference-seed{seed}"
        if (run / "weights" / "last.pt").is_file() and (run / "done").is_file():
            continue
        code = _patched_reference(reference, work, seed)
        cmd = [
            python, "train.py", "--workers", "0", "--device", "cpu",
            "--batch-size", str(BUDGET["batch"]), "--data", str(data / "data.yaml"),
            "--img-size", str(BUDGET["img"]), str(BUDGET["img"]), "--cfg", REFERENCE_CFG,
            "--weights", "", "--hyp", REFERENCE_HYP, "--epochs", str(BUDGET["epochs"]),
            "--noautoanchor", "--exist-ok", "--project", str(work / "runs"),
            "--name", f"reference-seed{seed}",
        ]  # fmt: skip
        env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "WANDB_MODE": "disabled"}
        started = time.time()
        subprocess.run(cmd, cwd=code, env=env, check=True)
        (run / "done").write_text(json.dumps({"seconds": time.time() - started}))


def run_ours(work: Path, seeds: list[int], recipe: str) -> None:
    for seed in seeds:
        run = work / "runs" / f"ours-{recipe}-seed{seed}"
        if (run / "done").is_file():
            continue
        cmd = [
            str(ROOT / ".venv" / "bin" / "lab"), "train", "--model", MODEL,
            "--data", str(work / "data"), "--img", str(BUDGET["img"]),
            "--batch", str(BUDGET["batch"]), "--epochs", str(BUDGET["epochs"]),
            "--nominal-batch", str(BUDGET["nominal_batch"]),
            "--warmup-min-steps", str(BUDGET["warmup_min_steps"]), "--device", "cpu",
            "--seed", str(seed), "--recipe", recipe, "--out", str(run), "--no-tensorboard",
            "--no-autoanchor",  # as the reference side (--noautoanchor)
        ]  # fmt: skip
        if run.exists():
            cmd = [cmd[0], "train", "--resume", str(run)]
        started = time.time()
        subprocess.run(cmd, check=True)
        (run / "done").write_text(json.dumps({"seconds": time.time() - started}))


def _lab(*args: str) -> str:
    out = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "lab"), *args], capture_output=True, text=True
    )
    if out.returncode:
        raise SystemExit(f"lab {' '.join(args)} failed:\n{out.stderr}")
    return out.stdout


def evaluate(work: Path) -> list[dict]:
    """AP of every finished run by our evaluator (the reference's EMA through convert-weights)."""
    rows = []
    for run in sorted((work / "runs").iterdir()):
        if not (run / "done").is_file():
            continue
        seconds = json.loads((run / "done").read_text())["seconds"]
        if run.name.startswith("reference"):
            ours = run / "converted.pt"
            if not ours.is_file():
                # the reference's final checkpoint holds its EMA as 'model' (strip_optimizer);
                # our spec of the run (nc and image size of the set) receives it
                spec = next((work / "runs").glob("ours-*/spec.yaml"))
                src = str(run / "weights" / "last.pt")
                _lab("convert-weights", src, "--model", str(spec), "--out", str(ours))
            weights, trainer = ours, "reference"
        else:
            weights, trainer = run, run.name.rsplit("-seed", 1)[0]
        metrics = json.loads(_lab("eval", "--weights", str(weights), "--data", str(work / "data"),
                                  "--device", "cpu", "--json"))  # fmt: skip
        seed = int(run.name.rsplit("-seed", 1)[1])
        rows.append({"trainer": trainer, "seed": seed, "seconds": round(seconds), **metrics})
    return rows


def report(work: Path, out: Path) -> None:
    rows = evaluate(work)
    out.mkdir(parents=True, exist_ok=True)
    (out / "runs.json").write_text(
        json.dumps({"budget": BUDGET, "model": MODEL, "runs": rows}, indent=2)
    )
    lines = [
        "# Recipe fidelity: our trainer vs the reference's train.py",
        "",
        f"{MODEL}, synthetic set (YOLO layout, polygon labels), {BUDGET['img']} px, batch "
        f"{BUDGET['batch']}, {BUDGET['epochs']} epochs, nominal batch {BUDGET['nominal_batch']}, "
        f"warm-up minimum {BUDGET['warmup_min_steps']} steps, the reference's tiny hyp; final EMA "
        "weights evaluated by the same pycocotools evaluator (`lab eval`).",
        "",
        "| trainer | seed | AP | AP50 | AP75 | train s |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['trainer']} | {r['seed']} | {r['AP']:.3f} | {r['AP50']:.3f} | "
                     f"{r['AP75']:.3f} | {r['seconds']} |")  # fmt: skip
    lines += ["", "| trainer | runs | mean AP | min - max |", "|---|---|---|---|"]
    for trainer in sorted({r["trainer"] for r in rows}):
        aps = [r["AP"] for r in rows if r["trainer"] == trainer]
        lines.append(f"| {trainer} | {len(aps)} | {statistics.fmean(aps):.3f} | "
                     f"{min(aps):.3f} - {max(aps):.3f} |")  # fmt: skip
    lines += ["", *_verdict(rows), "", *_loss_table(work)]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _verdict(rows: list[dict]) -> list[str]:
    """Ours - reference with a Welch 95% interval (the seeds of two trainers are not pairs),
    and whether our mean lies within the reference's seed spread."""
    from scaling_lab.report.stats import difference

    ref = {r["seed"]: r["AP"] for r in rows if r["trainer"] == "reference"}
    ours = {1000 + r["seed"]: r["AP"] for r in rows if r["trainer"] == "ours-reference"}
    if not ref or not ours:
        return []
    d = difference(ref, ours)
    mark = "" if d.significant else " (n.s.)"
    inside = min(ref.values()) <= statistics.fmean(ours.values()) <= max(ref.values())
    return [
        f"Ours - reference, AP: {d.delta:+.3f} ± {d.ci95:.3f} (Welch 95% interval){mark}.",
        f"Our mean AP {'lies' if inside else 'does not lie'} within the reference's seed "
        f"spread ({min(ref.values()):.3f} - {max(ref.values()):.3f}).",
    ]


def _loss_table(work: Path) -> list[str]:
    """Training losses per epoch (box, obj, cls; mean over seeds) of both trainers."""
    import csv

    per: dict[str, dict[int, list[tuple[float, float, float]]]] = {}
    for run in sorted((work / "runs").iterdir()):
        trainer = "reference" if run.name.startswith("reference") else "ours"
        if trainer == "reference" and (run / "results.txt").is_file():
            for line in (run / "results.txt").read_text().splitlines():
                f = line.split()
                epoch = int(f[0].split("/")[0])
                per.setdefault(trainer, {}).setdefault(epoch, []).append(tuple(map(float, f[2:5])))
        elif (run / "results.csv").is_file():
            with (run / "results.csv").open() as fh:
                for r in csv.DictReader(fh):
                    value = (float(r["box"]), float(r["obj"]), float(r["cls"]))
                    per.setdefault(trainer, {}).setdefault(int(r["epoch"]), []).append(value)
    if len(per) < 2:
        return []
    out = [
        "Training losses per epoch (mean over seeds; box / obj / cls):",
        "",
        "| epoch | ours | reference |",
        "|---|---|---|",
    ]
    for epoch in sorted(per["ours"]):
        cells = []
        for trainer in ("ours", "reference"):
            values = per[trainer].get(epoch, [])
            means = [statistics.fmean(v[i] for v in values) for i in range(3)] if values else []
            cells.append(" / ".join(f"{m:.4f}" for m in means) or "-")
        out.append(f"| {epoch} | {cells[0]} | {cells[1]} |")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="step", required=True)
    e = sub.add_parser("export")
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--images", type=int, default=600)
    e.add_argument("--size", type=int, default=320)
    e.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("reference")
    r.add_argument("--reference", type=Path, required=True)
    r.add_argument("--python", default=sys.executable)
    r.add_argument("--work", type=Path, required=True)
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    o = sub.add_parser("ours")
    o.add_argument("--work", type=Path, required=True)
    o.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    o.add_argument("--recipe", default="reference", choices=("reference", "ours"))
    rep = sub.add_parser("report")
    rep.add_argument("--work", type=Path, required=True)
    rep.add_argument("--out", type=Path, default=ROOT / "reports" / "recipe_fidelity")
    args = p.parse_args()
    if args.step == "export":
        export(args.out, args.images, args.size, args.seed)
    elif args.step == "reference":
        run_reference(args.reference, args.python, args.work, args.seeds)
    elif args.step == "ours":
        run_ours(args.work, args.seeds, args.recipe)
    else:
        report(args.work, args.out)


if __name__ == "__main__":
    main()
