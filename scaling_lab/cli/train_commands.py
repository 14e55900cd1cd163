"""``lab data synth``, ``lab train`` and ``lab eval``: datasets, training runs, COCO AP."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from scaling_lab.cli.args import (
    JSON_HELP,
    OneLineParser,
    add_switch,
    bounded,
    check_output_dir,
    check_output_file,
    pick,
    positive,
)
from scaling_lab.eval_protocol import AP_KEYS
from scaling_lab.limits import MAX_IMG_SIZE, MAX_SYNTH_IMAGES, MAX_WORKERS
from scaling_lab.schema import FieldError
from scaling_lab.spec.errors import SpecError

if TYPE_CHECKING:
    from scaling_lab.train.config import TrainConfig


def _cmd_data_synth(args: argparse.Namespace) -> int:
    from scaling_lab.data.synth import make_synth, synth_stats

    check_output_dir(args.out, "out")
    out = make_synth(Path(args.out), images=args.images, size=args.size, seed=args.seed)
    stats = synth_stats(out)
    if args.json:
        print(json.dumps(stats))
        return 0
    names = list(stats["all"]["per_class"])
    header = ["split", "images", "objects", *names, "small", "medium", "large"]
    rows = [header]
    for split in ("train", "val", "all"):
        s = stats[split]
        counts = [*s["per_class"].values(), *s["per_size"].values()]
        rows.append([split, s["images"], s["objects"], *counts])
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(str(v).rjust(w) for v, w in zip(row, widths)))
    print(f"wrote {out} (COCO layout; small/medium/large: box area < 32^2, < 96^2, >= 96^2)")
    return 0


def _default_run_dir(model: str) -> str:
    """``runs/train/NAME``, or ``NAME-2``, ``NAME-3``, ... when taken."""
    path = Path(model)  # a name, never a path out of runs/train
    name = path.stem if model.endswith((".yaml", ".yml")) else path.name
    name = name if name not in ("", ".", "..") else "run"
    base = Path("runs/train") / name
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{name}-{n}")
    return str(candidate)


def _print_metrics(title: str, metrics: dict) -> None:
    keys = [k for k in AP_KEYS if k in metrics]
    print(title)
    print("  " + "".join(f"{k:>8}" for k in keys))
    cells = [metrics[k] for k in keys]  # None or NaN: no such objects in the val set
    print("  " + "".join(f"{v:>8.4f}" if v is not None and v == v else f"{'-':>8}" for v in cells))


def _parse_hyp(items: list[str]) -> dict[str, float]:
    """``["lr0=0.02", "mosaic=0"]`` -> ``{"lr0": 0.02, "mosaic": 0.0}``."""
    hyp = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            hyp[key.strip()] = float(value)
        except ValueError:
            raise SpecError(f"expected KEY=NUMBER, got '{item}'", field="hyp") from None
    return hyp


def _hyp_file(path: str | None) -> dict[str, float]:
    from scaling_lab.data.hyp import read_hyp_file

    return read_hyp_file(path) if path else {}


def _train_config(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of a fresh run (``lab train`` without ``--resume``)."""
    from scaling_lab.train.trainer import TrainConfig

    if not args.model or not args.data:
        raise SpecError("give --model and --data (or --resume RUN_DIR)", field="model")
    if args.out is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise SpecError("under torchrun, name the run folder with --out", field="out")
    if args.out is not None:
        check_output_dir(args.out, "out")
    settings = dict(
        out=args.out or _default_run_dir(args.model),
        img_size=args.img,
        epochs=args.epochs or 300,
        batch_size=args.batch,
        aux_constraint=args.aux_constraint == "on",
        assign=args.assign,
        aux_head=not args.no_aux_head,
        autoanchor=not args.no_autoanchor,
        tensorboard=not args.no_tensorboard,
        hyp={**_hyp_file(args.hyp_file), **_parse_hyp(args.hyp)},
        recipe=args.recipe,
        **pick(
            args,
            "model",
            "data",
            "aux_assigner",
            "device",
            "seed",
            "workers",
            "deterministic",
            "schedule",
            "optimizer",
            "eval_every",
            "eval_fused",
            "save_every",
            "nominal_batch",
            "warmup_min_steps",
        ),
    )
    try:
        return TrainConfig(**settings)
    except FieldError as exc:  # a value the flag's type lets through (hyp keys, ranges)
        flag = "--" + exc.field.split(".")[0].replace("_", "-")
        raise SpecError(str(exc), field=flag) from None


