"""The primitive-op protocol: everything about one op is declared on its class.

A primitive op is a frozen dataclass subclassing ``Op``. Its methods are the one place that
says how the op infers its output shape (and checks its inputs), what it costs (params and
MACs), what it becomes when fused for deployment, how it is built in torch and how trained
weights carry over into its fused form. The LayerBuilder, the analytic counter, fusing, the
torch.fx build and re-parameterization all ask the op; none of them lists op types, so a
block registered from user code can bring a new op by subclassing ``Op``.

Nothing here imports torch: ``build`` and ``fuse_weights`` import it when called.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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


class Op:
    """Base class of primitive ops (subclasses are frozen dataclasses).

    Class attributes: ``prefix`` names the op's layers inside a block (``cv1``, ``cat2``);
    ``takes_list`` passes the inputs to the torch form as one list (concat, heads);
    ``joins_paths`` marks ops that join gradient paths (concat, add), which planned RepConv
    placement reads (paper §4.1).
    """

    prefix: ClassVar[str] = "op"
    takes_list: ClassVar[bool] = False
    joins_paths: ClassVar[bool] = False

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
