"""The primitive-op protocol: everything about one op is declared on its class.

A primitive op is a frozen dataclass subclassing ``Op``. Its methods are the one place that
says how the op infers its output shape (and checks its inputs), what it costs (params and
MACs), what it becomes when fused for deployment, how it is built in torch and how trained
weights carry over into its fused form. The LayerBuilder, the analytic counter, fusing, the
torch.fx build and re-parameterization all ask the op; none of them lists op types, so a
block registered from user code can bring a new op by subclassing ``Op``. The latency
fallback's cost rule (``fit_group``, ``fit_macs``) and what weight conversion from the
reference implementation reads (``reference_naming``, the channel-slicing methods) are
declared here too, each with a default that fits an op which declares nothing about them.

Nothing here imports torch: ``build`` and ``fuse_weights`` import it when called.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from scaling_lab.spec.errors import SpecError


@dataclass(frozen=True)
class Shape:
    """Output of a layer for one image: channels, height, width, and stride to the input."""

    c: int
    h: int
    w: int
    stride: int

    @property
    def elements(self) -> int:
        return self.c * self.h * self.w


@dataclass(frozen=True)
class Port:
    """A layer output that an op or block can consume: the layer's name and its shape."""

    name: str
    shape: Shape

    @property
    def c(self) -> int:
        return self.shape.c


@dataclass(frozen=True)
class OpCount:
    """Params and MACs of one op, plus the element-wise ops thop also counts there.

    ``macs`` follows the paper's rule: weight multiply-accumulates plus one add per output
    element where a conv has a bias (``bias_adds``); ``thop_extra_ops`` is what thop 0.1.1
    adds on top of weight MACs (BatchNorm, upsampling).
    """

    params: int = 0
    macs: int = 0
    bias_adds: int = 0
    thop_extra_ops: int = 0


FREE = OpCount()  # data movement and element-wise joins: no params, no MACs, nothing thop counts