def _cmd_train(args: argparse.Namespace) -> int:
    from scaling_lab.train.trainer import resume, train

    if args.resume:
        overrides = {"epochs": args.epochs, "device": args.device}
        summary = resume(
            args.resume, overrides={k: v for k, v in overrides.items() if v is not None}
        )
        run_dir = args.resume
    else:
        cfg = _train_config(args)
        summary, run_dir = train(cfg), cfg.out
    if summary:  # empty on ranks other than 0
        _print_metrics(
            f"{summary['model']}: EMA weights after {summary['epochs']} epochs", summary["metrics"]
        )
        if "fused_metrics" in summary:
            _print_metrics("fused (deploy) model", summary["fused_metrics"])
        print(f"wrote {run_dir}/metrics.json")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from scaling_lab.train.evaluation import evaluate_checkpoint

    if args.save_json:
        check_output_file(args.save_json, "save-json")
    result = evaluate_checkpoint(
        args.weights,
        args.data,
        img_size=args.img,
        batch_size=args.batch,
        progress=not args.json,
        **pick(args, "fused", "device", "workers", "save_json"),
    )
    if args.json:
        print(json.dumps(result))
    else:
        _print_metrics(f"{result['model']} ({result['form']}), img {result['img_size']}", result)
    return 0


def _add_data_commands(sub) -> None:
    """``lab data synth`` (``lab data`` groups dataset commands)."""
    data = sub.add_parser("data", help="datasets: make the synthetic shapes set")
    data_sub = data.add_subparsers(dest="data_command", required=True, parser_class=OneLineParser)
    synth = data_sub.add_parser("synth", help="write the synthetic shapes set (COCO layout)")
    synth.add_argument("--out", required=True, metavar="DIR", help="output folder")
    synth.add_argument(
        "--images", type=bounded(1, MAX_SYNTH_IMAGES), default=600, help="images in all (600)"
    )
    synth.add_argument(
        "--size", type=bounded(1, MAX_IMG_SIZE), default=320, help="long image side (320)"
    )
    synth.add_argument("--seed", type=bounded(0, 2**63 - 1), default=0, help="random seed (0)")
    add_switch(synth, "--json", "print the statistics as JSON")
    synth.set_defaults(func=_cmd_data_synth)


