"""The public modules a YOLO layer-list config may name, and how each maps to our blocks.

Each converter reads one layer's arguments as the public ``parse_model`` does (the first
argument is the output width, scaled by the width multiple unless it is the head's width)
and emits named nodes. ``MODULES`` is the table the importer (``layer_list.py``) looks up.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, overload

from scaling_lab.spec.activations import ACTIVATIONS, module_text
from scaling_lab.spec.errors import SpecError

IMAGE = "input"  # the spec's name for the image
DEFAULT_ACT = "silu"  # Conv's activation in YOLOv5 r6.x and YOLOv7

# how layer-list configs write each activation -> our name
ACTIVATION_BY_TEXT = {module_text(name): name for name in ACTIVATIONS}


def make_divisible(x: float, divisor: int = 8) -> int:
    """The smallest multiple of ``divisor`` >= ``x`` (the public implementations' rounding)."""
    return math.ceil(x / divisor) * divisor


@dataclass(frozen=True)
class LayerListEntry:
    """One ``[from, number, module, args]`` entry, with its sources resolved."""

    index: int
    sources: tuple[int, ...]  # absolute layer indices; -1 is the image
    number: int  # repeats after the depth multiple
    module: str
    args: tuple[Any, ...]
    line: int | None
    many_sources: bool  # `from` was written as a list


@dataclass
class Node:
    """A node the conversion emitted, with the layer it came from."""

    name: str
    type: str
    inputs: tuple[str, ...]
    fields: dict[str, Any]
    layer: LayerListEntry


@dataclass
class Conversion:
    """What the conversion tracks: per-layer output widths, strides and node names."""

    nc: int
    anchors: Any
    depth: float
    width: float
    channels_in: int
    source: str
    widths: list[int] = field(default_factory=list)
    strides: list[int] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)  # node name of each layer's output
    nodes: list[Node] = field(default_factory=list)
    _names: Counter[str] = field(default_factory=Counter)

    @property
    def n_outputs(self) -> int:
        """The head's conv width, anchors x (nc + 5): left unscaled like the reference."""
        anchors = self.anchors
        per_level = anchors if isinstance(anchors, int) else len(anchors[0]) // 2
        return per_level * (self.nc + 5)

    def width_of(self, index: int) -> int:
        return self.channels_in if index < 0 else self.widths[index]

    def stride_of(self, index: int) -> int:
        return 1 if index < 0 else self.strides[index]

    def name_of(self, index: int) -> str:
        return IMAGE if index < 0 else self.outputs[index]

    def emit(
        self,
        layer: LayerListEntry,
        kind: str,
        stride: int,
        type_: str,
        inputs: Iterable[str],
        **fields: Any,
    ) -> str:
        """Add a node named after its kind and output level; returns the name."""
        level = int(math.log2(stride)) if stride >= 1 else 0
        base = kind if kind == "detect" else f"{kind}_p{level}"
        self._names[base] += 1
        name = base if self._names[base] == 1 else f"{base}_{self._names[base]}"
        fields = {k: v for k, v in fields.items() if v is not None}
        self.nodes.append(Node(name, type_, tuple(inputs), fields, layer))
        return name


def layer_error(layer: LayerListEntry, message: str, source: str) -> SpecError:
    return SpecError(
        f"layer {layer.index} ({layer.module}): {message}", source=source, line=layer.line
    )


# ----------------------------------------------------------------------------- arguments

# a converter: (model, layer, its named arguments) -> (output node, output width, output stride)
Converter = Callable[[Conversion, LayerListEntry, dict[str, Any]], tuple[str, int, int]]


@dataclass(frozen=True)
class ModuleRule:
    """How one public module maps to our blocks."""

    args: tuple[str, ...]  # its config arguments, in order
    required: int  # how many of them must be given
    convert: Converter
    repeats: str = "one"  # what `number` means: see _CSP, _COPIES, _IGNORED; "one": must be 1


