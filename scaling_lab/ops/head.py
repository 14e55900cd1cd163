"""Head ops: the YOLO detection head (lead and auxiliary convs) and a decoupled head's output."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from scaling_lab.ops.base import (
    FREE,
    REFERENCE_ANCHORS,
    REFERENCE_OWN,
    Op,
    OpCount,
    Port,
    ReferenceNaming,
    Shape,
    field_difference,
    require,
)

# models.yolo.(I)(Aux)Detect of the reference: anchors, anchor_grid, m, m2, ia, im
DETECT_NAMING = ReferenceNaming(
    "detect",
    "anchor_grid",
    renames=(("aux.", "m2."),),
    special={"anchors": REFERENCE_ANCHORS, "stride": REFERENCE_OWN},
    ignored=("anchors", "anchor_grid"),
    whole_layer=True,
)


@dataclass(frozen=True)
class Detect(Op):
    """YOLO detection head: a 1x1 conv per level, with implicit knowledge (§ YOLOR) if asked.

    Inputs: the lead levels, then one auxiliary input per level (if any). Training form:
    ImplicitA added before and ImplicitM multiplied after each lead conv, plus plain 1x1 convs
    on the auxiliary inputs. Fused form: implicit folded into the conv.
    """

    nc: int
    anchors: tuple[tuple[float, ...], ...]
    strides: tuple[int, ...]
    c_ins: tuple[int, ...]
    aux_c_ins: tuple[int, ...] = ()
    implicit: bool = True

    prefix = "detect"
    takes_list = True

    @property
    def n_anchors(self) -> int:
        return len(self.anchors[0]) // 2

    @property
    def n_outputs(self) -> int:
        """Outputs per anchor: box (4), objectness (1), classes."""
        return self.nc + 5

    def infer_shape(self, inputs: Sequence[Port]) -> Shape:
        n_lead = len(self.c_ins)
        levels, aux = inputs[:n_lead], inputs[n_lead:]
        require(
            len(self.anchors) == n_lead,
            f"{n_lead} detection inputs but {len(self.anchors)} anchor levels",
            "from",
        )
        require(
            len({len(a) for a in self.anchors}) == 1,
            "every level needs the same number of anchors",
            "anchors",
        )
        require(
            not aux or len(aux) == n_lead,
            f"{len(aux)} auxiliary inputs for {n_lead} lead inputs",
            "aux_from",
        )
        for lead, helper in zip(levels, aux):
            require(
                (lead.shape.h, lead.shape.w) == (helper.shape.h, helper.shape.w),
                f"auxiliary input '{helper.name}' is {helper.shape.h}x{helper.shape.w}, its "
                f"lead '{lead.name}' {lead.shape.h}x{lead.shape.w}",
                "aux_from",
            )
        first = levels[0].shape
        return Shape(self.n_anchors * self.n_outputs, first.h, first.w, first.stride)

    def count(self, inputs: Sequence[Shape], out: Shape) -> OpCount:
        n_out = self.n_anchors * self.n_outputs
        params = macs = bias_adds = 0
        for i, shape in enumerate(inputs):
            params += shape.c * n_out + n_out  # 1x1 conv with bias
            macs += shape.h * shape.w * shape.c * n_out
            bias_adds += shape.h * shape.w * n_out
            if i < len(self.c_ins) and self.implicit:
                params += shape.c + n_out  # ImplicitA (per input channel) and ImplicitM
        return OpCount(params, macs + bias_adds, bias_adds, 0)

    def fused(self) -> Detect:
        return replace(self, implicit=False)

    def without_aux(self) -> Detect:
        """The lead-only head (what deployment keeps)."""
        return replace(self, aux_c_ins=())

    def build(self) -> Any:
        from scaling_lab.ops import modules

        return modules.Detect(self)

    def fuse_weights(self, module: Any) -> dict[str, Any]:
        from scaling_lab.ops import fusion

        return fusion.fused_detect_state(module)

    def reference_naming(self) -> ReferenceNaming:
        return DETECT_NAMING

    def alignment_difference(self, theirs: Op) -> str | None:
        """Anchors are data the checkpoint brings (its anchor_grid), not a difference."""
        if not isinstance(theirs, Detect):
            return f"{self.kind} vs {theirs.kind}"
        if replace(self, anchors=theirs.anchors) == theirs:
            return None
        if self.nc != theirs.nc:
            return f"{self.nc} vs {theirs.nc} classes"
        if len(self.aux_c_ins) != len(theirs.aux_c_ins):
            return (
                f"{len(self.aux_c_ins)} vs {len(theirs.aux_c_ins)} auxiliary head inputs "
                "(a deploy config against a training model, or the other way round?)"
            )
        if self.n_anchors != theirs.n_anchors or len(self.c_ins) != len(theirs.c_ins):
            return (
                f"{len(self.c_ins)} vs {len(theirs.c_ins)} levels of {self.n_anchors} vs "
                f"{theirs.n_anchors} anchors"
            )
        if self.implicit != theirs.implicit:
            return "implicit knowledge in one head only"
        return field_difference(replace(self, anchors=theirs.anchors), theirs)


@dataclass(frozen=True)
class Outputs(Op):
    """The model output of a decoupled head: in training mode the per-level maps; in eval mode
    each level flattened to (B, H*W, C) and all levels concatenated, (B, N, C)."""

    prefix = "out"
    takes_list = True

    def infer_shape(self, inputs: Sequence[Port]) -> Shape:
        require(len({x.c for x in inputs}) == 1, "every level map needs the same channels", "from")
        cells = sum(x.shape.h * x.shape.w for x in inputs)
        return Shape(inputs[0].c, cells, 1, inputs[0].shape.stride)

    def count(self, inputs: Sequence[Shape], out: Shape) -> OpCount:
        return FREE

    def build(self) -> Any:
        from scaling_lab.ops import modules

        return modules.Outputs()
