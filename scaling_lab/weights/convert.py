"""Weights from the reference implementation: a checkpoint's tensors as a model's state dict.

``map_reference_weights(state, config, model)`` derives the mapping from two layer graphs,
never from a table per model:

1. our graph: the target model (a zoo name, a spec) in training form, with the checkpoint's
   class count;
2. their graph: the checkpoint's own config through our layer-list importer, whose layers
   correspond 1:1 to the reference's layer indices (``reference.py``);
3. ``align`` pairs every tensor of ours with the tensor of theirs it equals, from the heads
   back to the image (E-ELAN's grouped convs pair channel group by group, ``align.py``);
4. each parameter-holding layer of ours takes the tensors of the reference unit its partner
   came from, renamed by the op kind's naming rule; a grouped conv of g groups takes its g
   partners' tensors concatenated along the output channels (BatchNorm likewise).

Every reference tensor must land somewhere and every tensor of ours must be filled, with the
shape it has; otherwise the conversion is refused (``AlignmentError``).

``convert_weights(checkpoint, model, out)`` reads a reference checkpoint safely
(``unpickle.py``) and writes a scaling_lab checkpoint that ``lab eval --weights`` reads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

from scaling_lab.errors import UserError
from scaling_lab.graph.block_graph import BlockGraph, dump_spec
from scaling_lab.graph.lower import lower
from scaling_lab.layers.layer_graph import Layer, LayerGraph
from scaling_lab.models import ModelRef, ModelSource, get_block_graph, model_ref
from scaling_lab.nn import build_module
from scaling_lab.ops import Op
from scaling_lab.weights.align import Alignment, align
from scaling_lab.weights.errors import AlignmentError, ReferenceCheckpointError
from scaling_lab.weights.reference import (
    ANCHORS,
    OURS,
    Unit,
    check_modules,
    imported_graph,
    reference_units,
)
from scaling_lab.weights.unpickle import read_reference_checkpoint

if TYPE_CHECKING:
    from torch import nn

_MAX_CONFIG_BYTES = 4 << 20


@dataclass
class ConvertedWeights:
    """A reference model's weights under our names, for ``graph`` (the target model with the
    checkpoint's class count). ``state`` keeps the reference's dtypes; ``sources`` says
    which reference tensors each of ours was built from; ``notes`` what the user should know
    (anchors that differ from the spec's)."""

    state: dict[str, torch.Tensor]
    graph: BlockGraph
    layers: LayerGraph
    nc: int
    sources: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    origin: dict[str, Any] = field(default_factory=dict)  # checkpoint, entry, epoch

    def create_model(self, dtype: torch.dtype | None = None) -> nn.Module:
        """The target model with these weights (training mode; ``dtype``: cast first)."""
        model = build_module(self.layers)
        if dtype is not None:
            model = model.to(dtype)
        model.load_state_dict(self.state)
        return model


def _build(layer: Layer, meta: bool) -> Any:
    """The layer's torch form; on the meta device (nothing allocated) if ``meta``, unless the
    op cannot be built there: one that reads its own buffers while it is built (the head,
    which is small) is built for real."""
    if meta:
        try:
            with torch.device("meta"):
                return layer.op.build()
        except Exception:  # the meta device is only a saving; a real error shows below
            pass
    return layer.op.build()


def _our_tensors(layers: LayerGraph) -> dict[str, list[tuple[str, tuple[int, ...]]]]:
    """Per layer of ours: (key inside the layer's module, shape) of every tensor; the built
    model names them ``{layer}.{key}``."""
    from torch import nn

    per_layer: dict[str, list[tuple[str, tuple[int, ...]]]] = {}
    for layer in layers:
        form = _build(layer, meta=True)
        if isinstance(form, nn.Module):
            tensors = [(k, tuple(t.shape)) for k, t in form.state_dict().items()]
            if tensors:
                per_layer[layer.name] = tensors
    return per_layer


def _anchors(unit: Unit, state: Mapping[str, torch.Tensor], shape: tuple[int, ...]) -> Any:
    key = unit.prefix + "anchor_grid"
    grid = state.get(key)
    if grid is None or grid.numel() != torch.Size(shape).numel():
        raise AlignmentError(f"'{key}' is missing or does not hold {shape} anchors")
    return grid.reshape(shape), key


def _anchor_note(layer: Layer, anchors: torch.Tensor, name: str) -> str | None:
    """Where the checkpoint's anchors differ from those the op (the head) was given."""
    given = getattr(layer.op, "anchors", None)
    if given is None:
        return None
    spec = torch.tensor(given, dtype=torch.float64).reshape(anchors.shape)
    if torch.allclose(spec, anchors.to(torch.float64), atol=1e-3):
        return None
    rows = [[round(float(v), 2) for v in row.flatten()] for row in anchors]
    return f"the checkpoint's anchors differ from {name}'s spec; its anchors are used: {rows}"


def _partner_units(
    layer: Layer,
    alignment: Alignment,
    units: Mapping[str, Unit],
    describe: Callable[[str], str],
) -> list[Unit]:
    """The reference units our ``layer`` takes its tensors from, one per channel group in group
    order; refused unless the alignment gives it exactly one counterpart of one width, with
    every group paired to a unit that holds weights."""
    found = alignment.sources(layer.name)
    if len(found) != 1:
        why = "no counterpart" if not found else "counterparts of different widths"
        raise AlignmentError(
            f"our layer '{layer.name}' ({layer.kind}) has {why} in the checkpoint's model"
        )
    ((groups, partners),) = found.items()
    if sorted(partners) != list(range(groups)):
        missing = sorted(set(range(groups)) - set(partners))
        raise AlignmentError(f"channel groups {missing} of our '{layer.name}' have no counterpart")
    mine: list[Unit] = []
    for j in range(groups):
        unit = units.get(partners[j])
        if unit is None:
            raise AlignmentError(
                f"our '{layer.name}' holds weights, the checkpoint's {describe(partners[j])} none"
            )
        mine.append(unit)
    return mine


def _own_state(layer: Layer) -> dict[str, torch.Tensor]:
    """The freshly built layer's own tensors, for those the reference does not store."""
    return _build(layer, meta=False).state_dict()


def _gather_tensor(
    layer: Layer,
    rel: str,
    shape: tuple[int, ...],
    partners: list[Unit],
    state: Mapping[str, torch.Tensor],
    own: Callable[[], Mapping[str, torch.Tensor]],
    notes: list[str],
    model_name: str,
) -> tuple[torch.Tensor, list[str]]:
    """Our tensor ``{layer}.{rel}`` from its partner units (concatenated over channel groups)
    and the checkpoint keys it came from: ours where the rule keeps our own (``OURS``), the
    anchors (``ANCHORS``, noted in ``notes`` where they differ from the spec), else the
    renamed key; refused where a key is missing or the shape differs."""
    pieces, keys = [], []
    for unit in partners:
        theirs_key = unit.rule.reference_key(rel)
        if theirs_key == OURS:
            pieces.append(own()[rel])
            continue
        if theirs_key == ANCHORS:
            anchors, key = _anchors(unit, state, shape)
            note = _anchor_note(layer, anchors, model_name)
            if note and note not in notes:
                notes.append(note)
            pieces.append(anchors)
            keys.append(key)
            continue
        key = unit.prefix + theirs_key
        if key not in state:
            raise AlignmentError(
                f"the checkpoint has no '{key}' for our '{layer.name}.{rel}' "
                f"({_missing_hint(layer.op)})"
            )
        pieces.append(state[key])
        keys.append(key)
    whole = len(pieces) == 1 or pieces[0].dim() == 0  # a count: group 0's
    tensor = pieces[0] if whole else torch.cat(pieces, 0)
    if tuple(tensor.shape) != shape:
        raise AlignmentError(
            f"our '{layer.name}.{rel}' is {list(shape)}, the checkpoint's "
            f"{' + '.join(keys)} {list(tensor.shape)}"
        )
    return tensor, keys


def _missing_hint(op: Op) -> str:
    """Why a key can be missing: the wrong checkpoint, or an op that never said how the
    reference names its tensors (its default keeps our names)."""
    if type(op).reference_naming is Op.reference_naming:
        return (
            f"{type(op).__name__} declares no reference_naming(), so its tensors are looked "
            "up under our names; define it to rename them"
        )
    return "a fused or otherwise different checkpoint?"


def _check_all_used(
    state: Mapping[str, torch.Tensor],
    units: Mapping[str, Unit],
    used: set[str],
    model_name: str,
) -> None:
    """Refuse a checkpoint with tensors that neither landed in our model nor are ones its
    naming rules ignore: a different model, whose weights would be silently dropped."""
    used = used | {unit.prefix + key for unit in units.values() for key in unit.rule.ignored}
    unused = [key for key in state if key not in used]
    if unused:
        raise AlignmentError(
            f"{len(unused)} tensors of the checkpoint have no place in {model_name} "
            f"({', '.join(unused[:3])}{', ...' if len(unused) > 3 else ''})"
        )


def map_reference_weights(
    state: Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    model: ModelSource | Path | ModelRef,
    *,
    source: str = "<checkpoint>",
    modules: Mapping[str, tuple[str, dict[str, Any]]] | None = None,
) -> ConvertedWeights:
    """The reference state dict ``state`` (keys ``model.{index}.…``) of a model built from
    the layer-list ``config`` as the state dict of ``model`` (training form, the config's
    class count). ``modules`` (prefix -> class, attributes) lets the activations be checked."""
    ref = model_ref(model)
    if ref.form != "training":
        raise AlignmentError(
            f"weights convert into the training form; name the model without its "
            f"'-{ref.form}' suffix and fuse afterwards (reparameterize, lab eval --fused)"
        )
    nc = config.get("nc")
    graph = get_block_graph(ref, nc=nc if isinstance(nc, int) and nc > 0 else None)
    ours = lower(graph)
    theirs = imported_graph(config, ours.input_shape.h, source)
    if theirs.nc != graph.nc:
        raise AlignmentError(f"{theirs.nc} classes in the config vs {graph.nc}")
    alignment = align(ours, theirs.layers, theirs.describe)
    units, _ = reference_units(theirs, state)
    check_modules(units, modules or {})

    out: dict[str, torch.Tensor] = {}
    sources: dict[str, list[str]] = {}
    used: set[str] = set()
    notes: list[str] = []
    for name, tensors in _our_tensors(ours).items():
        layer = ours[name]
        partners = _partner_units(layer, alignment, units, theirs.describe)
        own = cache(partial(_own_state, layer))  # built once, only if a rule keeps ours
        for rel, shape in tensors:
            tensor, keys = _gather_tensor(
                layer, rel, shape, partners, state, own, notes, graph.name
            )
            out[f"{name}.{rel}"] = tensor
            sources[f"{name}.{rel}"] = keys
            used.update(keys)
    _check_all_used(state, units, used, graph.name)
    return ConvertedWeights(out, graph, ours, graph.nc, sources, notes)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A layer-list config file (for a checkpoint that holds only a state dict)."""
    path = Path(path)
    try:
        if not path.is_file() or path.stat().st_size > _MAX_CONFIG_BYTES:
            raise ReferenceCheckpointError(
                f"not a config file of at most {_MAX_CONFIG_BYTES >> 20} MB", source=str(path)
            )
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ReferenceCheckpointError(f"unreadable config ({exc})", source=str(path)) from None
    if not isinstance(data, dict):
        raise ReferenceCheckpointError("not a layer-list config", source=str(path))
    return data


def convert_weights(
    checkpoint: str | Path,
    model: ModelSource | Path | ModelRef,
    out: str | Path | None = None,
    *,
    ema: bool = False,
    config: str | Path | None = None,
) -> ConvertedWeights:
    """Read a reference checkpoint (its EMA weights when ``ema``) without running its code,
    map its weights onto ``model`` and, with ``out``, write a scaling_lab checkpoint
    (``lab eval --weights OUT``). ``config``: the layer-list config, for a checkpoint that
    holds a bare state dict (or to override the one it carries)."""
    weights = read_reference_checkpoint(checkpoint, ema=ema)
    cfg = read_config_file(config) if config is not None else weights.config
    if cfg is None:
        raise ReferenceCheckpointError(
            "holds a state dict without its model config; give the config it was trained "
            "from (--config cfg/training/NAME.yaml)",
            source=str(checkpoint),
        )
    converted = map_reference_weights(
        weights.state, cfg, model, source=str(checkpoint), modules=weights.modules
    )
    converted.origin = {
        "checkpoint": str(checkpoint),
        "entry": weights.entry,
        "epoch": weights.epoch,
    }
    if out is not None:
        write_checkpoint(converted, out)
    return converted


def write_checkpoint(converted: ConvertedWeights, out: str | Path) -> Path:
    """Write the converted weights (float32) as a scaling_lab checkpoint: the model's spec
    text and its state dict, no optimizer; ``lab eval --weights`` reads it."""
    from scaling_lab.train.checkpoint import FORMAT, save_atomic

    state = {
        key: (t.float() if t.is_floating_point() else t).contiguous().clone()
        for key, t in converted.state.items()
    }
    ckpt = {
        "format": FORMAT,
        "kind": "converted",
        "spec": dump_spec(converted.graph),
        "config": {},
        "hyp": {},
        "nc": converted.nc,
        "model": state,
        "ema": None,
        "epoch": None,
        "converted_from": dict(converted.origin),
    }
    try:
        return save_atomic(ckpt, out)
    except OSError as exc:
        raise UserError(f"cannot write ({exc.strerror or exc})", source=str(out)) from None
