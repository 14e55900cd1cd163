"""``lab convert-weights``: a checkpoint of the public reference implementation (WongKinYiu/
yolov7) as a scaling_lab checkpoint, read without running any code from the file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scaling_lab.cli.args import JSON_HELP, add_switch
from scaling_lab.errors import UserError


def _cmd_convert_weights(args: argparse.Namespace) -> int:
    from scaling_lab.weights import convert_weights

    if Path(args.out).is_dir():
        raise UserError("is a folder: give a file path", source=args.out, field="out")
    converted = convert_weights(
        args.checkpoint, args.model, args.out, ema=args.ema, config=args.config
    )
    params = sum(t.numel() for k, t in converted.state.items() if t.is_floating_point())
    summary = {
        "checkpoint": args.checkpoint,
        "entry": converted.origin.get("entry", ""),
        "model": converted.graph.name,
        "nc": converted.nc,
        "tensors": len(converted.state),
        "values": params,
        "out": args.out,
        "notes": converted.notes,
    }
    if args.json:
        print(json.dumps(summary))
        return 0
    entry = f" ('{summary['entry']}' entry)" if summary["entry"] else ""
    print(
        f"wrote {args.out}: {converted.graph.name}, nc {converted.nc}, {len(converted.state)} "
        f"tensors from {args.checkpoint}{entry} (evaluate: lab eval --weights {args.out})"
    )
    for note in converted.notes:
        print(f"note: {note}")
    return 0


def add_commands(sub) -> None:
    """``lab convert-weights``."""
    p = sub.add_parser(
        "convert-weights",
        help="a reference (WongKinYiu/yolov7) checkpoint as a scaling_lab checkpoint",
        description="Read a checkpoint of the public YOLOv7 implementation without running "
        "its code and write its weights for our model NAME (mapped by aligning the two "
        "layer graphs).",
    )
    p.add_argument("checkpoint", metavar="CKPT", help="the reference's .pt checkpoint")
    p.add_argument(
        "--model", required=True, metavar="NAME", help="zoo model or spec (training form)"
    )
    p.add_argument("--out", required=True, metavar="PATH", help="checkpoint to write (.pt)")
    add_switch(p, "--ema", "convert the checkpoint's EMA weights (default: its 'model' entry)")
    p.add_argument(
        "--config",
        metavar="YAML",
        help="the reference config the weights were trained from (for a bare state dict)",
    )
    add_switch(p, "--json", JSON_HELP)
    p.set_defaults(func=_cmd_convert_weights)
