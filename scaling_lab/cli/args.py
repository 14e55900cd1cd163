"""Argument helpers shared by the command groups: the parser class, types, model and
protocol flags, and the graph / latency they describe."""

from __future__ import annotations

import argparse
import errno
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scaling_lab.device import DTYPES
from scaling_lab.errors import UserError
from scaling_lab.limits import MAX_IMG_SIZE, MAX_NC
from scaling_lab.spec.errors import SpecError
from scaling_lab.transforms.scale import MODES as SCALE_MODES

if TYPE_CHECKING:  # the heavy modules load only when a command runs
    from scaling_lab.analyze.latency import LatencyResult
    from scaling_lab.graph.block_graph import BlockGraph
    from scaling_lab.models import ModelRef

EXIT_USAGE = 2
JSON_HELP = "print one JSON object"


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (no usage dump) and exits 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(EXIT_USAGE)


def positive(text: str) -> int:
    """argparse type: an integer >= 1, refused in argparse's own one-line form otherwise."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def bounded(low: int, high: int) -> Callable[[str], int]:
    """argparse type: an integer from ``low`` to ``high`` (the limits in the README)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None
        if not low <= value <= high:
            kind = {0: "a non-negative integer", 1: "a positive integer"}.get(low)
            wanted = f"{kind} (at most {high})" if kind else f"an integer from {low} to {high}"
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {value}")
        return value

    return parse


def number_in(low: float, high: float, *, open_low: bool = False) -> Callable[[str], float]:
    """argparse type: a finite number from ``low`` (excluded when ``open_low``) to ``high``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
        above = value > low if open_low else value >= low
        if not (math.isfinite(value) and above and value <= high):
            side = "above" if open_low else "from"
            raise argparse.ArgumentTypeError(
                f"expected a number {side} {low:g} to {high:g}, got '{text}'"
            )
        return value

    return parse


NAME_MAX = 255  # bytes of one file or folder name (Linux, macOS)


def _check_name_length(path: Path, field: str) -> None:
    """A path the file system cannot hold (a name over ``NAME_MAX`` bytes, the whole over
    PATH_MAX) is refused here, not as an OSError from the first look at it."""
    text = str(path)
    shown = text if len(text) <= 80 else f"{text[:50]}...{text[-20:]}"
    longest = max((len(os.fsencode(part)) for part in path.parts), default=0)
    if longest > NAME_MAX:
        raise UserError(
            f"a name of {longest} bytes is too long for a file (limit {NAME_MAX})",
            source=shown,
            field=field,
        )
    try:
        os.lstat(path)
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise UserError(
                f"path too long for the file system ({len(text)} characters)",
                source=shown,
                field=field,
            ) from None


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_creatable(path: Path, field: str) -> None:
    """The folders missing on the way to ``path`` can be made: the nearest existing one is a
    writable folder."""
    base = _nearest_existing(path.absolute().parent)
    if not base.is_dir():
        raise UserError(f"cannot write here: {base} is not a folder", source=str(path), field=field)
    if not os.access(base, os.W_OK | os.X_OK):
        raise UserError(f"cannot write here: {base} is not writable", source=str(path), field=field)


def check_output_dir(path: str | Path, field: str) -> None:
    """An output folder the command can make or fill, checked before any work starts."""
    path = Path(path)
    _check_name_length(path, field)
    if path.exists() and not path.is_dir():
        raise UserError("exists and is not a folder", source=str(path), field=field)
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise UserError("folder is not writable", source=str(path), field=field)
        return
    _check_creatable(path, field)


def check_output_file(path: str | Path, field: str) -> None:
    """An output file the command can write (missing folders are made), checked up front."""
    path = Path(path)
    _check_name_length(path, field)
    if path.is_dir():
        raise UserError("is a folder: give a file path", source=str(path), field=field)
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError("file is not writable", source=str(path), field=field)
    _check_creatable(path, field)


def pick(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The flags whose names are also the keyword names of the library call they feed."""
    return {name: getattr(args, name) for name in names}


def add_switch(p: argparse.ArgumentParser, flag: str, help: str | None = None) -> None:
    """An on/off flag (``store_true``)."""
    p.add_argument(flag, action="store_true", help=help)


