"""``lab``: the command line. Errors in user input print one line and exit with status 2."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

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
    if args.json:
        print(json.dumps(result.to_dict(per_node=args.per_node)))
    else:
        _print_profile(result, args.per_node)
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

    imp = sub.add_parser(
        "import", help="convert a YOLO layer-list config (YOLOv5/YOLOv7 format) to a spec"
    )
    imp.add_argument("config", metavar="CONFIG.yaml", help="config with backbone/head lists")
    imp.add_argument("--out", metavar="SPEC.yaml", help="write the spec here (default: stdout)")
    imp.add_argument("--name", help="model name (default: the config's file name)")
    imp.set_defaults(func=_cmd_import)
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