def _add_train_parser(sub) -> None:
    tr = sub.add_parser("train", help="train a model (SGD, EMA, AMP, DDP via torchrun)")
    tr.add_argument("--model", help="zoo name or spec path")
    tr.add_argument("--data", help="dataset folder (COCO layout) or 'synth'")
    tr.add_argument(
        "--img", type=bounded(1, MAX_IMG_SIZE), help="train/val image size (default: the spec's)"
    )
    tr.add_argument("--epochs", type=positive, help="epochs (300; with --resume: extend to)")
    tr.add_argument("--batch", type=positive, default=16, help="total batch size (16)")
    tr.add_argument(
        "--assign",
        choices=("own_prior", "reference"),
        default=None,
        help="label assignment: 'reference' = YOLOv7's ComputeLossOTA / ComputeLossAuxOTA "
        "(no explicit --aux-constraint bound); 'own_prior' = each target within its own "
        "prior, one target per prediction (default: the --recipe's: reference / own_prior)",
    )
    tr.add_argument(
        "--aux-assigner",
        choices=("independent", "lead_guided", "coarse_to_fine"),
        default="coarse_to_fine",
        help="label assignment of the auxiliary heads (paper §4.2)",
    )
    tr.add_argument("--aux-constraint", choices=("on", "off"), default="on")
    add_switch(
        tr,
        "--no-aux-head",
        "train without the auxiliary head: it (and what only it reads) leaves the training "
        "graph (the base rows of the paper's Tables 6-8)",
    )
    add_switch(
        tr,
        "--no-autoanchor",
        "keep the model's anchors even when they fit < 98%% of the training labels (by default "
        "they are refit to the labels first, as the reference trainer does)",
    )
    tr.add_argument("--out", metavar="RUN_DIR", help="run folder (default: runs/train/MODEL)")
    tr.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR exactly")
    tr.add_argument("--device", help="cpu | cuda (default: cuda if available)")
    tr.add_argument("--seed", type=bounded(0, 2**63 - 1), default=0)
    tr.add_argument(
        "--nominal-batch",
        type=positive,
        default=64,
        help="accumulate gradients to this many images per step (64, the paper's)",
    )
    tr.add_argument(
        "--warmup-min-steps",
        type=bounded(0, 2**31),
        default=1000,
        help="warm-up lasts at least this many steps (1000, the reference's)",
    )
    tr.add_argument(
        "--hyp",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a hyper-parameter of the recipe (repeatable), e.g. lr0=0.02",
    )
    tr.add_argument(
        "--workers", type=bounded(0, MAX_WORKERS), default=0, help="data loader processes (0)"
    )
    tr.add_argument(
        "--eval-every",
        type=bounded(0, 2**31),
        default=1,
        metavar="K",
        help="evaluate every K epochs",
    )
    add_switch(tr, "--eval-fused", "also evaluate the fused model")
    tr.add_argument(
        "--save-every",
        type=bounded(0, 2**31),
        default=0,
        metavar="N",
        help="also checkpoint every N steps",
    )
    tr.add_argument("--schedule", choices=("cosine", "linear"), default="cosine")
    tr.add_argument(
        "--optimizer",
        choices=("sgd", "adam", "adamw"),
        default="sgd",
        help="Nesterov SGD (the paper's, default) or Adam / AdamW with beta1 = the recipe's "
        "momentum; Adam wants a smaller lr: --hyp lr0=0.001 --hyp warmup_bias_lr=0.01",
    )
    tr.add_argument(
        "--recipe",
        choices=("reference", "ours"),
        default="reference",
        help="'reference': the reference trainer's behaviour piece for piece (default); "
        "'ours': our deliberate departures (data reshuffled every epoch, own_prior label "
        "assignment; docs/recipe.md)",
    )
    tr.add_argument(
        "--hyp-file",
        metavar="YAML",
        help="a hyper-parameter file in the reference's format (e.g. its "
        "data/hyp.scratch.tiny.yaml): every key must be one of the recipe's; --hyp wins",
    )
    add_switch(tr, "--deterministic", "deterministic kernels")
    add_switch(tr, "--no-tensorboard", "CSV logs only")
    tr.set_defaults(func=_cmd_train)


def add_commands(sub) -> None:
    """``lab data synth``, ``lab train`` and ``lab eval``."""
    _add_data_commands(sub)
    _add_train_parser(sub)
    ev = sub.add_parser("eval", help="COCO AP of a checkpoint's EMA weights")
    ev.add_argument("--weights", required=True, metavar="W", help="checkpoint (.pt) or RUN_DIR")
    ev.add_argument("--data", required=True, help="dataset folder (COCO layout) or 'synth'")
    ev.add_argument("--img", type=bounded(1, MAX_IMG_SIZE), help="image size (default: the spec's)")
    add_switch(ev, "--fused", "evaluate the fused deploy model")
    add_switch(ev, "--json", JSON_HELP)
    ev.add_argument("--device", help="cpu | cuda (default: cuda if available)")
    ev.add_argument("--batch", type=positive, default=32)
    ev.add_argument("--workers", type=bounded(0, MAX_WORKERS), default=0)
    ev.add_argument("--save-json", metavar="FILE", help="write COCO-format detections")
    ev.set_defaults(func=_cmd_eval)
