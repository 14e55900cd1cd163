"""The reference's side of a conversion: its config as our graph, and where its tensors live.

- ``imported_graph``: the checkpoint's layer-list config (the ``yaml`` its ``Model`` keeps)
  through our importer, lowered; each node knows the reference layer index it came from.
- ``reference_units``: the parameter-holding layers of that graph, each with the prefix of its
  tensors in the reference's state dict (``model.{index}.`` plus, for a layer that holds
  several, like SPPCSPC's ``cv1`` ... ``cv7``, the sub-module's name, in registration order)
  and the naming rule of its kind of op.

The naming rules are per op kind (how the reference names a conv, a RepConv, a head), never
per model, and each op declares its own (``Op.reference_naming``): only the ops the
checkpoint's config lowers to are asked, so an op a user defines converts without an edit here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from scaling_lab.layers.layer_graph import Layer, LayerGraph
from scaling_lab.ops import REFERENCE_ANCHORS, REFERENCE_OWN, Op, ReferenceNaming
from scaling_lab.spec.activations import ACTIVATIONS
from scaling_lab.spec.errors import SpecError
from scaling_lab.spec.layer_list import import_layer_list
from scaling_lab.weights.errors import AlignmentError, ReferenceCheckpointError

OURS = REFERENCE_OWN  # a tensor the reference does not store: our module's own value
ANCHORS = REFERENCE_ANCHORS  # the head's anchors, from the reference's pixel anchor_grid


def _flow(value: Any, what: str, source: str) -> str:
    try:
        text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30).strip()
    except yaml.YAMLError:
        raise ReferenceCheckpointError(
            f"its model config holds values that are not plain data ({what})", source=source
        ) from None
    return text.removesuffix("...").strip()


def config_text(config: Mapping[str, Any], source: str) -> tuple[str, dict[int, int]]:
    """The config as layer-list YAML, one line per layer; also line number -> layer index."""
    lines = []
    for key, value in config.items():
        if key not in ("backbone", "head"):
            lines.append(f"{_flow(key, 'a key', source)}: {_flow(value, str(key), source)}")
    line_of: dict[int, int] = {}
    index = 0
    for section in ("backbone", "head"):
        entries = config.get(section)
        if not isinstance(entries, list):
            raise ReferenceCheckpointError(
                f"its model config has no '{section}' list", source=source
            )
        lines.append(f"{section}:")
        for entry in entries:
            lines.append(f"  - {_flow(entry, f'layer {index}', source)}")
            line_of[len(lines)] = index
            index += 1
    return "\n".join(lines) + "\n", line_of


@dataclass(frozen=True)
class ImportedGraph:
    """The checkpoint's model as our LayerGraph, with each layer's reference layer index."""

    layers: LayerGraph
    index_of_node: dict[str, int]
    modules: list[str]  # the config's module name of each reference layer
    nc: int

    def index_of(self, layer: str) -> int:
        return self.index_of_node[self.layers[layer].node]

    def describe(self, layer: str) -> str:
        try:
            i = self.index_of(layer)
        except KeyError:
            return f"'{layer}'"
        return f"layer {i} ({self.modules[i]})"


def imported_graph(config: Mapping[str, Any], img_size: int, source: str) -> ImportedGraph:
    """Import the checkpoint's config with our layer-list importer and lower it."""
    from scaling_lab.models import get_layer_graph

    text, line_of = config_text(config, source)
    where = f"{source} (its model config)"
    try:
        spec = import_layer_list(text, source=where, name="checkpoint").spec
        layers = get_layer_graph(spec, img_size=img_size)
    except SpecError as exc:
        raise ReferenceCheckpointError(exc.reason, source=where) from None
    index_of_node = {}
    for node in spec.nodes:
        if node.line not in line_of:
            raise AlignmentError(f"imported node '{node.name}' names no layer of the config")
        index_of_node[node.name] = line_of[node.line]
    entries = [*config["backbone"], *config["head"]]
    modules = [str(e[2]) if isinstance(e, list) and len(e) > 2 else "?" for e in entries]
    return ImportedGraph(layers, index_of_node, modules, spec.nc)


@dataclass(frozen=True)
class Unit:
    """One parameter-holding layer of theirs and where its tensors are in the reference."""

    layer: Layer
    prefix: str  # "model.12." or "model.51.cv3."
    rule: ReferenceNaming


_LAYER_KEY = re.compile(r"model\.(\d+)\.(.+)")


def _discover(
    keys: list[str], index: int, known: list[ReferenceNaming]
) -> list[tuple[str, ReferenceNaming]]:
    """(unit prefix inside the layer, naming) for the units of one reference layer, in order,
    found by the markers of the ``known`` namings (those of the config's ops)."""
    for naming in known:
        if naming.whole_layer and naming.marker in keys:
            return [("", naming)]
    found: list[tuple[str, ReferenceNaming]] = []
    for key in keys:
        for naming in known:
            for marker in naming.fused_markers:
                if key.endswith(marker):
                    raise AlignmentError(
                        f"reference layer {index} holds a fused {naming.kind} ('{key}'): "
                        "convert the training checkpoint (before re-parameterization)"
                    )
        for naming in known:
            if naming.whole_layer or naming.marker is None or not key.endswith(naming.marker):
                continue
            prefix = key[: -len(naming.marker)]
            if prefix == "" or prefix.endswith("."):
                found.append((prefix, naming))
    return found


