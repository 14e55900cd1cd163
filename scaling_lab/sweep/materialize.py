"""A trial's model: the base BlockGraph with overrides and transforms applied.

Override paths (the keys of a variant's ``overrides`` and of a search space):

- ``NODE.FIELD``: a block field; ``NODE`` may be an ``fnmatch`` pattern (``elan*.depth``,
  ``*.act``) that sets every matching node having that field; ``NODE.from`` rewires the
  node's inputs (a node name, ``node.port``, or a list, as in spec text);
- ``nc``, ``img_size``, ``act``, ``repconv``: model-level settings (``repconv``: ``none``,
  ``all``, ``planned`` or a PATTERN -> placement mapping);
- ``scale.depth``, ``scale.width``, ``scale.mode``: arguments of ``transforms.scale``, applied
  after the field overrides (``scale.width`` alone means mode ``width``);
- ``train.FIELD`` and ``train.hyp.KEY``: training settings (``TrainConfig`` fields and
  hyperparameters), not the graph.

``Overrides`` holds them split by kind; every path is checked against the base graph before
any trial starts (``experiment.check_graphs_of``).
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Iterable, Mapping
from typing import Any

from scaling_lab.graph.block_graph import BlockGraph, BlockNode, rewire
from scaling_lab.graph.registry import cfg_fields, make_cfg
from scaling_lab.schema import FieldError
from scaling_lab.spec.errors import SpecError
from scaling_lab.spec.load import parse_inputs

SETTINGS = ("nc", "img_size", "act", "repconv")
INPUTS = "from"  # NODE.from: a node's inputs, not a block field
SCALE_KEYS = ("depth", "width", "mode")


@dataclasses.dataclass(frozen=True)
class Overrides:
    """A trial's changes to its base model and training, sorted by what they change.

    Read once from the paths where they are written (``from_paths``: a variant's
    ``overrides``, a search's sampled values) and laid over each other with ``over``.
    """

    settings: dict[str, Any] = dataclasses.field(default_factory=dict)  # SETTINGS
    fields: dict[str, Any] = dataclasses.field(default_factory=dict)  # NODE.FIELD -> value
    scale: dict[str, Any] = dataclasses.field(default_factory=dict)  # transforms.scale args
    train: dict[str, Any] = dataclasses.field(default_factory=dict)  # TrainConfig fields, hyp

    @classmethod
    def from_paths(cls, paths: Mapping[str, Any]) -> Overrides:
        """Override paths -> Overrides; an unknown path raises ``FieldError`` naming it."""
        out = cls()
        for path, value in paths.items():
            out = out.over(cls._one(str(path), value))
        return out

    @classmethod
    def _one(cls, path: str, value: Any) -> Overrides:
        head, _, rest = path.partition(".")
        if not rest:
            if head not in SETTINGS:
                raise FieldError(
                    path,
                    f"unknown override '{path}': a model setting ({', '.join(SETTINGS)}) or "
                    "NODE.FIELD, scale.*, train.*",
                )
            return cls(settings={head: value})
        if head == "scale":
            if rest not in SCALE_KEYS:
                raise FieldError(
                    path, f"unknown scale argument '{rest}' (known: {', '.join(SCALE_KEYS)})"
                )
            return cls(scale={rest: value})
        if head == "train":
            key, _, hyp_key = rest.partition(".")
            return cls(
                train={"hyp": {hyp_key: value}} if key == "hyp" and hyp_key else {rest: value}
            )
        return cls(fields={path: value})

    def over(self, top: Overrides) -> Overrides:
        """These overrides with ``top``'s laid over them (``top`` wins)."""
        return Overrides(
            settings={**self.settings, **top.settings},
            fields={**self.fields, **top.fields},
            scale={**self.scale, **top.scale},
            train=merge_train(self.train, top.train),
        )

    def paths(self) -> dict[str, Any]:
        """The flat path form (what a row records), ``from_paths``'s inverse."""
        train = {f"train.{k}": v for k, v in self.train.items() if k != "hyp"}
        hyp = {f"train.hyp.{k}": v for k, v in self.train.get("hyp", {}).items()}
        scale = {f"scale.{k}": v for k, v in self.scale.items()}
        return {**self.settings, **self.fields, **scale, **train, **hyp}


def check_paths(paths: Iterable[str], where: str) -> None:
    """Refuse an unknown kind of override path (``FieldError`` at ``where.PATH``); whether
    a NODE.FIELD path names a node is checked against the graph (``matching_nodes``)."""
    paths = list(paths)
    try:
        Overrides.from_paths(dict.fromkeys(paths))
    except FieldError as exc:
        raise FieldError(f"{where}.{exc.field}", str(exc)) from None
    if not paths:
        raise FieldError(where, "needs at least one parameter")


def merge_train(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Training settings with ``extra`` laid over ``base`` (``hyp`` merged key by key; a hyp
    key ``extra`` sets to null is dropped, so each row's own recipe value applies again: a
    paper budget undoes a CPU budget's change to a key the head families set differently)."""
    merged = {**base, **extra}
    if "hyp" in base or "hyp" in extra:
        hyp = {**base.get("hyp", {}), **extra.get("hyp", {})}
        merged["hyp"] = {key: value for key, value in hyp.items() if value is not None}
    return merged


def matching_nodes(graph: BlockGraph, path: str, *, source: str) -> list[tuple[BlockNode, str]]:
    """The (node, field) pairs a NODE.FIELD path names; an error if it names none."""
    pattern, _, field = path.rpartition(".")
    is_glob = any(ch in pattern for ch in "*?[")
    names = fnmatch.filter(graph.names, pattern) if is_glob else [pattern]
    if not is_glob and pattern not in graph.names:
        raise SpecError(
            f"unknown node path '{path}': no node '{pattern}' in {graph.name} "
            f"(nodes: {', '.join(graph.names)})",
            source=source,
            field=path,
        )
    found = []
    for name in names:
        node = graph.node(name)
        if field == INPUTS or field in {f.name for f in dataclasses.fields(node.cfg)}:
            found.append((node, field))
        elif not is_glob:
            known = ", ".join(f.name for f in dataclasses.fields(node.cfg))
            raise SpecError(
                f"unknown node path '{path}': block '{node.type}' has no field '{field}' "
                f"(fields: {known})",
                source=source,
                field=path,
            )
    if not found:
        raise SpecError(
            f"unknown node path '{path}': no node matching '{pattern}' has a field '{field}'",
            source=source,
            field=path,
        )
    return found


def set_fields(graph: BlockGraph, fields: dict[str, Any], *, source: str) -> BlockGraph:
    """A copy of ``graph`` with the NODE.FIELD values set (each checked like spec text)."""
    if not fields:
        return graph
    changes: dict[str, dict[str, Any]] = {}
    inputs: dict[str, Any] = {}
    for path, value in fields.items():
        for node, field in matching_nodes(graph, path, source=source):
            if field == INPUTS:
                inputs[node.name] = value
            else:
                changes.setdefault(node.name, {})[field] = value
    graph = _rewired(graph, inputs, source)
    nodes = []
    for node in graph.nodes:
        if node.name not in changes:
            nodes.append(node)
            continue
        try:
            cfg = make_cfg(node.block, {**cfg_fields(node.cfg), **changes[node.name]})
        except SpecError as exc:
            raise SpecError(
                f"override: {exc.reason}", source=source, node=node.name, field=exc.field
            ) from None
        nodes.append(dataclasses.replace(node, cfg=cfg))
    return graph.with_nodes(nodes)


def _rewired(graph: BlockGraph, inputs: dict[str, Any], source: str) -> BlockGraph:
    """``graph`` with the NODE.from overrides applied (values as spec text writes them)."""
    if not inputs:
        return graph
    try:
        parsed = {
            name: parse_inputs([] if raw is None else raw, name, source, None)
            for name, raw in inputs.items()
        }
        return rewire(graph, parsed)
    except SpecError as exc:
        raise SpecError(
            f"override: {exc.reason}", source=source, node=exc.node, field=exc.field
        ) from None


def materialize(
    base: BlockGraph,
    changes: Overrides | None = None,
    *,
    name: str | None = None,
    source: str = "<experiment>",
) -> BlockGraph:
    """The trial's BlockGraph: settings, then field overrides, then ``scale`` (if any)."""
    from scaling_lab.layers.plan_repconv import parse_policy
    from scaling_lab.transforms.scale import scale

    changes = changes or Overrides()
    graph = base
    settings = dict(changes.settings)
    if isinstance(settings.get("repconv"), str):
        settings["repconv"] = parse_policy(settings["repconv"])
    for key in ("nc", "img_size"):
        value = settings.get(key)
        if key in settings and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise SpecError(f"must be a positive integer, got {value!r}", source=source, field=key)
    if settings:
        graph = graph.with_settings(**settings)
    graph = set_fields(graph, changes.fields, source=source)
    args = dict(changes.scale)
    if "width" in args and "depth" not in args and "mode" not in args:
        args["mode"] = "width"  # a width multiplier alone: plain width scaling
    if args:
        try:
            graph = scale(graph, **args)
        except TypeError as exc:
            raise SpecError(f"scale: {exc}", source=source, field="scale") from None
    return graph.with_settings(name=name) if name else graph
