"""``lab``: the command line. Errors in user input print one line and exit with status 2."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from scaling_lab.cli_sweep import add_sweep_commands
from scaling_lab.spec.errors import SpecError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (no usage dump) and exits 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(EXIT_USAGE)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _cmd_zoo(args: argparse.Namespace) -> int:
    from scaling_lab.analyze.profile import profile
    from scaling_lab.models import resolve_spec
    from scaling_lab.zoo import list_models

    rows = []
    for name in list_models():
        spec = resolve_spec(name)
        deploy, train = profile(name, deploy=True), profile(name)
        params, gflops = f"{deploy.params_m:.2f}", f"{deploy.gflops:.1f}"
        rows.append(
            (name, spec.img_size, params, gflops, f"{train.params_m:.2f}", spec.description)
        )
    if args.json:
        keys = ("model", "img_size", "params_m", "gflops", "train_params_m", "description")
        print(json.dumps([dict(zip(keys, r)) for r in rows], indent=2))
        return 0
    header = ("model", "img", "params(M)", "GFLOPs", "train params(M)", "description")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(5)]
    for row in [header, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)) + "  " + row[5])
    print("\nparams(M), GFLOPs: deploy form (fused, no auxiliary head), GFLOPs = 2 x GMACs;")
    print("train params(M): training form (unfused, auxiliary head); analytic counter")
    return 0


def _cmd_blocks(args: argparse.Namespace) -> int:
    import dataclasses

    from scaling_lab.graph.registry import registered_blocks

    for name, block in sorted(registered_blocks().items()):
        fields = []
        for f in dataclasses.fields(block.cfg_cls):
            has_default = f.default is not dataclasses.MISSING
            fields.append(f"{f.name}={f.default!r}" if has_default else f.name)
        print(f"{name:<11} [{block.role}] {block.doc}")
        print(f"{'':<11} fields: {', '.join(fields) or '(none)'}")
    return 0


def _print_profile(result, per_node: bool) -> None:
    form = "deploy (fused, no auxiliary head)" if result.deploy else "training (unfused)"
    print(f"{result.model}: img {result.img_size}, nc {result.nc}, form {form}")
    print(
        f"  params {result.params_m:.3f}M   GMACs {result.gmacs:.2f}   "
        f"GFLOPs {result.gflops:.2f}   (counter: {result.counter})"
    )
    if not per_node:
        return
    extra = result.counter != "analytic"
    print(
        f"\n  {'node':<16}{'params':>12}{'GMACs':>10}" + (f"{result.counter:>10}" if extra else "")
    )
    for n in result.per_node:
        line = f"  {n.node:<16}{n.params:>12,}{n.macs / 1e9:>10.3f}"
        if extra:
            line += f"{(n.counter_macs or 0) / 1e9:>10.3f}"
        print(line)


def _graph_from_args(args: argparse.Namespace, deploy: bool = False):
    """The BlockGraph the model flags describe: overrides, RepConv policy, scaling."""
    from scaling_lab.layers.plan_repconv import parse_policy
    from scaling_lab.models import get_block_graph
    from scaling_lab.transforms.scale import scale

    repconv = parse_policy(args.repconv) if args.repconv else None
    graph = get_block_graph(args.model, nc=args.nc, img_size=args.img, repconv=repconv)
    if args.scale_mode:
        graph = scale(graph, depth=args.depth, width=args.width, mode=args.scale_mode)
        suffix = f"{args.scale_mode}-d{args.depth:g}" + (f"-w{args.width:g}" if args.width else "")
        graph = graph.with_settings(name=f"{graph.name}@{suffix}")
    elif args.depth != 1.0 or args.width is not None:
        raise SpecError(
            "--depth/--width need --scale-mode width|depth|compound", field="scale-mode"
        )
    if deploy:
        from scaling_lab.transforms.deploy import drop_aux_heads

        graph = drop_aux_heads(graph)
    return graph


def _cmd_show(args: argparse.Namespace) -> int:
    from scaling_lab.graph.block_graph import dump_spec
    from scaling_lab.models import get_layer_graph
    from scaling_lab.report.graph_view import render_graph

    graph = _graph_from_args(args, deploy=args.deploy)
    if args.dump:
        print(dump_spec(graph), end="")
        return 0
    print(render_graph(graph, get_layer_graph(graph, deploy=args.deploy)))
    return 0


def _cmd_fuse_check(args: argparse.Namespace) -> int:
    from scaling_lab.analyze.fuse_check import fuse_check

    dtype = {"float32": torch_dtype("float32"), "float64": torch_dtype("float64")}[args.dtype]
    result = fuse_check(_graph_from_args(args), img_size=args.img, dtype=dtype)
    result["repconv"] = args.repconv or "as written"
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>24}: {value}")
    return 0 if result["ok"] else 1


def torch_dtype(name: str):
    import torch

    return getattr(torch, name)


def _cmd_profile(args: argparse.Namespace) -> int:
    from scaling_lab.analyze.profile import profile

    if args.zoo:
        from scaling_lab.report.zoo_table import write_zoo_table

        md_path, csv_path = write_zoo_table(args.out)
        print(md_path.read_text())
        print(f"wrote {md_path} and {csv_path}")
        return 0
    if not args.model:
        raise SpecError("give a zoo model name or a spec path (or --zoo)", field="MODEL")
    graph = _graph_from_args(args)
    result = profile(graph, deploy=args.deploy, counter=args.counter)
    timing = _bench_from_args(args, graph) if args.latency else None
    if args.json:
        data = result.to_dict(per_node=args.per_node)
        if timing is not None:
            data.update(_latency_fields(timing))
        print(json.dumps(data))
    else:
        _print_profile(result, args.per_node)
        if timing is not None:
            print(timing.format())
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from pathlib import Path

    from scaling_lab.spec.layer_list import load_layer_list

    imported = load_layer_list(args.config, name=args.name)
    if args.out is None:
        print(imported.text, end="")
        return 0
    Path(args.out).write_text(imported.text)
    print(f"wrote {args.out} ({len(imported.spec.nodes)} nodes; `lab profile {args.out}`)")
    return 0


def _bench_from_args(args: argparse.Namespace, graph=None):
    """Latency of the fused deploy model under the flags' protocol (``lab bench``, ``lab
    profile --latency``)."""
    from scaling_lab.analyze.latency import benchmark

    return benchmark(
        graph if graph is not None else _graph_from_args(args),
        img_size=args.img,
        device=args.device,
        dtype=args.dtype,
        batch=args.batch,
        preset=getattr(args, "preset", None),
        channels_last=args.channels_last,
        compile=args.compile,
        cuda_graph=args.cuda_graph,
        threads=args.threads,
        warmup=args.warmup,
        iters=args.iters,
        nms=getattr(args, "nms", False),
        conf_thres=getattr(args, "conf_thres", None),
        iou_thres=getattr(args, "iou_thres", None),
    )


def _latency_fields(timing) -> dict:
    """What ``lab profile --latency --json`` adds to the profile."""
    data = timing.to_dict(samples=False)
    return {
        "latency_ms": data["latency_ms"],
        "latency_p90_ms": data["p90_ms"],
        "fps": data["fps"],
        "peak_memory_mb": data["peak_memory_mb"],
        "protocol": data["protocol"],
    }


def _cmd_bench(args: argparse.Namespace) -> int:
    timing = _bench_from_args(args)
    if args.json:
        print(json.dumps(timing.to_dict()))
    else:
        print(timing.format())
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from scaling_lab.analyze import onnx_export

    if args.bench and not onnx_export.have_onnxruntime():
        raise SpecError(f"--bench needs onnxruntime ({onnx_export.EXTRA_HINT})", field="bench")
    summary = onnx_export.export_and_check(
        _graph_from_args(args),
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
            device=args.device,
            batch=args.batch,
            threads=args.threads,
            warmup=args.warmup,
            iters=args.iters,
        )
        summary["latency"] = timing.to_dict()
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"wrote {summary['path']} ({summary['model']}, img {summary['img_size']}, "
            f"{'dynamic' if args.dynamic_batch else 'fixed'} batch, opset {summary['opset']}, "
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
        if timing is not None:
            print(timing.format())
    check = summary["check"]
    return 1 if isinstance(check, dict) and not check["ok"] else 0


def _add_bench_args(p: argparse.ArgumentParser, torch_flags: bool = True) -> None:
    """Protocol flags shared by ``lab bench``, ``lab profile --latency`` and ``lab export
    --bench`` (ONNX Runtime: device, batch, threads, warm-up and iterations only)."""
    p.add_argument(
        "--device", help="cpu (default) | cuda | cuda:N; a CUDA request without CUDA is refused"
    )
    p.add_argument("--batch", type=_positive, help="images per call (default 1)")
    p.add_argument("--threads", type=_positive, help="intra-op threads for the run")
    p.add_argument("--warmup", type=int, help="untimed calls first (default 5 on CPU, 25 on CUDA)")
    p.add_argument("--iters", type=_positive, help="timed calls (default 30 on CPU, 200 on CUDA)")
    if not torch_flags:
        return
    p.add_argument(
        "--dtype", choices=("fp32", "fp16", "bf16"), help="default fp32; fp16 is CUDA only"
    )
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format")
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the model (compile time reported apart from the latency)",
    )
    p.add_argument(
        "--cuda-graph", action="store_true", help="replay a CUDA graph captured after warm-up"
    )


def _cmd_data_synth(args: argparse.Namespace) -> int:
    from pathlib import Path

    from scaling_lab.data.synth import make_synth, synth_stats

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
    from pathlib import Path

    name = Path(model).stem if model.endswith((".yaml", ".yml")) else model
    base = Path("runs/train") / name
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{name}-{n}")
    return str(candidate)


def _print_metrics(title: str, metrics: dict) -> None:
    keys = [k for k in ("AP", "AP50", "AP75", "APs", "APm", "APl") if k in metrics]
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


def _cmd_train(args: argparse.Namespace) -> int:
    import os

    from scaling_lab.train.checkpoint import CheckpointError
    from scaling_lab.train.trainer import TrainConfig, resume, train

    try:
        if args.resume:
            overrides = {"epochs": args.epochs, "device": args.device}
            summary = resume(
                args.resume, overrides={k: v for k, v in overrides.items() if v is not None}
            )
        else:
            if not args.model or not args.data:
                raise SpecError("give --model and --data (or --resume RUN_DIR)", field="model")
            if args.out is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
                raise SpecError("under torchrun, name the run folder with --out", field="out")
            cfg = TrainConfig(
                model=args.model,
                data=args.data,
                out=args.out or _default_run_dir(args.model),
                img_size=args.img,
                epochs=args.epochs or 300,
                batch_size=args.batch,
                aux_assigner=args.aux_assigner,
                aux_constraint=args.aux_constraint == "on",
                device=args.device,
                seed=args.seed,
                workers=args.workers,
                deterministic=args.deterministic,
                schedule=args.schedule,
                eval_every=args.eval_every,
                eval_fused=args.eval_fused,
                save_every=args.save_every,
                tensorboard=not args.no_tensorboard,
                nominal_batch=args.nominal_batch,
                warmup_min_steps=args.warmup_min_steps,
                hyp=_parse_hyp(args.hyp),
            )
            summary = train(cfg)
    except (FileExistsError, FileNotFoundError, CheckpointError) as exc:
        raise SpecError(str(exc), field="resume" if args.resume else "out") from None
    if summary:  # empty on ranks other than 0
        _print_metrics(
            f"{summary['model']}: EMA weights after {summary['epochs']} epochs", summary["metrics"]
        )
        if "fused_metrics" in summary:
            _print_metrics("fused (deploy) model", summary["fused_metrics"])
        print(f"wrote {args.resume or cfg.out}/metrics.json")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from scaling_lab.train.checkpoint import CheckpointError
    from scaling_lab.train.evaluation import evaluate_checkpoint

    try:
        result = evaluate_checkpoint(
            args.weights,
            args.data,
            img_size=args.img,
            fused=args.fused,
            device=args.device,
            batch_size=args.batch,
            workers=args.workers,
            save_json=args.save_json,
            progress=not args.json,
        )
    except (FileNotFoundError, CheckpointError) as exc:
        raise SpecError(str(exc), field="weights") from None
    if args.json:
        print(json.dumps(result))
    else:
        _print_metrics(f"{result['model']} ({result['form']}), img {result['img_size']}", result)
    return 0


def _add_train_commands(sub) -> None:
    """``lab train`` and ``lab eval``."""
    tr = sub.add_parser("train", help="train a model (SGD, EMA, AMP, DDP via torchrun)")
    tr.add_argument("--model", help="zoo name or spec path")
    tr.add_argument("--data", help="dataset folder (COCO layout) or 'synth'")
    tr.add_argument("--img", type=_positive, help="train/val image size (default: the spec's)")
    tr.add_argument("--epochs", type=_positive, help="epochs (300; with --resume: extend to)")
    tr.add_argument("--batch", type=_positive, default=16, help="total batch size (16)")
    tr.add_argument(
        "--aux-assigner",
        choices=("independent", "lead_guided", "coarse_to_fine"),
        default="coarse_to_fine",
        help="label assignment of the auxiliary heads (paper §4.2)",
    )
    tr.add_argument("--aux-constraint", choices=("on", "off"), default="on")
    tr.add_argument("--out", metavar="RUN_DIR", help="run folder (default: runs/train/MODEL)")
    tr.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR exactly")
    tr.add_argument("--device", help="cpu | cuda (default: cuda if available)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument(
        "--nominal-batch",
        type=_positive,
        default=64,
        help="accumulate gradients to this many images per step (64, the paper's)",
    )
    tr.add_argument(
        "--warmup-min-steps",
        type=int,
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
    tr.add_argument("--workers", type=int, default=0, help="data loader processes (0)")
    tr.add_argument(
        "--eval-every", type=int, default=1, metavar="K", help="evaluate every K epochs"
    )
    tr.add_argument("--eval-fused", action="store_true", help="also evaluate the fused model")
    tr.add_argument(
        "--save-every", type=int, default=0, metavar="N", help="also checkpoint every N steps"
    )
    tr.add_argument("--schedule", choices=("cosine", "linear"), default="cosine")
    tr.add_argument("--deterministic", action="store_true", help="deterministic kernels")
    tr.add_argument("--no-tensorboard", action="store_true", help="CSV logs only")
    tr.set_defaults(func=_cmd_train)

    ev = sub.add_parser("eval", help="COCO AP of a checkpoint's EMA weights")
    ev.add_argument("--weights", required=True, metavar="W", help="checkpoint (.pt) or RUN_DIR")
    ev.add_argument("--data", required=True, help="dataset folder (COCO layout) or 'synth'")
    ev.add_argument("--img", type=_positive, help="image size (default: the spec's)")
    ev.add_argument("--fused", action="store_true", help="evaluate the fused deploy model")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.add_argument("--device", help="cpu | cuda (default: cuda if available)")
    ev.add_argument("--batch", type=_positive, default=32)
    ev.add_argument("--workers", type=int, default=0)
    ev.add_argument("--save-json", metavar="FILE", help="write COCO-format detections")
    ev.set_defaults(func=_cmd_eval)


def _add_model_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument(
        "model",
        nargs=None if required else "?",
        metavar="MODEL_OR_SPEC",
        help="zoo name (yolov7, yolov7-deploy, ...) or path of a .yaml spec",
    )
    p.add_argument("--img", type=_positive, help="square input size (default: the spec's)")
    p.add_argument("--nc", type=_positive, help="number of classes (default: the spec's)")
    p.add_argument(
        "--repconv",
        metavar="POLICY",
        help="RepConv placement: none | all | planned | PATTERN=PLACEMENT,... "
        "(placements: conv, repconv, repconvn, planned, all)",
    )
    p.add_argument(
        "--scale-mode",
        choices=("width", "depth", "compound"),
        help="scale the graph (paper §3.2) before anything else",
    )
    p.add_argument("--depth", type=float, default=1.0, help="depth factor for --scale-mode")
    p.add_argument("--width", type=float, help="width factor for --scale-mode")


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="lab",
        description="scaling_lab: design, scale and profile "
        "concatenation-based real-time detectors (YOLOv7 family).",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    zoo = sub.add_parser("zoo", help="list the zoo models")
    zoo.add_argument("--json", action="store_true")
    zoo.set_defaults(func=_cmd_zoo)

    blocks = sub.add_parser("blocks", help="list block types, their roles and fields")
    blocks.set_defaults(func=_cmd_blocks)

    prof = sub.add_parser("profile", help="params, GMACs and GFLOPs of a model")
    _add_model_args(prof, required=False)
    prof.add_argument(
        "--deploy",
        action="store_true",
        help="fused form without auxiliary heads (what the paper reports)",
    )
    prof.add_argument("--counter", choices=("analytic", "thop", "fvcore"), default="analytic")
    prof.add_argument("--per-node", action="store_true", help="break totals down by node")
    prof.add_argument("--json", action="store_true", help="print one JSON object")
    prof.add_argument(
        "--zoo",
        action="store_true",
        help="profile every zoo model against the paper; write reports/zoo/",
    )
    prof.add_argument("--out", default="reports/zoo", help="output folder for --zoo")
    prof.add_argument(
        "--latency",
        action="store_true",
        help="also time the fused deploy model (adds latency_ms, fps, protocol; flags below)",
    )
    _add_bench_args(prof)
    prof.set_defaults(func=_cmd_profile)

    show = sub.add_parser("show", help="list a graph's nodes, roles, shapes and RepConvs")
    _add_model_args(show)
    show.add_argument("--deploy", action="store_true", help="the deploy graph (fused)")
    show.add_argument("--dump", action="store_true", help="print the transformed spec text")
    show.set_defaults(func=_cmd_show)

    check = sub.add_parser("fuse-check", help="fused vs training-form outputs on random input")
    _add_model_args(check)
    check.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.set_defaults(func=_cmd_fuse_check)

    bench = sub.add_parser(
        "bench", help="latency / FPS of the fused deploy model, with its protocol"
    )
    _add_model_args(bench)
    _add_bench_args(bench)
    bench.add_argument(
        "--preset",
        choices=("paper",),
        help="paper: batch 1, fp16 on CUDA, letterboxed 640 (P5) or 1280 (P6), as in the "
        "paper's FPS column",
    )
    bench.add_argument("--nms", action="store_true", help="also time NMS (separately)")
    bench.add_argument("--conf-thres", type=float, help="NMS confidence threshold (default 0.001)")
    bench.add_argument("--iou-thres", type=float, help="NMS IoU threshold (default 0.65)")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.set_defaults(func=_cmd_bench)

    export = sub.add_parser(
        "export", help="export the fused deploy model to ONNX and check it against torch"
    )
    _add_model_args(export)
    export.add_argument("--onnx", required=True, metavar="PATH", help="output .onnx file")
    export.add_argument(
        "--dynamic-batch", action="store_true", help="symbolic batch axis (size stays fixed)"
    )
    export.add_argument(
        "--no-check", action="store_true", help="skip the ONNX Runtime vs torch comparison"
    )
    export.add_argument(
        "--bench",
        action="store_true",
        help="time the file with ONNX Runtime (same protocol as lab bench; flags below)",
    )
    _add_bench_args(export, torch_flags=False)
    export.add_argument("--json", action="store_true", help="print one JSON object")
    export.set_defaults(func=_cmd_export)

    imp = sub.add_parser(
        "import", help="convert a YOLO layer-list config (YOLOv5/YOLOv7 format) to a spec"
    )
    imp.add_argument("config", metavar="CONFIG.yaml", help="config with backbone/head lists")
    imp.add_argument("--out", metavar="SPEC.yaml", help="write the spec here (default: stdout)")
    imp.add_argument("--name", help="model name (default: the config's file name)")
    imp.set_defaults(func=_cmd_import)

    data = sub.add_parser("data", help="datasets: make the synthetic shapes set")
    data_sub = data.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    synth = data_sub.add_parser("synth", help="write the synthetic shapes set (COCO layout)")
    synth.add_argument("--out", required=True, metavar="DIR", help="output folder")
    synth.add_argument("--images", type=_positive, default=600, help="images in all (600)")
    synth.add_argument("--size", type=_positive, default=320, help="long image side (320)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (0)")
    synth.add_argument("--json", action="store_true", help="print the statistics as JSON")
    synth.set_defaults(func=_cmd_data_synth)
    _add_train_commands(sub)
    add_sweep_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return args.func(args)
    except SpecError as exc:
        sys.stderr.write(f"lab {args.command}: error: {exc}\n")
        return EXIT_USAGE
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
