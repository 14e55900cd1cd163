"""``lab latency-table build | show``: measure per-op latency tables and look inside one."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from scaling_lab.cli.args import (
    JSON_HELP,
    add_switch,
    bounded,
    check_output_file,
    positive,
)
from scaling_lab.device import DTYPES
from scaling_lab.errors import UserError
from scaling_lab.limits import MAX_IMG_SIZE

if TYPE_CHECKING:
    from scaling_lab.analyze.latency_build import Source
    from scaling_lab.analyze.latency_predict import LatencyPrediction
    from scaling_lab.analyze.latency_table import LatencyTable
    from scaling_lab.models import ModelRef

DEFAULT_SPACE_SAMPLES = 32
SPACE_SEED = 0


def _names(text: str) -> list[str]:
    """argparse type: a comma-separated list of model names or paths."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected NAME[,NAME...], got '{text}'")
    return names


def _sizes(text: str) -> list[int]:
    """argparse type: comma-separated input sizes."""
    parse = bounded(1, MAX_IMG_SIZE)
    return [parse(t.strip()) for t in text.split(",") if t.strip()] or [parse(text)]


def _samples(text: str) -> int | None:
    """argparse type: a design count, or ``all`` (the whole grid of a finite space)."""
    return None if text == "all" else positive(text)


def model_sources(models: list[str], sizes: list[int] | None) -> list[Source]:
    """The deploy graph of each model at each size (its spec's size without ``--img``)."""
    from scaling_lab.analyze.latency_build import Source
    from scaling_lab.models import get_layer_graph, model_ref

    out = []
    for name in models:
        ref = model_ref(name, form="deploy")
        for size in sizes or [None]:
            graph = get_layer_graph(ref, img_size=size)
            out.append(Source(f"{name}@{graph.input_shape.h}", graph))
    return out


def space_sources(
    space: str, base: str, samples: int | None, sizes: list[int] | None, seed: int = SPACE_SEED
) -> list[Source]:
    """The deploy graphs of designs of a search space on ``base`` (seeded sample or grid)."""
    from scaling_lab.analyze.latency_build import Source
    from scaling_lab.models import get_block_graph, get_layer_graph, model_ref
    from scaling_lab.sweep.designs import design_graphs, read_space, space_params

    params = space_params(read_space(space), samples, seed)
    out = []
    for key, graph in design_graphs(get_block_graph(base), params, source=space):
        for size in sizes or [None]:
            layers = get_layer_graph(model_ref(graph, form="deploy"), img_size=size)
            out.append(Source(f"{key}@{layers.input_shape.h}", layers))
    return out


def _sources(args: argparse.Namespace) -> list[Source]:
    if not args.models and not args.space:
        raise UserError("give --models and/or --space (what the table must cover)", field="models")
    sources = model_sources(args.models or [], args.img)
    if args.space:
        base = args.space_base or (args.models[0] if args.models else None)
        if base is None:
            raise UserError(
                "--space needs a base model: --space-base MODEL (or a first --models entry)",
                field="space-base",
            )
        sources += space_sources(args.space, base, args.space_samples, args.img)
    return sources


def _summary(table: LatencyTable, measured: int) -> dict:
    return {
        "path": table.path,
        "entries": len(table.entries),
        "measured_now": measured,
        "build_s": round(table.build_s, 1),
        "overheads": {k: v for k, v in table.overheads.items() if k != "method"},
        "fallback": {g: {"n": f["n"], "cv_mape": f["cv_mape"]} for g, f in table.fallback.items()},
        "protocol": table.protocol,
    }


