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
from scaling_lab.cli.train_flags import add_train_flags, config_settings, flag_of
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
    name = name[:100] if name not in ("", ".", "..") else "run"  # a folder name, not 5000 a's
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
    """The TrainConfig of a fresh run (``lab train`` without ``--resume``): the flags the user
    gave over TrainConfig's own defaults."""
    from scaling_lab.train.config import TrainConfig

    if not args.model or not args.data:
        raise SpecError("give --model and --data (or --resume RUN_DIR)", field="model")
    if args.out is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise SpecError("under torchrun, name the run folder with --out", field="out")
    if args.out is not None:
        check_output_dir(args.out, "out")
    settings = {
        **config_settings(args),
        "out": args.out or _default_run_dir(args.model),
        "hyp": {**_hyp_file(args.hyp_file), **_parse_hyp(args.hyp)},
    }
    try:
        return TrainConfig(**settings)
    except FieldError as exc:  # a value the flag's type lets through (hyp keys, ranges)
        name, _, key = exc.field.partition(".")
        if name != "hyp":
            raise SpecError(str(exc), field=flag_of(name)) from None
        said = str(exc) if not key or f"'{key}'" in str(exc) else f"{key}: {exc}"  # which KEY
        raise SpecError(said, field="--hyp") from None


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
    add_train_flags(tr)
    tr.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR exactly")
    tr.add_argument(
        "--hyp-file",
        metavar="YAML",
        help="a hyper-parameter file in the reference's format (e.g. its "
        "data/hyp.scratch.tiny.yaml): every key must be one of the recipe's; --hyp wins",
    )
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