def _markerless_unit(mine: list[Layer], keys: list[str]) -> list[tuple[str, ReferenceNaming]]:
    """A layer whose one op with weights has a whole-layer naming without a marker: that op's
    unit is the layer, when the checkpoint holds anything there."""
    if len(mine) != 1 or not keys:
        return []
    naming = mine[0].op.reference_naming()
    return [("", naming)] if naming.whole_layer and naming.marker is None else []


def _hint(mine: list[Layer]) -> str:
    """What to implement where an op's default naming cannot place its tensors."""
    loose = sorted(
        {type(layer.op).__name__ for layer in mine if layer.op.reference_naming().marker is None}
    )
    if not loose:
        return ""
    return (
        f"; {', '.join(loose)} found no unit of its own: an op that shares its reference layer "
        "needs a reference_naming() with a marker"
    )


def reference_units(
    graph: ImportedGraph, state: Mapping[str, Any]
) -> tuple[dict[str, Unit], dict[int, list[str]]]:
    """Each parameter-holding layer of the imported graph -> its unit in the reference
    state dict; also the reference keys of every layer (to find ones nothing used)."""
    by_layer: dict[int, list[str]] = {}
    for key in state:
        match = _LAYER_KEY.fullmatch(key)
        if match is None:
            raise AlignmentError(
                f"'{key}' is not a tensor of a reference layer (expected 'model.<index>.…')"
            )
        by_layer.setdefault(int(match.group(1)), []).append(match.group(2))
    known: dict[type[Op], ReferenceNaming] = {}
    ours_by_index: dict[int, list[Layer]] = {}
    for layer in graph.layers:
        known.setdefault(type(layer.op), layer.op.reference_naming())
        counted = layer.op.count(graph.layers.input_shapes(layer), layer.shape)
        if counted.params == 0:
            continue
        ours_by_index.setdefault(graph.index_of(layer.name), []).append(layer)
    namings = list(known.values())
    units: dict[str, Unit] = {}
    for index in sorted(set(ours_by_index) | set(by_layer)):
        mine = ours_by_index.get(index, [])
        keys = by_layer.get(index, [])
        found = _discover(keys, index, namings) or _markerless_unit(mine, keys)
        module = graph.modules[index] if index < len(graph.modules) else "?"
        kinds_mine = [layer.op.reference_naming().kind for layer in mine]
        kinds_found = [naming.kind for _, naming in found]
        if kinds_mine != kinds_found:
            holds = ", ".join(kinds_found) or (
                f"tensors no op of its config names ('{keys[0]}'...)" if keys else "no weights"
            )
            raise AlignmentError(
                f"reference layer {index} ({module}) holds {holds} in the checkpoint, but its "
                f"config builds {', '.join(kinds_mine) or 'no weights'} (a config that does not "
                f"fit the weights?){_hint(mine)}"
            )
        for layer, (prefix, naming) in zip(mine, found):
            units[layer.name] = Unit(layer, f"model.{index}.{prefix}", naming)
    return units, by_layer


_ACT_BY_CLASS = {cls: name for name, (cls, _) in ACTIVATIONS.items()}


def check_modules(
    units: Mapping[str, Unit], modules: Mapping[str, tuple[str, dict[str, Any]]]
) -> None:
    """Where the checkpoint pickled its module tree, each conv's activation must be the one
    our op applies (the config alone decides ours) and each BatchNorm must use our epsilon."""
    from scaling_lab.ops.modules import BN_EPS

    for prefix, (cls, attrs) in modules.items():
        eps = attrs.get("eps")
        if cls.endswith("BatchNorm2d") and isinstance(eps, float) and abs(eps - BN_EPS) > 1e-12:
            raise AlignmentError(
                f"'{prefix}' normalizes with eps {eps:g}; our models use {BN_EPS:g}"
            )
    for unit in units.values():
        op, act = unit.layer.op, unit.rule.activation
        if not modules or act is None:
            continue
        found = modules.get(unit.prefix + act)
        if found is None:
            continue
        cls, attrs = found
        name = _ACT_BY_CLASS.get(cls.rsplit(".", 1)[-1])
        slope = attrs.get("negative_slope")
        if name == "leaky_relu" and slope != ACTIVATIONS["leaky_relu"][1]["negative_slope"]:
            name = f"leaky_relu({slope})"
        expected = getattr(op, "act", None)
        if name != expected:
            raise AlignmentError(
                f"'{unit.prefix}{act}' is {cls} in the checkpoint, but its config gives {expected}"
            )
