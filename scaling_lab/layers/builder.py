"""LayerBuilder: what block lowering functions call to emit layers, with shape checks.

Every op infers its output shape and checks its inputs (``Op.infer_shape``), so a wrong
channel count or a spatial mismatch is reported at the node that caused it, before any torch
code runs. The named helpers (``conv``, ``concat``, ...) only fill in an op's arguments; a
block that brings its own op calls ``emit`` with it.

Ports: a lowering function may name internal tensors of its node (``port``) that other nodes
read as ``from: node.port``. A port is an existing layer's output, or a recipe (an op on one,
e.g. a channel slice) that is emitted only when some node reads the port, so a port nobody
reads adds no layer and no work.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import replace
from typing import Any

from scaling_lab import ops
from scaling_lab.layers.layer_graph import Layer
from scaling_lab.limits import MAX_LAYERS
from scaling_lab.ops.base import Op, Port, Shape
from scaling_lab.spec.errors import SpecError
from scaling_lab.spec.settings import ModelSettings


class LayerBuilder:
    """Collects layers for one graph; ``begin``/``end`` bracket one block node."""

    def __init__(self, settings: ModelSettings) -> None:
        self.settings = settings
        self.layers: list[Layer] = []
        self._node = ""
        self._start = 0
        self._counts: Counter[str] = Counter()
        self._wanted: frozenset[str] = frozenset()
        self.declared_ports: dict[str, tuple[str, ...]] = {}  # node -> its port names
        self.read_ports: dict[str, Port] = {}  # "node.port" -> tensor, for ports read

    # -- node bookkeeping -------------------------------------------------------------
    def begin(self, node: str, read_ports: Collection[str] = ()) -> None:
        """Open a node; ``read_ports``: which of its ports other nodes read (emitted)."""
        self._node = node
        self._start = len(self.layers)
        self._counts = Counter()
        self._wanted = frozenset(read_ports)

    def end(self, out: Port) -> Port:
        """Close a node; a node that lowered to a single layer takes the node's name."""
        emitted = self.layers[self._start :]
        last = emitted[-1].name if emitted else None
        if last != out.name and any(p.name == last for p in self.read_ports.values()):
            raise self.fail("ports must be declared before the node's output layer")
        if len(emitted) == 1 and emitted[0].name == out.name:
            self.layers[-1] = replace(emitted[0], name=self._node)
            renamed = Port(self._node, out.shape)
            prefix = f"{self._node}."
            for key, port in self.read_ports.items():
                if key.startswith(prefix) and port.name == out.name:
                    self.read_ports[key] = renamed
            return renamed
        return out

    def port(self, name: str, x: Port, op: Op | None = None) -> None:
        """Declare port ``name`` of the current node: ``x`` itself, or ``op`` applied to ``x``
        (one input). The op is emitted, as layer ``node.<name>``, only if a node reads the
        port; declare ports before the node's output layer, which must stay its last."""
        if not name.isidentifier():
            raise self.fail(f"port names must be identifiers, got {name!r}")
        declared = self.declared_ports.get(self._node, ())
        if name in declared:
            raise self.fail(f"port '{name}' declared twice")
        self.declared_ports[self._node] = (*declared, name)
        if name not in self._wanted:
            return
        if op is not None:
            full = f"{self._node}.{name}"
            if any(layer.name == full for layer in self.layers[self._start :]):
                raise self.fail(f"port '{name}' has the name of a layer of the node")
            x = self.emit(op, [x], name)
        self.read_ports[f"{self._node}.{name}"] = x

    def chunk_port(self, name: str, x: Port, groups: int, index: int) -> None:
        """Port ``name``: channel slice ``index`` (0-based) of ``groups`` equal slices of x."""
        self.port(name, x, ops.Chunk(groups, index))

    def fail(self, message: str, field: str | None = None) -> SpecError:
        return SpecError(message, node=self._node, field=field)

    def emit(self, op: Op, inputs: Sequence[Port], name: str | None = None) -> Port:
        """Add a layer running ``op`` on ``inputs``; named ``node.<prefix>N`` unless ``name``."""
        try:
            shape: Shape = op.infer_shape(list(inputs))
        except SpecError as exc:
            raise self.fail(exc.reason, exc.field) from None
        if name is None:
            self._counts[op.prefix] += 1
            name = f"{op.prefix}{self._counts[op.prefix]}"
        full = f"{self._node}.{name}"
        if len(self.layers) >= MAX_LAYERS:
            raise self.fail(f"the model lowers to more than {MAX_LAYERS} layers (MAX_LAYERS)")
        self.layers.append(Layer(full, op, tuple(p.name for p in inputs), shape, self._node))
        return Port(full, shape)

    # -- named helpers ----------------------------------------------------------------
    def conv(
        self,
        x: Port,
        c_out: int,
        k: int = 1,
        s: int = 1,
        *,
        groups: int = 1,
        act: str | None = None,
        p: int | None = None,
        bn: bool = True,
        bias: bool = False,
        name: str | None = None,
    ) -> Port:
        """A conv; ``bn=False`` with ``act="identity"`` is a bare conv (CSP's split convs);
        ``bn=False, bias=True`` a plain conv with bias (prediction convs, attention gates)."""
        p = k // 2 if p is None else p
        act = act or self.settings.act
        return self.emit(ops.Conv(x.c, c_out, k, s, p, groups, act, bn=bn, bias=bias), [x], name)

    def repconv(
        self,
        x: Port,
        c_out: int,
        k: int = 3,
        s: int = 1,
        *,
        groups: int = 1,
        act: str | None = None,
        identity: bool | None = None,
        name: str | None = None,
    ) -> Port:
        """A RepConv; ``identity=None`` adds the identity branch wherever shapes allow."""
        op = ops.RepConv(x.c, c_out, k, s, groups, act or self.settings.act, bool(identity))
        if identity is None:
            op = replace(op, identity=op.can_identity)
        return self.emit(op, [x], name)

    def bn_act(self, x: Port, act: str | None = None, name: str | None = None) -> Port:
        """BatchNorm + activation on a feature map (after CSP's concat)."""
        return self.emit(ops.BatchNormAct(x.c, act or self.settings.act), [x], name)

    def maxpool(
        self, x: Port, k: int, s: int | None = None, p: int | None = None, name: str | None = None
    ) -> Port:
        s = k if s is None else s
        p = (k // 2 if s == 1 else 0) if p is None else p
        return self.emit(ops.MaxPool(k, s, p), [x], name)

    def upsample(
        self, x: Port, scale: int = 2, mode: str = "nearest", name: str | None = None
    ) -> Port:
        return self.emit(ops.Upsample(scale, mode), [x], name)

    def concat(self, xs: list[Port], name: str | None = None) -> Port:
        return self.emit(ops.Concat(), xs, name)

    def group_concat(self, xs: list[Port], groups: int, name: str | None = None) -> Port:
        return self.emit(ops.GroupConcat(groups), xs, name)

    def merge(self, x: Port, groups: int, name: str | None = None) -> Port:
        return self.emit(ops.Merge(groups), [x], name)

    def add(self, xs: list[Port], name: str | None = None) -> Port:
        return self.emit(ops.Add(), xs, name)

    def reorg(self, x: Port, name: str | None = None) -> Port:
        return self.emit(ops.Reorg(), [x], name)

    def chunk(self, x: Port, groups: int, index: int, name: str | None = None) -> Port:
        """Channel slice ``index`` (0-based) of ``groups`` equal slices."""
        return self.emit(ops.Chunk(groups, index), [x], name)

    def global_avg_pool(self, x: Port, name: str | None = None) -> Port:
        return self.emit(ops.GlobalAvgPool(), [x], name)

    def mul(self, x: Port, gate: Port, name: str | None = None) -> Port:
        """``x * gate``; a 1x1 gate is broadcast over x's height and width."""
        return self.emit(ops.Mul(), [x, gate], name)

    def outputs(self, levels: list[Port], name: str | None = None) -> Port:
        """A decoupled head's output: the level maps (training) or all cells flattened (eval)."""
        return self.emit(ops.Outputs(), levels, name)

    def detect(
        self,
        levels: list[Port],
        aux: list[Port] | None = None,
        *,
        implicit: bool = True,
        anchors: Any = None,
        name: str | None = None,
    ) -> Port:
        aux = aux or []
        op = ops.Detect(
            self.settings.nc,
            tuple(tuple(a) for a in (anchors or self.settings.anchors)),
            tuple(x.shape.stride for x in levels),
            tuple(x.c for x in levels),
            tuple(x.c for x in aux),
            implicit,
        )
        return self.emit(op, [*levels, *aux], name)