def module_args(spec: ModuleRule, layer: LayerListEntry, source: str) -> dict[str, Any]:
    given = list(layer.args)
    if not spec.required <= len(given) <= len(spec.args):
        expected = (
            f"{spec.required}"
            if spec.required == len(spec.args)
            else f"{spec.required} to {len(spec.args)}"
        )
        names = ", ".join(spec.args) or "none"
        raise layer_error(
            layer, f"takes {expected} args [{names}], got {len(given)}: {given}", source
        )
    return dict(zip(spec.args, given))


@overload
def _int(
    layer: LayerListEntry, args: dict, key: str, default: int, source: str, *, pair: bool = False
) -> int: ...


@overload
def _int(
    layer: LayerListEntry, args: dict, key: str, default: None, source: str, *, pair: bool = False
) -> int | None: ...


def _int(
    layer: LayerListEntry,
    args: dict,
    key: str,
    default: int | None,
    source: str,
    *,
    pair: bool = False,
) -> int | None:
    """An integer argument; ``pair``: a list of equal integers (a square kernel, stride or
    padding, which torch's conv and pooling also accept as a pair) counts as one integer."""
    value = args.get(key, default)
    if value is None:
        return default
    if pair and isinstance(value, list):
        value = _square(layer, key, value, source)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise layer_error(
            layer, f"argument '{key}' must be a non-negative integer, got {value!r}", source
        )
    return value


def _square(layer: LayerListEntry, key: str, value: list, source: str) -> Any:
    """``[3, 3]`` -> 3; a non-square pair is refused (our convs and pools are square)."""
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    if not (ints and len(value) == 2):
        raise layer_error(
            layer,
            f"argument '{key}' must be an integer or a pair of integers, got {value!r}",
            source,
        )
    if value[0] != value[1]:
        raise layer_error(
            layer,
            f"argument '{key}' {value!r} is not square (only equal pairs are supported)",
            source,
        )
    return value[0]


def _bool(layer: LayerListEntry, args: dict, key: str, default: bool, source: str) -> bool:
    value = args.get(key, default)
    if not isinstance(value, bool):
        raise layer_error(layer, f"argument '{key}' must be True or False, got {value!r}", source)
    return value


def _float(layer: LayerListEntry, args: dict, key: str, default: float, source: str) -> float:
    value = args.get(key, default)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise layer_error(
            layer, f"argument '{key}' must be a positive number, got {value!r}", source
        )
    return float(value)


def _act(layer: LayerListEntry, args: dict, source: str) -> str | None:
    value = args.get("act", True)
    if value is True:
        return None  # the model's default
    if value is False:
        return "identity"
    if isinstance(value, str) and value.replace(" ", "") in ACTIVATION_BY_TEXT:
        return ACTIVATION_BY_TEXT[value.replace(" ", "")]
    raise layer_error(
        layer,
        f"unsupported activation {value!r} (known: True, False, {', '.join(ACTIVATION_BY_TEXT)})",
        source,
    )


def _width(model: Conversion, layer: LayerListEntry, args: dict, source: str) -> int:
    """The first argument as an output width, after the width multiple."""
    c_out = args["c_out"]
    if not isinstance(c_out, int) or isinstance(c_out, bool) or c_out < 1:
        raise layer_error(
            layer, f"argument 'c_out' must be a positive integer, got {c_out!r}", source
        )
    return c_out if c_out == model.n_outputs else make_divisible(c_out * model.width)


def _single(model: Conversion, layer: LayerListEntry, source: str) -> int:
    if layer.many_sources:
        raise layer_error(layer, f"takes one input, got from {list(layer.sources)}", source)
    return layer.sources[0]


# ----------------------------------------------------------------------------- converters
# Each returns (node name of the layer's output, output width, output stride).


