"""Import YOLO layer-list configs (the YOLOv5 / YOLOv7 model YAML) as our spec.

A layer-list config has ``nc``, ``depth_multiple``, ``width_multiple``, ``anchors`` and
``backbone`` / ``head`` lists of ``[from, number, module, args]``. Importing applies the
multipliers the way the public implementations' ``parse_model`` does:

- repeats: ``n -> max(round(n * depth_multiple), 1)`` for ``n > 1`` (Python's round);
- channels: ``c -> ceil(c * width_multiple / 8) * 8`` for every module whose first argument is
  its output width, unless that width is the head's output width ``anchors * (nc + 5)``.

CSP modules take the repeats as their depth; other repeated modules become that many nodes in
sequence. Each layer becomes one or more named nodes (``c3_p4``: a C3 block whose output is
at stride 2**4; a second one is ``c3_p4_2``), and the spec text names the layer each node
came from. The module table and the converters live in ``layer_modules.py``. Nothing here
imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from scaling_lab.errors import UserError
from scaling_lab.limits import MAX_BLOCK_DEPTH
from scaling_lab.spec.errors import SpecError
from scaling_lab.spec.layer_modules import (
    ACTIVATION_BY_TEXT,
    DEFAULT_ACT,
    IMAGE,
    MODULES,
    Conversion,
    LayerListEntry,
    Node,
    layer_error,
    make_divisible,
    module_args,
)
from scaling_lab.spec.load import ModelSpec, NodeSpec
from scaling_lab.spec.yaml_lines import check_yaml_size, read_text_file

_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when PyYAML has it

__all__ = [
    "MODULES",
    "ImportedSpec",
    "import_layer_list",
    "is_layer_list",
    "is_layer_list_file",
    "load_layer_list",
    "make_divisible",
    "scale_repeats",
]


def scale_repeats(n: int, depth_multiple: float) -> int:
    """``n`` repeats after the depth multiple: rounded (Python's round), at least 1."""
    return max(round(n * depth_multiple), 1) if n > 1 else n


def is_layer_list(data: Any) -> bool:
    """Is this parsed YAML a layer-list config (rather than one of our specs)?"""
    return isinstance(data, dict) and "backbone" in data and "head" in data


def is_layer_list_file(path: str | Path) -> bool:
    """Does the file at ``path`` look like a layer-list config? False when unreadable."""
    try:
        text = read_text_file(path, "config file")
        check_yaml_size(text, str(path))
        data = yaml.load(text, Loader=_SAFE_LOADER)
    except (UserError, yaml.YAMLError):
        return False
    return is_layer_list(data)


# ----------------------------------------------------------------------------- reading


def _layer_lines(text: str) -> dict[str, list[int]]:
    """Line number of every backbone / head entry (for errors that point at the config)."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return {}
    lines: dict[str, list[int]] = {}
    if isinstance(root, yaml.MappingNode):
        for key, value in root.value:
            if key.value in ("backbone", "head") and isinstance(value, yaml.SequenceNode):
                lines[key.value] = [item.start_mark.line + 1 for item in value.value]
    return lines


def _read(text: str, source: str) -> dict[str, Any]:
    check_yaml_size(text, source)  # size, nesting and aliases bounded before any walk
    try:
        data = yaml.load(text, Loader=_SAFE_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(
            f"malformed YAML: {problem}", source=source, line=mark.line + 1 if mark else None
        ) from None
    if not is_layer_list(data):
        raise SpecError("a layer-list config needs 'backbone' and 'head' lists", source=source)
    return data


def _setting(
    data: dict, key: str, default: Any, kind: type[float] | tuple[type[float], ...], source: str
) -> Any:
    value = data.get(key, default)
    ok = isinstance(value, kind) and not isinstance(value, bool) and 0 < value < 1e6
    if not ok:
        raise SpecError(
            f"must be a positive number below 1e6, got {value!r}", source=source, field=key
        )
    return value


def _check_anchors(anchors: Any, source: str) -> None:
    if isinstance(anchors, int) and not isinstance(anchors, bool) and anchors > 0:
        return
    ok = (
        isinstance(anchors, list)
        and anchors
        and all(
            isinstance(level, list)
            and level
            and len(level) % 2 == 0
            and all(isinstance(v, (int, float)) and v > 0 for v in level)
            and len(level) == len(anchors[0])
            for level in anchors
        )
    )
    if not ok:
        raise SpecError(
            "must be a list of levels [w, h, w, h, ...] with equal counts, or the "
            "number of anchors per level",
            source=source,
            field="anchors",
        )


def _normalize(value: Any) -> Any:
    """YAML spells Python's None as the string 'None'; the reference evals it."""
    if value == "None":
        return None
    if isinstance(value, list):
        return [_normalize(v) for v in value]
    return value


def _layers(data: dict, text: str, depth: float, source: str) -> list[LayerListEntry]:
    lines = _layer_lines(text)
    entries = []
    for section in ("backbone", "head"):
        items = data[section]
        if not isinstance(items, list):
            raise SpecError(
                "must be a list of [from, number, module, args]", source=source, field=section
            )
        section_lines = lines.get(section, [])
        for j, item in enumerate(items):
            entries.append((item, section_lines[j] if j < len(section_lines) else None))
    layers = []
    for index, (item, line) in enumerate(entries):
        where = f"layer {index}"
        if not (isinstance(item, list) and len(item) == 4):
            raise SpecError(
                f"{where}: expected [from, number, module, args], got {item!r}",
                source=source,
                line=line,
            )
        raw_from, number, module, args = item
        module = str(module)
        if not isinstance(number, int) or isinstance(number, bool) or number < 1:
            raise SpecError(
                f"{where} ({module}): number must be a positive integer, got {number!r}",
                source=source,
                line=line,
            )
        if number > MAX_BLOCK_DEPTH or scale_repeats(number, depth) > MAX_BLOCK_DEPTH:
            raise SpecError(
                f"{where} ({module}): {number} repeats x depth_multiple {depth:g} is more than "
                f"{MAX_BLOCK_DEPTH} (MAX_BLOCK_DEPTH)",
                source=source,
                line=line,
            )
        if not isinstance(args, list):
            raise SpecError(
                f"{where} ({module}): args must be a list, got {args!r}", source=source, line=line
            )
        sources = _sources(raw_from, index, module, source, line)
        layers.append(
            LayerListEntry(
                index,
                sources,
                scale_repeats(number, depth),
                module,
                tuple(_normalize(a) for a in args),
                line,
                isinstance(raw_from, list),
            )
        )
    if not layers:
        raise SpecError("the config has no layers", source=source, field="backbone")
    return layers


def _sources(raw: Any, index: int, module: str, source: str, line: int | None) -> tuple[int, ...]:
    items = raw if isinstance(raw, list) else [raw]
    resolved = []
    for f in items:
        if not isinstance(f, int) or isinstance(f, bool):
            raise SpecError(
                f"layer {index} ({module}): from index must be an integer, got {f!r}",
                source=source,
                line=line,
            )
        absolute = index + f if f < 0 else f
        if f == -1 and index == 0:
            absolute = -1  # the image
        elif not 0 <= absolute < index:
            raise SpecError(
                f"layer {index} ({module}): from index {f} does not name an earlier layer "
                f"(valid: -{index} to {index - 1}"
                + (", or -1 for the image" if index == 0 else "")
                + ")",
                source=source,
                line=line,
            )
        resolved.append(absolute)
    if not resolved:
        raise SpecError(f"layer {index} ({module}): from is empty", source=source, line=line)
    return tuple(resolved)


# ----------------------------------------------------------------------------- conversion


@dataclass(frozen=True)
class ImportedSpec:
    """An imported config: the spec (nodes carry the config's line numbers) and its text."""

    spec: ModelSpec
    text: str


def import_layer_list(text: str, source: str = "<config>", name: str | None = None) -> ImportedSpec:
    """Convert layer-list YAML text; ``source`` names the file in errors and the header."""
    data = _read(text, source)
    nc = _setting(data, "nc", 80, int, source)
    depth = float(_setting(data, "depth_multiple", 1.0, (int, float), source))
    width = float(_setting(data, "width_multiple", 1.0, (int, float), source))
    channels = _setting(data, "ch", 3, int, source)
    anchors = data.get("anchors", 3)
    _check_anchors(anchors, source)
    act = DEFAULT_ACT
    if "activation" in data:  # later YOLOv5 configs set Conv's default activation
        named = ACTIVATION_BY_TEXT.get(str(data["activation"]).replace(" ", ""))
        if named is None:
            raise SpecError(
                f"unsupported activation {data['activation']!r}", source=source, field="activation"
            )
        act = named
    model = Conversion(nc, anchors, depth, width, channels, source)
    for layer in _layers(data, text, depth, source):
        rule = MODULES.get(layer.module)
        if rule is None:
            raise layer_error(
                layer, f"unknown module '{layer.module}' (supported: {', '.join(MODULES)})", source
            )
        if rule.repeats == "one" and layer.number != 1:
            raise layer_error(
                layer, f"number must be 1 for this module, got {layer.number}", source
            )
        out, c_out, stride = rule.convert(model, layer, module_args(rule, layer, source))
        model.outputs.append(out)
        model.widths.append(c_out)
        model.strides.append(stride)
    head = model.nodes[-1]
    if head.type not in ("detect", "aux_detect"):
        raise layer_error(
            head.layer, "the last layer must be Detect, IDetect or IAuxDetect", source
        )
    name = name or Path(source).stem
    img_size = 1280 if max(model.strides) >= 64 else 640
    levels = len(head.inputs) // (2 if head.type == "aux_detect" else 1)
    anchor_rows = _anchor_rows(anchors, levels)
    description = (
        f"imported from {Path(source).name} (YOLO layer-list format, depth_multiple "
        f"{depth:g}, width_multiple {width:g})"
    )
    spec = ModelSpec(
        name=name,
        nodes=tuple(_node_spec(node, model) for node in model.nodes),
        nc=nc,
        img_size=img_size,
        channels=channels,
        act=act,
        anchors=anchor_rows,
        description=description,
        source=source,
    )
    return ImportedSpec(spec, _render(spec, model, source, depth, width))


def load_layer_list(path: str | Path, name: str | None = None) -> ImportedSpec:
    """Read and convert a layer-list config file."""
    return import_layer_list(read_text_file(path, "config file"), source=str(path), name=name)


def _anchor_rows(anchors: Any, levels: int) -> tuple[tuple[float, ...], ...]:
    if isinstance(anchors, int):  # only a count: placeholders (counts do not depend on them)
        return tuple(tuple([1.0] * (2 * anchors)) for _ in range(levels))
    return tuple(tuple(float(v) for v in level) for level in anchors)


def _previous(model: Conversion, node: Node) -> str:
    index = model.nodes.index(node)
    return IMAGE if index == 0 else model.nodes[index - 1].name


def _node_spec(node: Node, model: Conversion) -> NodeSpec:
    chained = node.inputs == (_previous(model, node),)
    return NodeSpec(
        node.name, node.type, None if chained else node.inputs, dict(node.fields), node.layer.line
    )


# ----------------------------------------------------------------------------- spec text


def _flow(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return str(value)


def _render(spec: ModelSpec, model: Conversion, source: str, depth: float, width: float) -> str:
    lines = [
        f"# Imported by `lab import` from {Path(source).name} (YOLO layer-list format).",
        f"# depth_multiple {depth:g} and width_multiple {width:g} are applied: the depths and "
        "channels below",
        "# are final. Each node's comment gives the config layer it came from.",
        f"name: {spec.name}",
        f"description: {spec.description}",
        f"nc: {spec.nc}",
        f"img_size: {spec.img_size}",
        f"channels: {spec.channels}",
        f"act: {spec.act}",
        "anchors:",
        *(f"  - {_flow(list(level))}" for level in spec.anchors),
        "",
        "nodes:",
    ]
    entries = []
    for node_spec, node in zip(spec.nodes, model.nodes):
        body: dict[str, Any] = {"type": node_spec.type}
        if node_spec.inputs is not None:
            body["from"] = (
                node_spec.inputs[0] if len(node_spec.inputs) == 1 else list(node_spec.inputs)
            )
        body.update(node_spec.fields)
        text = ", ".join(f"{k}: {_flow(v)}" for k, v in body.items())
        layer = node.layer
        args = repr(list(layer.args))
        entries.append(
            (
                f"  {node_spec.name}: {{{text}}}",
                f"# {layer.index}: {layer.module} "
                f"{args}" + (f" x{layer.number}" if layer.number > 1 else ""),
            )
        )
    pad = max(len(e[0]) for e in entries) + 2
    lines += [f"{body.ljust(pad)}{comment}" for body, comment in entries]
    return "\n".join(lines) + "\n"
