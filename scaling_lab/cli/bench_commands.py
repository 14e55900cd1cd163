"""``lab bench`` and ``lab export``: time the deploy model, export it to ONNX and check it."""

from __future__ import annotations

import argparse
import json

from scaling_lab.cli.args import (
    JSON_HELP,
    add_bench_args,
    add_model_args,
    add_switch,
    bench_from_args,
    check_output_file,
    number_in,
    pick,
    training_graph_from_args,
)
from scaling_lab.eval_protocol import CONF_THRES, IOU_THRES
from scaling_lab.spec.errors import SpecError


def _cmd_bench(args: argparse.Namespace) -> int:
    timing = bench_from_args(args)
    if args.json:
        print(json.dumps(timing.to_dict()))
    else:
        print(timing.format())
    return 0


def _print_export(summary: dict, dynamic_batch: bool) -> None:
    print(
        f"wrote {summary['path']} ({summary['model']}, img {summary['img_size']}, "
        f"{'dynamic' if dynamic_batch else 'fixed'} batch, opset {summary['opset']}, "
        f"{summary['size_mb']:.1f} MiB, {summary['export_s']:.1f} s)"
    )
    check = summary["check"]
    if isinstance(check, dict):
        verdict = "ok" if check["ok"] else "MISMATCH"
        print(
            f"check vs torch (onnxruntime CPU, batches {check['batches']}): {verdict}; "
            f"max abs diff boxes {check['max_abs_diff_boxes']:.2e} px, scores "
            f"{check['max_abs_diff_scores']:.2e}; |d| <= {check['atol']:g} + "
            f"{check['rtol']:g} |torch| (worst {check['max_scaled_diff']:.3f} of the bound)"
        )
    elif check:
        print(f"check vs torch: {check}")


def _cmd_export(args: argparse.Namespace) -> int:
    from scaling_lab.analyze import onnx_export

    if args.bench and not onnx_export.have_onnxruntime():
        raise SpecError(f"--bench needs onnxruntime ({onnx_export.EXTRA_HINT})", field="bench")
    check_output_file(args.onnx, "onnx")
    summary = onnx_export.export_and_check(
        training_graph_from_args(args, "export"),
        args.onnx,
        img_size=args.img,
        dynamic_batch=args.dynamic_batch,
        check=not args.no_check,
    )
    timing = None
    if args.bench:
        timing = onnx_export.ort_latency(
            args.onnx,
            img_size=summary["img_size"],
            model_name=summary["model"],
            **pick(args, "device", "batch", "threads", "warmup", "iters"),
        )
        summary["latency"] = timing.to_dict()
    if args.json:
        print(json.dumps(summary))
    else:
        _print_export(summary, args.dynamic_batch)
        if timing is not None:
            print(timing.format())
    check = summary["check"]
    return 1 if isinstance(check, dict) and not check["ok"] else 0


def add_commands(sub) -> None:
    """``lab bench`` and ``lab export``."""
    bench = sub.add_parser(
        "bench", help="latency / FPS of the fused deploy model, with its protocol"
    )
    add_model_args(bench)
    add_bench_args(bench)
    bench.add_argument(
        "--preset",
        choices=("paper",),
        help="paper: batch 1, fp16 on CUDA, letterboxed 640 (P5) or 1280 (P6), as in the "
        "paper's FPS column",
    )
    add_switch(bench, "--nms", "also time NMS (separately)")
    bench.add_argument(
        "--conf-thres",
        type=number_in(0.0, 1.0),
        help=f"NMS confidence threshold (default {CONF_THRES:g})",
    )
    bench.add_argument(
        "--iou-thres", type=number_in(0.0, 1.0), help=f"NMS IoU threshold (default {IOU_THRES:g})"
    )
    add_switch(bench, "--json", JSON_HELP)
    bench.set_defaults(func=_cmd_bench)

    export = sub.add_parser(
        "export", help="export the fused deploy model to ONNX and check it against torch"
    )
    add_model_args(export)
    export.add_argument("--onnx", required=True, metavar="PATH", help="output .onnx file")
    add_switch(export, "--dynamic-batch", "symbolic batch axis (size stays fixed)")
    add_switch(export, "--no-check", "skip the ONNX Runtime vs torch comparison")
    add_switch(
        export,
        "--bench",
        "time the file with ONNX Runtime (same protocol as lab bench; flags below)",
    )
    add_bench_args(export, torch_flags=False)
    add_switch(export, "--json", JSON_HELP)
    export.set_defaults(func=_cmd_export)
