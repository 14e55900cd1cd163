"""LayerBuilder: what block lowering functions call to emit layers, with shape checks.

Every op infers its output shape and checks its inputs, so a wrong channel count or a
spatial mismatch is reported at the node that caused it, before any torch code runs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

from scaling_lab.layers import layer_graph as lg
from scaling_lab.spec.errors import SpecError

ACTIVATIONS = (
    "silu",
    "leaky_relu",
    "relu",
    "hardswish",
    "mish",
    "sigmoid",
    "hardsigmoid",
    "identity",
)


@dataclass(frozen=True)
class Port:
    """A layer output that a block can consume: the layer's name and its shape."""

    name: str
    shape: lg.Shape

    @property
    def c(self) -> int:
        return self.shape.c


@dataclass(frozen=True)
class ModelSettings:
    """Model-level values a block may need (default activation, classes, anchors)."""

    nc: int
    act: str
    anchors: tuple[tuple[float, ...], ...]


def _out_size(size: int, k: int, s: int, p: int) -> int:
    return (size + 2 * p - k) // s + 1


class LayerBuilder:
    """Collects layers for one graph; ``begin``/``end`` bracket one block node."""

    def __init__(self, settings: ModelSettings) -> None:
        self.settings = settings
        self.layers: list[lg.Layer] = []
        self._node = ""
        self._start = 0
        self._counts: Counter[str] = Counter()

    # -- node bookkeeping -------------------------------------------------------------
    def begin(self, node: str) -> None:
        self._node = node
        self._start = len(self.layers)
        self._counts = Counter()

    def end(self, out: Port) -> Port:
        """Close a node; a node that lowered to a single layer takes the node's name."""
        emitted = self.layers[self._start :]
        if len(emitted) == 1 and emitted[0].name == out.name:
            self.layers[-1] = replace(emitted[0], name=self._node)
            return Port(self._node, out.shape)
        return out

    def fail(self, message: str, field: str | None = None) -> SpecError:
        return SpecError(message, node=self._node, field=field)

    def _emit(
        self, prefix: str, op: lg.Op, inputs: list[Port], shape: lg.Shape, name: str | None
    ) -> Port:
        if name is None:
            self._counts[prefix] += 1
            name = f"{prefix}{self._counts[prefix]}"
        full = f"{self._node}.{name}"
        self.layers.append(lg.Layer(full, op, tuple(p.name for p in inputs), shape, self._node))
        return Port(full, shape)

    def _act(self, act: str | None) -> str:
        act = act or self.settings.act
        if act not in ACTIVATIONS:
            raise self.fail(f"unknown activation '{act}' (known: {', '.join(ACTIVATIONS)})", "act")
        return act

    def _spatial(self, x: Port, k: int, s: int, p: int, c_out: int) -> lg.Shape:
        h, w = _out_size(x.shape.h, k, s, p), _out_size(x.shape.w, k, s, p)
        if h < 1 or w < 1:
            raise self.fail(f"input {x.shape.h}x{x.shape.w} is too small for kernel {k}")
        return lg.Shape(c_out, h, w, x.shape.stride * s)

    # -- ops ---------------------------------------------------------------------------
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
        if c_out < 1:
            raise self.fail(f"conv output channels must be >= 1, got {c_out}", "c")
        if x.c % groups or c_out % groups:
            raise self.fail(
                f"groups={groups} must divide input channels {x.c} and output channels {c_out}",
                "groups",
            )
        p = k // 2 if p is None else p
        op = lg.Conv(x.c, c_out, k, s, p, groups, self._act(act), bn=bn, bias=bias)
        return self._emit("cv", op, [x], self._spatial(x, k, s, p, c_out), name)

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
        if k % 2 == 0 or k < 3:
            raise self.fail(f"repconv kernel must be odd and >= 3, got {k}", "k")
        can_identity = x.c == c_out and s == 1
        if identity and not can_identity:
            raise self.fail(
                f"identity branch needs c_in == c_out and stride 1 "
                f"(got {x.c} -> {c_out}, stride {s})",
                "identity",
            )
        op = lg.RepConv(
            x.c, c_out, k, s, groups, self._act(act), can_identity if identity is None else identity
        )
        return self._emit("rep", op, [x], self._spatial(x, k, s, k // 2, c_out), name)

    def bn_act(self, x: Port, act: str | None = None, name: str | None = None) -> Port:
        """BatchNorm + activation on a feature map (after CSP's concat)."""
        return self._emit("bn", lg.BatchNormAct(x.c, self._act(act)), [x], x.shape, name)

    def maxpool(
        self, x: Port, k: int, s: int | None = None, p: int | None = None, name: str | None = None
    ) -> Port:
        s = k if s is None else s
        p = (k // 2 if s == 1 else 0) if p is None else p
        return self._emit("pool", lg.MaxPool(k, s, p), [x], self._spatial(x, k, s, p, x.c), name)

    def upsample(
        self, x: Port, scale: int = 2, mode: str = "nearest", name: str | None = None
    ) -> Port:
        if x.shape.stride % scale:
            raise self.fail(f"upsampling by {scale} from stride {x.shape.stride}", "scale")
        shape = lg.Shape(x.c, x.shape.h * scale, x.shape.w * scale, x.shape.stride // scale)
        return self._emit("up", lg.Upsample(scale, mode), [x], shape, name)

    def _same_spatial(self, xs: list[Port], what: str) -> None:
        first = xs[0].shape
        for x in xs[1:]:
            if (x.shape.h, x.shape.w) != (first.h, first.w):
                raise self.fail(
                    f"{what} needs equal spatial sizes, got {first.h}x{first.w} "
                    f"('{xs[0].name}') and {x.shape.h}x{x.shape.w} ('{x.name}')",
                    "from",
                )

    def concat(self, xs: list[Port], name: str | None = None) -> Port:
        self._same_spatial(xs, "concat")
        shape = replace(xs[0].shape, c=sum(x.c for x in xs))
        return self._emit("cat", lg.Concat(), xs, shape, name)

    def group_concat(self, xs: list[Port], groups: int, name: str | None = None) -> Port:
        self._same_spatial(xs, "concat")
        for x in xs:
            if x.c % groups:
                raise self.fail(
                    f"'{x.name}' has {x.c} channels, not divisible by cardinality {groups}",
                    "cardinality",
                )
        shape = replace(xs[0].shape, c=sum(x.c for x in xs))
        return self._emit("cat", lg.GroupConcat(groups), xs, shape, name)

    def merge(self, x: Port, groups: int, name: str | None = None) -> Port:
        if x.c % groups:
            raise self.fail(f"{x.c} channels cannot merge into {groups} groups", "cardinality")
        return self._emit("merge", lg.Merge(groups), [x], replace(x.shape, c=x.c // groups), name)

    def add(self, xs: list[Port], name: str | None = None) -> Port:
        first = xs[0].shape
        for x in xs[1:]:
            if x.c != first.c:
                raise self.fail(
                    f"add needs equal channels, got {first.c} ('{xs[0].name}') "
                    f"and {x.c} ('{x.name}')",
                    "from",
                )
        self._same_spatial(xs, "add")
        return self._emit("add", lg.Add(), xs, first, name)

    def reorg(self, x: Port, name: str | None = None) -> Port:
        if x.shape.h % 2 or x.shape.w % 2:
            raise self.fail(f"reorg needs even height and width, got {x.shape.h}x{x.shape.w}")
        shape = lg.Shape(x.c * 4, x.shape.h // 2, x.shape.w // 2, x.shape.stride * 2)
        return self._emit("reorg", lg.Reorg(), [x], shape, name)

    def chunk(self, x: Port, groups: int, index: int, name: str | None = None) -> Port:
        """Channel slice ``index`` (0-based) of ``groups`` equal slices."""
        if groups < 1 or x.c % groups:
            raise self.fail(f"{x.c} channels cannot split into {groups} equal groups", "groups")
        if not 0 <= index < groups:
            raise self.fail(f"slice index must be in 0..{groups - 1}, got {index}", "index")
        op = lg.Chunk(groups, index)
        return self._emit("chunk", op, [x], replace(x.shape, c=x.c // groups), name)

    def global_avg_pool(self, x: Port, name: str | None = None) -> Port:
        return self._emit("gap", lg.GlobalAvgPool(), [x], replace(x.shape, h=1, w=1), name)

    def mul(self, x: Port, gate: Port, name: str | None = None) -> Port:
        """``x * gate``; a 1x1 gate is broadcast over x's height and width."""
        if gate.c != x.c:
            raise self.fail(
                f"mul needs equal channels, got {x.c} ('{x.name}') and {gate.c} ('{gate.name}')",
                "from",
            )
        if (gate.shape.h, gate.shape.w) != (1, 1):
            self._same_spatial([x, gate], "mul")
        return self._emit("mul", lg.Mul(), [x, gate], x.shape, name)

    def outputs(self, levels: list[Port], name: str | None = None) -> Port:
        """A decoupled head's output: the level maps (training) or all cells flattened (eval)."""
        if len({x.c for x in levels}) != 1:
            raise self.fail("every level map needs the same channels", "from")
        cells = sum(x.shape.h * x.shape.w for x in levels)
        shape = lg.Shape(levels[0].c, cells, 1, levels[0].shape.stride)
        return self._emit("out", lg.Outputs(), levels, shape, name)

    def detect(
        self,
        levels: list[Port],
        aux: list[Port] | None = None,
        *,
        implicit: bool = True,
        anchors: Any = None,
        name: str | None = None,
    ) -> Port:
        anchors = tuple(tuple(a) for a in (anchors or self.settings.anchors))
        aux = aux or []
        if len(anchors) != len(levels):
            raise self.fail(
                f"{len(levels)} detection inputs but {len(anchors)} anchor levels", "from"
            )
        if len({len(a) for a in anchors}) != 1:
            raise self.fail("every level needs the same number of anchors", "anchors")
        if aux and len(aux) != len(levels):
            raise self.fail(
                f"{len(aux)} auxiliary inputs for {len(levels)} lead inputs", "aux_from"
            )
        for lead, helper in zip(levels, aux):
            if (lead.shape.h, lead.shape.w) != (helper.shape.h, helper.shape.w):
                raise self.fail(
                    f"auxiliary input '{helper.name}' is {helper.shape.h}x"
                    f"{helper.shape.w}, its lead '{lead.name}' {lead.shape.h}x"
                    f"{lead.shape.w}",
                    "aux_from",
                )
        op = lg.Detect(
            self.settings.nc,
            anchors,
            tuple(x.shape.stride for x in levels),
            tuple(x.c for x in levels),
            tuple(x.c for x in aux),
            implicit,
        )
        n_out = op.n_anchors * op.n_outputs
        shape = lg.Shape(n_out, levels[0].shape.h, levels[0].shape.w, levels[0].shape.stride)
        return self._emit("detect", op, [*levels, *aux], shape, name)