def _conv_like(
    model: Conversion, layer: LayerListEntry, args: dict, *, rep: bool
) -> tuple[str, int, int]:
    src = model.source
    x = _single(model, layer, src)
    c_out = _width(model, layer, args, src)
    default_k = 3 if rep else 1
    k = _int(layer, args, "k", default_k, src, pair=True)
    s = _int(layer, args, "s", 1, src, pair=True)
    p = _int(layer, args, "p", None, src, pair=True)
    groups = _int(layer, args, "groups", 1, src)
    act = _act(layer, args, src)
    if k < 1 or s < 1 or groups < 1:
        raise layer_error(
            layer, f"kernel, stride and groups must be >= 1, got {k}, {s}, {groups}", src
        )
    p = None if p == k // 2 else p
    if rep and (p is not None or groups != 1 or args.get("deploy", False)):
        raise layer_error(
            layer, "RepConv is imported with default padding, groups 1, training form", src
        )
    fields = {
        "c": c_out,
        "k": k if k != default_k else None,
        "s": s if s != 1 else None,
        "groups": groups if groups != 1 else None,
        "act": act,
    }
    if not rep:
        fields["p"] = p
    name, stride = model.name_of(x), model.stride_of(x)
    for _ in range(layer.number):
        stride *= s
        kind = "rep" if rep else ("down" if s > 1 else "conv")
        name = model.emit(layer, kind, stride, "repconv" if rep else "conv", [name], **fields)
    return name, c_out, stride


def _conv(model: Conversion, layer: LayerListEntry, args: dict) -> tuple[str, int, int]:
    return _conv_like(model, layer, args, rep=False)


def _repconv(model: Conversion, layer: LayerListEntry, args: dict) -> tuple[str, int, int]:
    return _conv_like(model, layer, args, rep=True)


