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
    result = profile(
        args.model, img_size=args.img, nc=args.nc, deploy=args.deploy, counter=args.counter
    )
    if args.json:
        print(json.dumps(result.to_dict(per_node=args.per_node)))
    else:
        _print_profile(result, args.per_node)
    return 0


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
    prof.add_argument(
        "model",
        nargs="?",
        metavar="MODEL_OR_SPEC",
        help="zoo name (yolov7, yolov7-deploy, ...) or path of a .yaml spec",
    )
    prof.add_argument("--img", type=_positive, help="square input size (default: the spec's)")
    prof.add_argument("--nc", type=_positive, help="number of classes (default: the spec's)")
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