def _print_table(table: LatencyTable, measured: int | None = None) -> None:
    now = "" if measured is None else f" ({measured} measured now)"
    print(f"{table.path}: {table.describe()}{now}; build {table.build_s:.0f} s")
    kinds: dict[str, int] = {}
    for entry in table.entries.values():
        kinds[entry["kind"]] = kinds.get(entry["kind"], 0) + 1
    print("  entries    " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
    o = table.overheads
    if o:
        print(
            f"  overheads  model call {o['model_ms'] * 1e3:.1f} us, per op "
            f"{o['per_op_ms'] * 1e3:+.2f} us (in a generated forward vs alone; measured)"
        )
    decode = [e["decode_ms"] for e in table.entries.values() if "decode_ms" in e]
    if decode:
        print(f"  head       decode {min(decode):.2f}-{max(decode):.2f} ms (measured per Detect)")
    for group, fit in table.fallback.items():
        cv = "n/a" if fit["cv_mape"] is None else f"{fit['cv_mape']:.1f}%"
        print(f"  fallback   {group:<16} n {fit['n']:>4}   CV MAPE {cv}")
    for line in (
        f"device {table.protocol.get('device')} ({table.protocol.get('device_name')})",
        f"software torch {table.protocol.get('torch_version')}, "
        f"allocator {table.protocol.get('allocator')}",
        f"cache {table.protocol.get('cache')}",
    ):
        print(f"  protocol   {line}")


# --- lab profile --latency-table -------------------------------------------------------------


def _asked(args: argparse.Namespace) -> dict:
    """The protocol fields the profile's flags ask for (unset flags ask nothing)."""
    wanted: dict = {}
    device = getattr(args, "device", None)
    if device:
        wanted["device"] = "cuda:0" if device == "cuda" else device
    for flag in ("dtype", "batch", "threads"):
        if getattr(args, flag, None) is not None:
            wanted[flag] = getattr(args, flag)
    if getattr(args, "channels_last", False):
        wanted["layout"] = "nhwc"
    return wanted


def predict_from_args(
    args: argparse.Namespace, ref: ModelRef
) -> tuple[LatencyPrediction, LatencyTable, float]:
    """The predicted latency of the model's deploy graph from ``--latency-table``, the table,
    and how long the prediction took (ms; the table's reading not included)."""
    import time

    from scaling_lab.analyze.latency_predict import predict_latency
    from scaling_lab.analyze.latency_table import check_protocol, load_table
    from scaling_lab.models import get_layer_graph, model_ref

    table = load_table(args.latency_table)
    wanted = _asked(args)
    check_protocol(table, wanted, what="as the flags ask")
    graph = get_layer_graph(model_ref(ref.source, form="deploy"))
    t0 = time.perf_counter()
    prediction = predict_latency(graph, table)
    return prediction, table, (time.perf_counter() - t0) * 1e3


def add_prediction(
    data: dict, prediction: LatencyPrediction, table: LatencyTable, took_ms: float
) -> None:
    """``lab profile --json``'s prediction fields (per node too when nodes are listed)."""
    data["latency_pred_ms"] = round(prediction.total_ms, 4)
    details = prediction.to_dict()
    details.pop("latency_pred_ms")
    details.update(
        table=table.path,
        device=table.protocol.get("device"),
        device_name=table.protocol.get("device_name"),
        predict_ms=round(took_ms, 3),
    )
    data["latency_pred"] = details
    per_node = prediction.per_node
    for node in data.get("per_node", []):
        node["latency_pred_ms"] = (
            round(per_node[node["node"]], 4) if node["node"] in per_node else None
        )


def format_prediction(prediction: LatencyPrediction, table: LatencyTable, took_ms: float) -> str:
    lines = [
        f"  latency (predicted) {prediction.total_ms:.2f} ms, deploy form, from {table.path} "
        f"({table.describe()}); {prediction.looked_up} ops looked up, {prediction.estimated} "
        f"estimated; predicted in {took_ms:.1f} ms"
    ]
    note = prediction.fallback_note()
    if note:
        lines.append(f"  {note}")
    return "\n".join(lines)


# --- lab latency-table ------------------------------------------------------------------------


def _cmd_build(args: argparse.Namespace) -> int:
    from scaling_lab.analyze.latency_build import build_table
    from scaling_lab.analyze.timing import resolve_request

    check_output_file(args.out, "out")
    resolve_request(device=args.device, dtype=args.dtype, batch=args.batch, threads=args.threads)
    sources = _sources(args)
    before = _entries_in(args.out) if not args.fresh else 0
    table = build_table(
        sources,
        args.out,
        device=args.device,
        threads=args.threads,
        dtype=args.dtype,
        batch=args.batch,
        channels_last=args.channels_last,
        fresh=args.fresh,
    )
    measured = len(table.entries) - before
    if args.json:
        print(json.dumps(_summary(table, measured)))
    else:
        _print_table(table, measured)
    return 0


def _entries_in(path: str) -> int:
    """Entries an existing table already holds (0 when there is none to resume)."""
    from pathlib import Path

    from scaling_lab.analyze.latency_table import load_table

    if not Path(path).exists():
        return 0
    return len(load_table(path, complete=False).entries)


def _cmd_show(args: argparse.Namespace) -> int:
    from scaling_lab.analyze.latency_table import load_table

    table = load_table(args.table, complete=False)
    if args.json:
        print(json.dumps(_summary(table, 0)))
    else:
        _print_table(table)
    return 0


def add_commands(sub) -> None:
    """``lab latency-table build`` and ``lab latency-table show``."""
    group = sub.add_parser(
        "latency-table", help="per-op latency tables: measure once, predict without the device"
    )
    actions = group.add_subparsers(dest="action", required=True, parser_class=type(group))
    build = actions.add_parser(
        "build", help="time every distinct op configuration of some models / a search space"
    )
    build.add_argument("--device", default="cpu", help="cpu (default) | cuda | cuda:N")
    build.add_argument("--threads", type=positive, help="intra-op threads (default: torch's)")
    build.add_argument("--dtype", choices=DTYPES, default="fp32")
    build.add_argument("--batch", type=positive, default=1, help="images per call (default 1)")
    add_switch(build, "--channels-last", "NHWC memory format")
    build.add_argument("--models", type=_names, help="zoo names or spec paths, comma-separated")
    build.add_argument("--img", type=_sizes, help="input sizes, comma-separated (default: spec)")
    build.add_argument("--space", metavar="SPACE.yaml", help="a search space file")
    build.add_argument(
        "--space-samples",
        type=_samples,
        default=DEFAULT_SPACE_SAMPLES,
        metavar="K",
        help=f"designs drawn from --space (seed {SPACE_SEED}; default {DEFAULT_SPACE_SAMPLES}; "
        "'all': the whole grid of a finite space)",
    )
    build.add_argument("--space-base", metavar="MODEL", help="the model --space changes")
    build.add_argument("--out", required=True, metavar="TABLE.json", help="the table file")
    add_switch(build, "--fresh", "measure everything anew (default: resume the file)")
    add_switch(build, "--json", JSON_HELP)
    build.set_defaults(func=_cmd_build)

    show = actions.add_parser("show", help="a table's protocol, entries, overheads and fits")
    show.add_argument("table", metavar="TABLE.json")
    add_switch(show, "--json", JSON_HELP)
    show.set_defaults(func=_cmd_show)