def _focus(model: Conversion, layer: LayerListEntry, args: dict) -> tuple[str, int, int]:
    src = model.source
    x = _single(model, layer, src)
    c_out = _width(model, layer, args, src)
    k, s = _int(layer, args, "k", 1, src, pair=True), _int(layer, args, "s", 1, src, pair=True)
    p = _int(layer, args, "p", None, src, pair=True)
    groups = _int(layer, args, "groups", 1, src)
    if (p is not None and p != k // 2) or groups != 1:
        raise layer_error(layer, "Focus is imported with default padding and groups 1", src)
    stride = model.stride_of(x) * 2 * s
    name = model.emit(
        layer,
        "focus",
        stride,
        "focus",
        [model.name_of(x)],
        c=c_out,
        k=k if k != 1 else None,
        s=s if s != 1 else None,
        act=_act(layer, args, src),
    )
    return name, c_out, stride


def _stem(model: Conversion, layer: LayerListEntry, args: dict) -> tuple[str, int, int]:
    """Stem (r50-csp, x50-csp): the reference takes Conv's arguments and uses only c_out."""
    src = model.source
    x = _single(model, layer, src)
    c_out = _width(model, layer, args, src)
    stride = model.stride_of(x) * 4
    name = model.emit(layer, "stem", stride, "stem", [model.name_of(x)], c=c_out)
    return name, c_out, stride


@dataclass(frozen=True)
class _UnitArgs:
    """What residual and CSP modules read from their arguments, in the public parse order."""

    x: int  # the input layer
    c_out: int
    shortcut: bool
    groups: int
    e: float  # hidden width as a fraction of c_out


def _unit_args(
    model: Conversion, layer: LayerListEntry, args: dict, shortcut: bool, groups: int
) -> _UnitArgs:
    src = model.source
    x = _single(model, layer, src)
    c_out = _width(model, layer, args, src)
    return _UnitArgs(
        x,
        c_out,
        _bool(layer, args, "shortcut", shortcut, src),
        _int(layer, args, "groups", groups, src),
        _float(layer, args, "e", 0.5, src),
    )


def _bottleneck(unit: str, default_groups: int) -> Converter:
    """Bottleneck / Res / ResX: ``number`` units in sequence; an add where c_in == c_out."""

    def convert(model: Conversion, layer: LayerListEntry, args: dict) -> tuple[str, int, int]:
        read = _unit_args(model, layer, args, True, default_groups)
        x, c_out, shortcut, groups = read.x, read.c_out, read.shortcut, read.groups
        hidden = int(c_out * read.e)
        name, c_in, stride = model.name_of(x), model.width_of(x), model.stride_of(x)
        for _ in range(layer.number):
            if c_in == c_out:
                name = model.emit(
                    layer,
                    "res",
                    stride,
                    "res",
                    [name],
                    hidden=hidden if hidden != c_out // 2 else None,
                    shortcut=None if shortcut else False,
                    unit=None if unit == "dark" else unit,
                    groups=groups if groups != 1 else None,
                )
            else:  # no residual add: the convs alone
                first = model.emit(layer, "conv", stride, "conv", [name], c=hidden)
                if unit == "res":
                    first = model.emit(
                        layer,
                        "conv",
                        stride,
                        "conv",
                        [first],
                        c=hidden,
                        k=3,
                        groups=groups if groups != 1 else None,
                    )
                    name = model.emit(layer, "conv", stride, "conv", [first], c=c_out)
                else:
                    name = model.emit(
                        layer,
                        "conv",
                        stride,
                        "conv",
                        [first],
                        c=c_out,
                        k=3,
                        groups=groups if groups != 1 else None,
                    )
            c_in = c_out
        return name, c_out, stride

    return convert


def _csp_family(
    block: str,
    *,
    shortcut: bool,
    unit: str = "dark",
    expansion: float = 1.0,
    groups: int = 1,
    hidden_is_out: bool = False,
    **extra: Any,
) -> Converter:
    """A CSP module -> one block whose depth is the layer's repeats.

    ``hidden_is_out``: the module's hidden width is its output width (CSPB, CSP2), else
    ``int(c_out * e)``. Fields equal to the block's defaults are left out.
    """

    def convert(model: Conversion, layer: LayerListEntry, args: dict) -> tuple[str, int, int]:
        src = model.source
        read = _unit_args(model, layer, args, shortcut, groups)
        x, c_out, use_shortcut, g = read.x, read.c_out, read.shortcut, read.groups
        hidden = c_out if hidden_is_out else int(c_out * read.e)
        block_hidden = c_out if block == "csp_b" else c_out // 2
        fields: dict[str, Any] = {
            "c_out": c_out,
            "hidden": hidden if hidden != block_hidden else None,
            "depth": layer.number if layer.number != 1 else None,
            "shortcut": None if use_shortcut == (block != "csp_b") else use_shortcut,
        }
        if block == "csp":
            if g != 1:
                raise layer_error(
                    layer, "groups other than 1 are not supported in this module", src
                )
        else:
            fields.update(
                unit=None if unit == "dark" else unit,
                expansion=None if expansion == 1.0 else expansion,
                groups=g if g != 1 else None,
            )
        fields.update(extra)
        stride = model.stride_of(x)
        name = model.emit(
            layer, block.replace("_", ""), stride, block, [model.name_of(x)], **fields
        )
        return name, c_out, stride

    return convert


def _spp(block: str, default_k: int | list[int]) -> Converter:
    def convert(model: Conversion, layer: LayerListEntry, args: dict) -> tuple[str, int, int]:
        src = model.source
        x = _single(model, layer, src)
        c_out = _width(model, layer, args, src)
        k = args.get("k", default_k)
        ok = (isinstance(k, int) and block == "sppf") or (
            isinstance(k, list) and block != "sppf" and all(isinstance(v, int) for v in k)
        )
        if not ok or isinstance(k, bool):
            raise layer_error(layer, f"argument 'k' has the wrong form: {k!r}", src)
        stride = model.stride_of(x)
        if block == "sppcspc":
            e = _float(layer, args, "e", 0.5, src)
            hidden = int(2 * c_out * e)
            name = model.emit(
                layer,
                "sppcspc",
                stride,
                "sppcspc",
                [model.name_of(x)],
                c=c_out,
                hidden=hidden if hidden != c_out else None,
                k=k if list(k) != [5, 9, 13] else None,
            )
        else:
            name = model.emit(
                layer,
                block,
                stride,
                block,
                [model.name_of(x)],
                c=c_out,
                k=k if k != default_k else None,
            )
        return name, c_out, stride

    return convert


def _downc(model: Conversion, layer: LayerListEntry, args: dict) -> tuple[str, int, int]:
    src = model.source
    x = _single(model, layer, src)
    c_out = _width(model, layer, args, src)
    k = _int(layer, args, "k", 2, src, pair=True)
    stride = model.stride_of(x) * k
    name = model.emit(
        layer, "down", stride, "downc", [model.name_of(x)], c=c_out, k=k if k != 2 else None
    )
    return name, c_out, stride


def _pool(model: Conversion, layer: LayerListEntry, args: dict) -> tuple[str, int, int]:
    src = model.source
    x = _single(model, layer, src)
    sp = layer.module == "SP"
    k = _int(layer, args, "k", 3 if sp else 2, src, pair=not sp)  # SP pads by k // 2: ints
    s = _int(layer, args, "s", 1, src) if sp else k
    stride = model.stride_of(x) * s
    name = model.emit(
        layer,
        "pool",
        stride,
        "maxpool",
        [model.name_of(x)],
        k=k if k != 2 else None,
        s=s if s != k else None,
    )
    return name, model.width_of(x), stride


def _upsample(model: Conversion, layer: LayerListEntry, args: dict) -> tuple[str, int, int]:
    src = model.source
    x = _single(model, layer, src)
    scale, mode = args.get("scale"), args.get("mode", "nearest")
    if args.get("size") is not None or not isinstance(scale, int) or scale < 1:
        raise layer_error(
            layer, f"needs [None, scale, mode] with an integer scale, got {list(layer.args)}", src
        )
    if mode != "nearest":
        raise layer_error(layer, f"only 'nearest' upsampling is supported, got {mode!r}", src)
    stride = model.stride_of(x) // scale
    name = model.emit(
        layer, "up", stride, "upsample", [model.name_of(x)], scale=scale if scale != 2 else None
    )
    return name, model.width_of(x), stride


def _join(block: str) -> Converter:
    """Concat (dimension 1 only) or Shortcut (x[0] + x[1]; its argument is not used)."""

    def convert(model: Conversion, layer: LayerListEntry, args: dict) -> tuple[str, int, int]:
        src = model.source
        if block == "concat" and args.get("dim", 1) != 1:
            raise layer_error(layer, f"only dimension 1 is supported, got {args['dim']!r}", src)
        if len(layer.sources) < 2:
            raise layer_error(
                layer, f"needs at least two inputs, got from {list(layer.sources)}", src
            )
        widths = [model.width_of(i) for i in layer.sources]
        stride = model.stride_of(layer.sources[0])
        inputs = [model.name_of(i) for i in layer.sources]
        name = model.emit(layer, "cat" if block == "concat" else "add", stride, block, inputs)
        return name, sum(widths) if block == "concat" else widths[0], stride

    return convert


def _reorg(model: Conversion, layer: LayerListEntry, args: dict) -> tuple[str, int, int]:
    x = _single(model, layer, model.source)
    stride = model.stride_of(x) * 2
    name = model.emit(layer, "reorg", stride, "reorg", [model.name_of(x)])
    return name, 4 * model.width_of(x), stride


def _detect(block: str, implicit: bool) -> Converter:
    def convert(model: Conversion, layer: LayerListEntry, args: dict) -> tuple[str, int, int]:
        src = model.source
        nc = args["nc"]
        if nc not in ("nc", model.nc):
            raise layer_error(
                layer, f"class count {nc!r} differs from the config's nc {model.nc}", src
            )
        anchors = args["anchors"]
        if anchors != "anchors" and anchors != model.anchors:
            raise layer_error(layer, "anchors must be the config's 'anchors'", src)
        levels = len(layer.sources) // (2 if block == "aux_detect" else 1)
        if isinstance(model.anchors, list) and len(model.anchors) != levels:
            raise layer_error(
                layer,
                f"{levels} detection levels but {len(model.anchors)} anchor levels in 'anchors'",
                src,
            )
        inputs = [model.name_of(i) for i in layer.sources]
        name = model.emit(layer, "detect", 1, block, inputs, implicit=None if implicit else False)
        return name, 0, 1

    return convert


_CONV_ARGS = ("c_out", "k", "s", "p", "groups", "act")
_CSP_ARGS = ("c_out", "shortcut", "groups", "e")
_CSP = "depth"  # repeats become the block's depth
_COPIES = "copies"  # repeats become that many nodes in sequence
_IGNORED = "ignored"  # parse_model passes the repeats in, the module does not use them


def _csp(block: str, **options: Any) -> ModuleRule:
    return ModuleRule(_CSP_ARGS, 1, _csp_family(block, **options), repeats=_CSP)


MODULES: dict[str, ModuleRule] = {
    "Conv": ModuleRule(_CONV_ARGS, 1, _conv, repeats=_COPIES),
    "RepConv": ModuleRule((*_CONV_ARGS, "deploy"), 1, _repconv, repeats=_COPIES),
    "Focus": ModuleRule(_CONV_ARGS, 1, _focus),
    "Stem": ModuleRule(_CONV_ARGS, 1, _stem),
    "DownC": ModuleRule(("c_out", "k"), 1, _downc, repeats=_IGNORED),
    "SPP": ModuleRule(("c_out", "k"), 1, _spp("spp", [5, 9, 13])),
    "SPPF": ModuleRule(("c_out", "k"), 1, _spp("sppf", 5)),
    "SPPCSPC": ModuleRule(
        ("c_out", "shortcut", "groups", "e", "k"),
        1,
        _spp("sppcspc", [5, 9, 13]),
        repeats=_IGNORED,
    ),
    "Bottleneck": ModuleRule(_CSP_ARGS, 1, _bottleneck("dark", 1), repeats=_COPIES),
    "Res": ModuleRule(_CSP_ARGS, 1, _bottleneck("res", 1), repeats=_COPIES),
    "ResX": ModuleRule(_CSP_ARGS, 1, _bottleneck("res", 32), repeats=_COPIES),
    "BottleneckCSP": _csp("csp", shortcut=True),
    "BottleneckCSPF": _csp("csp", shortcut=True, tail=False),
    "BottleneckCSP2": _csp("csp", shortcut=False, hidden_is_out=True, tail=False, bypass="entry"),
    "C3": _csp("c3", shortcut=True),
    "BottleneckCSPA": _csp("c3", shortcut=True),
    "BottleneckCSPB": _csp("csp_b", shortcut=False, hidden_is_out=True),
    "BottleneckCSPC": _csp("csp_c", shortcut=True),
    "ResCSPA": _csp("c3", shortcut=True, unit="res", expansion=0.5),
    "ResCSPB": _csp("csp_b", shortcut=True, unit="res", expansion=0.5, hidden_is_out=True),
    "ResCSPC": _csp("csp_c", shortcut=True, unit="res", expansion=0.5),
    "ResXCSPA": _csp("c3", shortcut=True, unit="res", groups=32),
    "ResXCSPB": _csp("csp_b", shortcut=True, unit="res", groups=32, hidden_is_out=True),
    "ResXCSPC": _csp("csp_c", shortcut=True, unit="res", groups=32),
    "Concat": ModuleRule(("dim",), 0, _join("concat")),
    "Shortcut": ModuleRule(("dim",), 0, _join("add")),
    "MP": ModuleRule(("k",), 0, _pool),
    "SP": ModuleRule(("k", "s"), 0, _pool),
    "ReOrg": ModuleRule((), 0, _reorg),
    "nn.Upsample": ModuleRule(("size", "scale", "mode"), 2, _upsample),
    "Detect": ModuleRule(("nc", "anchors"), 2, _detect("detect", False)),
    "IDetect": ModuleRule(("nc", "anchors"), 2, _detect("detect", True)),
    "IAuxDetect": ModuleRule(("nc", "anchors"), 2, _detect("aux_detect", True)),
}
