"""``lab zoo``, ``blocks``, ``profile``, ``show``, ``fuse-check`` and ``import``: look at models."""

from __future__ import annotations

import argparse
import json

from scaling_lab.cli.args import (
    JSON_HELP,
    add_bench_args,
    add_model_args,
    add_switch,
    bench_from_args,
    check_output_dir,
    check_output_file,
    model_from_args,
    training_graph_from_args,
)
from scaling_lab.cli.latency_commands import (
    add_prediction,
    format_prediction,
    predict_from_args,
)
from scaling_lab.layers.forms import FORM_TEXT
from scaling_lab.spec.errors import SpecError


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


def _print_profile(result, per_node: bool, pred_ms: dict[str, float] | None = None) -> None:
    print(f"{result.model}: img {result.img_size}, nc {result.nc}, form {FORM_TEXT[result.form]}")
    print(
        f"  params {result.params_m:.3f}M   GMACs {result.gmacs:.2f}   "
        f"GFLOPs {result.gflops:.2f}   (counter: {result.counter})"
    )
    if not per_node:
        return
    extra = result.counter != "analytic"
    print(
        f"\n  {'node':<16}{'params':>12}{'GMACs':>10}"
        + (f"{result.counter:>10}" if extra else "")
        + (f"{'pred ms':>10}" if pred_ms is not None else "")
    )
    for n in result.per_node:
        line = f"  {n.node:<16}{n.params:>12,}{n.macs / 1e9:>10.3f}"
        if extra:
            line += f"{(n.counter_macs or 0) / 1e9:>10.3f}"
        if pred_ms is not None:  # nodes the deploy graph drops (auxiliary heads) have none
            line += f"{pred_ms[n.node]:>10.3f}" if n.node in pred_ms else f"{'-':>10}"
        print(line)


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


def _cmd_profile(args: argparse.Namespace) -> int:
    from scaling_lab.analyze.profile import profile

    if args.zoo:
        from scaling_lab.report.zoo_table import write_zoo_table

        check_output_dir(args.out, "out")
        md_path, csv_path = write_zoo_table(args.out)
        print(md_path.read_text())
        print(f"wrote {md_path} and {csv_path}")
        return 0
    if not args.model:
        raise SpecError("give a zoo model name or a spec path (or --zoo)", field="MODEL")
    ref = model_from_args(args)
    result = profile(ref, counter=args.counter)
    predicted = predict_from_args(args, ref) if args.latency_table else None
    timing = bench_from_args(args, ref.source) if args.latency else None
    if args.json:
        data = result.to_dict(per_node=args.per_node)
        if predicted is not None:
            add_prediction(data, *predicted)
        if timing is not None:
            data.update(_latency_fields(timing))
        print(json.dumps(data))
    else:
        pred_ms = predicted[0].per_node if predicted is not None else None
        _print_profile(result, args.per_node, pred_ms)
        if predicted is not None:
            print(format_prediction(*predicted))
        if timing is not None:
            print(timing.format())
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from scaling_lab.graph.block_graph import dump_spec
    from scaling_lab.models import get_block_graph, get_layer_graph
    from scaling_lab.report.graph_view import render_graph

    ref = model_from_args(args)
    graph = get_block_graph(ref)
    if args.dump:
        print(dump_spec(graph), end="")
        return 0
    print(render_graph(graph, get_layer_graph(ref)))
    return 0


def _cmd_fuse_check(args: argparse.Namespace) -> int:
    import torch

    from scaling_lab.analyze.fuse_check import fuse_check

    dtype = getattr(torch, args.dtype)  # float32 | float64 (argparse choices)
    result = fuse_check(
        training_graph_from_args(args, "fuse-check"), img_size=args.img, dtype=dtype
    )
    result["repconv"] = args.repconv or "as written"
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>24}: {value}")
    return 0 if result["ok"] else 1


def _cmd_import(args: argparse.Namespace) -> int:
    from scaling_lab.atomic import atomic_write_text
    from scaling_lab.spec.layer_list import load_layer_list

    if args.out is not None:
        check_output_file(args.out, "out")
    imported = load_layer_list(args.config, name=args.name)
    if args.out is None:
        print(imported.text, end="")
        return 0
    atomic_write_text(args.out, imported.text)
    print(f"wrote {args.out} ({len(imported.spec.nodes)} nodes; `lab profile {args.out}`)")
    return 0


def _add_profile(sub) -> None:
    prof = sub.add_parser("profile", help="params, GMACs and GFLOPs of a model")
    add_model_args(prof, required=False)
    add_switch(prof, "--deploy", "fused form without auxiliary heads (what the paper reports)")
    prof.add_argument("--counter", choices=("analytic", "thop", "fvcore"), default="analytic")
    add_switch(prof, "--per-node", "break totals down by node")
    add_switch(prof, "--json", JSON_HELP)
    add_switch(prof, "--zoo", "profile every zoo model against the paper; write reports/zoo/")
    prof.add_argument("--out", default="reports/zoo", help="output folder for --zoo")
    add_switch(
        prof,
        "--latency",
        "also time the fused deploy model (adds latency_ms, fps, protocol; flags below)",
    )
    prof.add_argument(
        "--latency-table",
        metavar="TABLE.json",
        help="predict the deploy model's latency from a table (adds latency_pred_ms; no "
        "module is built; --device/--dtype/--batch/--threads, if given, must match it)",
    )
    add_bench_args(prof)
    prof.set_defaults(func=_cmd_profile)


def add_inspect_commands(sub) -> None:
    """``lab zoo``, ``blocks``, ``profile``, ``show`` and ``fuse-check``, in that order."""
    zoo = sub.add_parser("zoo", help="list the zoo models")
    add_switch(zoo, "--json")
    zoo.set_defaults(func=_cmd_zoo)

    blocks = sub.add_parser("blocks", help="list block types, their roles and fields")
    blocks.set_defaults(func=_cmd_blocks)

    _add_profile(sub)

    show = sub.add_parser("show", help="list a graph's nodes, roles, shapes and RepConvs")
    add_model_args(show)
    add_switch(show, "--deploy", "the deploy graph (fused)")
    add_switch(show, "--dump", "print the transformed spec text")
    show.set_defaults(func=_cmd_show)

    check = sub.add_parser("fuse-check", help="fused vs training-form outputs on random input")
    add_model_args(check)
    check.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    add_switch(check, "--json", JSON_HELP)
    check.set_defaults(func=_cmd_fuse_check)


def add_import_command(sub) -> None:
    """``lab import`` (listed after ``lab export`` in ``lab --help``)."""
    imp = sub.add_parser(
        "import", help="convert a YOLO layer-list config (YOLOv5/YOLOv7 format) to a spec"
    )
    imp.add_argument("config", metavar="CONFIG.yaml", help="config with backbone/head lists")
    imp.add_argument("--out", metavar="SPEC.yaml", help="write the spec here (default: stdout)")
    imp.add_argument("--name", help="model name (default: the config's file name)")
    imp.set_defaults(func=_cmd_import)