@dataclass(frozen=True)
class TorchCall:
    """A plain function in the generated forward: ``fn(*inputs, *args)``, or
    ``fn([inputs], *args)`` when the op's ``takes_list`` is set."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()


REFERENCE_OWN = "<ours>"  # a tensor the reference does not store: the built module's own value
REFERENCE_ANCHORS = "<anchors>"  # the head's anchors, from the reference's pixel anchor_grid


@dataclass(frozen=True)
class ReferenceNaming:
    """Where the public reference implementation keeps one kind of op's tensors, so that
    ``lab convert-weights`` can find and rename them (``Op.reference_naming``).

    A unit is the part of one reference layer (``model.{index}.``) that holds one op's
    tensors. ``whole_layer``: the unit is the layer itself, recognized by the key ``marker``
    or, without one, by being the only op with weights the layer's config lowers to; else
    ``marker`` is a key suffix only this kind of unit has, and what precedes it is the unit's
    prefix (SPPCSPC's ``cv1.`` ... ``cv7.``). ``renames``: our key prefix -> the reference's;
    ``special``: our key -> ``REFERENCE_OWN`` / ``REFERENCE_ANCHORS``; ``ignored``: keys the
    unit holds that we derive otherwise; ``fused_markers``: keys that mean the checkpoint
    holds this op already fused (refused); ``activation``: the unit's sub-module whose class
    must be the op's ``act``.
    """

    kind: str
    marker: str | None = None
    renames: tuple[tuple[str, str], ...] = ()
    special: Mapping[str, str] = dataclasses.field(default_factory=dict)
    ignored: tuple[str, ...] = ()
    whole_layer: bool = False
    fused_markers: tuple[str, ...] = ()
    activation: str | None = None

    def reference_key(self, ours: str) -> str:
        """The reference's key (relative to the unit) for our module's key ``ours``."""
        if ours in self.special:
            return self.special[ours]
        for mine, theirs in self.renames:
            if ours.startswith(mine):
                return theirs + ours[len(mine) :]
        return ours


class Op:
    """Base class of primitive ops (subclasses are frozen dataclasses).

    Class attributes: ``prefix`` names the op's layers inside a block (``cv1``, ``cat2``);
    ``takes_list`` passes the inputs to the torch form as one list (concat, heads);
    ``joins_paths`` marks ops that join gradient paths (concat, add), which planned RepConv
    placement reads (paper §4.1); ``concatenates`` (the output is the inputs' channels in
    order) and ``sums_inputs`` (an element-wise sum) tell weight alignment which ops it may
    flatten or pair with a merge.
    """

    prefix: ClassVar[str] = "op"
    takes_list: ClassVar[bool] = False
    joins_paths: ClassVar[bool] = False
    concatenates: ClassVar[bool] = False
    sums_inputs: ClassVar[bool] = False

    @property
    def kind(self) -> str:
        return type(self).__name__.lower()

    def infer_shape(self, inputs: Sequence[Port]) -> Shape:
        """The output shape; raises ``SpecError`` (with the field at fault) on bad inputs."""
        raise NotImplementedError(f"op {type(self).__name__} declares no infer_shape")

    def count(self, inputs: Sequence[Shape], out: Shape) -> OpCount:
        """Params and MACs at these shapes; there is no default (counting zero for an op
        nobody described is the classic trap of op counters)."""
        raise NotImplementedError(f"op {type(self).__name__} declares no count")

    def fused(self) -> Op:
        """The deploy-time op this one re-parameterizes into (itself when nothing fuses)."""
        return self

    def build(self) -> Any:
        """The torch form: an ``nn.Module`` called with the inputs, or a ``TorchCall``."""
        raise NotImplementedError(f"op {type(self).__name__} declares no torch form")

    def fuse_weights(self, module: Any) -> dict[str, Any]:
        """The state dict of ``self.fused()``'s module, computed from this op's trained
        module; ops that fusing leaves alone keep their state."""
        return dict(module.state_dict()) if module is not None else {}

    # -- latency fallback (analyze/op_config.py) ------------------------------------------

    def fit_group(self) -> str:
        """The latency fallback fit's group, ops whose costs scale alike: the kind, refined
        by the fields ``k`` and ``s`` and by ``groups`` (``dw`` where it equals ``c_in``, else
        ``g``) where the op declares them: ``conv/k3/s2``, ``maxpool/k5/s1``, ``concat``."""
        parts = [self.kind]
        for name in ("k", "s"):
            value = getattr(self, name, None)
            if isinstance(value, int):
                parts.append(f"{name}{value}")
        groups = getattr(self, "groups", 1)
        if isinstance(groups, int) and groups > 1:
            parts.append("dw" if groups == getattr(self, "c_in", None) else "g")
        return "/".join(parts)

    def fit_macs(self, inputs: Sequence[Shape], out: Shape) -> int:
        """The work the latency fallback regresses on: the counted MACs; an op without
        weights that still reads a window per output element says so here (max-pool)."""
        return self.count(inputs, out).macs

    # -- weight conversion from the reference implementation (weights/) ------------------

    def reference_naming(self) -> ReferenceNaming:
        """Where the reference keeps this op's tensors. Default: the whole reference layer,
        under the names our module gives them; an op whose reference module names them
        otherwise (or shares its layer with other ops) returns its own rule."""
        return ReferenceNaming(self.kind, whole_layer=True)

    def channel_slice(self, g: int) -> Op | None:
        """This op computing only one of ``g`` equal chunks of its output channels (the same
        op for every chunk), or None where it cannot; the alignment pairs E-ELAN's grouped
        convs with the reference's separate branches through it. Default: only whole."""
        return self if g == 1 else None

    def slice_input(self, j: int, g: int) -> tuple[int, int]:
        """Which chunk ``(index, count)`` of each input chunk ``j`` of ``g`` of the output
        reads (``(0, 1)``: the whole input). Default: the same chunk (channel-wise ops)."""
        return (j, g)

    def channel_view(self, j: int, g: int) -> tuple[int, int] | None:
        """For an op whose output is only a view of some channels of its input (a slice):
        the input chunk ``(index, count)`` that chunk ``j`` of ``g`` of the output is; the
        reference need not write it as a layer at all. None: the op computes something."""
        return None

    def summed_groups(self) -> int | None:
        """How many equal channel groups of its input the op sums (merge cardinality), which
        the reference may write as an add of that many tensors; None for other ops."""
        return None

    def alignment_difference(self, theirs: Op) -> str | None:
        """How this op differs from the reference's op it is paired with (``k 3 vs 1``), or
        None where the same weights make them compute the same function."""
        return None if self == theirs else field_difference(self, theirs)


def field_difference(ours: Op, theirs: Op) -> str:
    """The fields in which two ops differ (``k 3 vs 1``), or their kinds."""
    if type(ours) is not type(theirs):
        return f"{ours.kind} vs {theirs.kind}"
    if not dataclasses.is_dataclass(ours):
        return f"{ours.kind} differs"
    names = [f.name for f in dataclasses.fields(ours)]
    diffs = [
        f"{n} {getattr(ours, n)} vs {getattr(theirs, n)}"
        for n in names
        if getattr(ours, n) != getattr(theirs, n)
    ]
    return ", ".join(diffs) or f"{ours.kind} differs"


def require(condition: bool, message: str, field: str | None = None) -> None:
    """Refuse an op's inputs or arguments with a ``SpecError`` naming the field."""
    if not condition:
        raise SpecError(message, field=field)


def same_spatial(inputs: Sequence[Port], what: str) -> None:
    """Every input has the first one's height and width (joins, heads)."""
    first = inputs[0].shape
    for x in inputs[1:]:
        require(
            (x.shape.h, x.shape.w) == (first.h, first.w),
            f"{what} needs equal spatial sizes, got {first.h}x{first.w} "
            f"('{inputs[0].name}') and {x.shape.h}x{x.shape.w} ('{x.name}')",
            "from",
        )


def out_size(size: int, k: int, s: int, p: int) -> int:
    """Output length of a sliding window (conv, pooling) along one axis."""
    return (size + 2 * p - k) // s + 1


def windowed(x: Port, k: int, s: int, p: int, c_out: int) -> Shape:
    """The shape after a kxk window at stride s with padding p (convs, pooling)."""
    h, w = out_size(x.shape.h, k, s, p), out_size(x.shape.w, k, s, p)
    require(h >= 1 and w >= 1, f"input {x.shape.h}x{x.shape.w} is too small for kernel {k}")
    return Shape(c_out, h, w, x.shape.stride * s)