def add_model_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    """The model and its transforms: what ``model_from_args`` reads."""
    p.add_argument(
        "model",
        nargs=None if required else "?",
        metavar="MODEL_OR_SPEC",
        help="zoo name (yolov7, yolov7-deploy, ...) or path of a .yaml spec",
    )
    p.add_argument(
        "--img", type=bounded(1, MAX_IMG_SIZE), help="square input size (default: the spec's)"
    )
    p.add_argument("--nc", type=bounded(1, MAX_NC), help="number of classes (default: the spec's)")
    p.add_argument(
        "--repconv",
        metavar="POLICY",
        help="RepConv placement: none | all | planned | PATTERN=PLACEMENT,... "
        "(placements: conv, repconv, repconvn, planned, all)",
    )
    p.add_argument(
        "--scale-mode",
        choices=SCALE_MODES,
        help="scale the graph (paper §3.2) before anything else",
    )
    p.add_argument("--depth", type=float, default=1.0, help="depth factor for --scale-mode")
    p.add_argument("--width", type=float, help="width factor for --scale-mode")


def add_bench_args(p: argparse.ArgumentParser, torch_flags: bool = True) -> None:
    """Protocol flags shared by ``lab bench``, ``lab profile --latency`` and ``lab export
    --bench`` (ONNX Runtime: device, batch, threads, warm-up and iterations only)."""
    p.add_argument(
        "--device", help="cpu (default) | cuda | cuda:N; a CUDA request without CUDA is refused"
    )
    p.add_argument("--batch", type=positive, help="images per call (default 1)")
    p.add_argument("--threads", type=positive, help="intra-op threads for the run")
    p.add_argument("--warmup", type=int, help="untimed calls first (default 5 on CPU, 25 on CUDA)")
    p.add_argument("--iters", type=positive, help="timed calls (default 30 on CPU, 200 on CUDA)")
    if not torch_flags:
        return
    p.add_argument("--dtype", choices=DTYPES, help="default fp32; fp16 is CUDA only")
    add_switch(p, "--channels-last", "NHWC memory format")
    add_switch(
        p, "--compile", "torch.compile the model (compile time reported apart from the latency)"
    )
    add_switch(p, "--cuda-graph", "replay a CUDA graph captured after warm-up")


def model_from_args(args: argparse.Namespace) -> ModelRef:
    """The model the flags name, parsed once (its form from a ``-deploy`` suffix or
    ``--deploy``), with its transforms applied: overrides, RepConv policy, scaling."""
    from scaling_lab.layers.plan_repconv import parse_policy
    from scaling_lab.models import get_block_graph, model_ref
    from scaling_lab.transforms.scale import scale

    ref = model_ref(args.model, deploy=getattr(args, "deploy", False))
    repconv = parse_policy(args.repconv) if args.repconv else None
    graph = get_block_graph(ref.source, nc=args.nc, img_size=args.img, repconv=repconv)
    if args.scale_mode:
        graph = scale(graph, depth=args.depth, width=args.width, mode=args.scale_mode)
        suffix = f"{args.scale_mode}-d{args.depth:g}" + (f"-w{args.width:g}" if args.width else "")
        graph = graph.with_settings(name=f"{graph.name}@{suffix}")
    elif args.depth != 1.0 or args.width is not None:
        raise SpecError(
            "--depth/--width need --scale-mode width|depth|compound", field="scale-mode"
        )
    return ref.with_graph(graph)


def training_graph_from_args(args: argparse.Namespace, command: str) -> BlockGraph:
    """The training-form graph, for commands that fuse it themselves: bench and export
    always time or write the deploy model; fuse-check compares the training form with its
    fused form, so a model named in another form is refused there, not silently unfused."""
    ref = model_from_args(args)
    if command == "fuse-check" and ref.form != "training":
        raise SpecError(
            f"fuse-check starts from the training form and fuses it itself: name the model "
            f"without the -{ref.form} suffix",
            field="MODEL",
        )
    return ref.source


def bench_from_args(args: argparse.Namespace, graph: BlockGraph | None = None) -> LatencyResult:
    """Latency of the fused deploy model under the flags' protocol (``lab bench``, ``lab
    profile --latency``; flags only ``lab bench`` has read as unset elsewhere)."""
    from scaling_lab.analyze.latency import benchmark
    from scaling_lab.train.heads import with_decode

    return benchmark(
        graph if graph is not None else training_graph_from_args(args, "bench"),
        img_size=args.img,
        wrap=with_decode,  # an anchor-free head timed with its decode, as YOLOv7's
        preset=getattr(args, "preset", None),
        nms=getattr(args, "nms", False),
        conf_thres=getattr(args, "conf_thres", None),
        iou_thres=getattr(args, "iou_thres", None),
        **pick(
            args,
            "device",
            "dtype",
            "batch",
            "channels_last",
            "compile",
            "cuda_graph",
            "threads",
            "warmup",
            "iters",
        ),
    )
