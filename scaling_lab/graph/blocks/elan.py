"""ELAN and E-ELAN computational blocks (paper §3.1, Fig. 2c-d)."""

from __future__ import annotations

from dataclasses import dataclass, field

from scaling_lab.graph.blocks.basic import check_positive
from scaling_lab.graph.registry import FieldError, register_block
from scaling_lab.layers.builder import LayerBuilder, Port


@dataclass(frozen=True)
class ElanCfg:
    """ELAN: two 1x1 entries, a chain of 3x3 convs, a concat of taps, a 1x1 transition.

    Taps are both entries plus every ``tap_every``-th chain output counted back from the
    last (2 in the YOLOv7 backbone, 1 = all of them in its neck); they are concatenated
    newest first, as in the reference implementation.
    """

    c_out: int = field(metadata={"scale": "transition"})  # transition (final 1x1) width
    c_hidden: int = field(metadata={"scale": "width"})  # entry 1x1 widths
    c_chain: int | None = field(default=None, metadata={"scale": "width"})  # None: c_hidden
    depth: int = field(default=4, metadata={"scale": "depth"})  # number of stacked 3x3 convs
    tap_every: int = field(default=2, metadata={"at_most": "depth"})
    transition: bool = True  # False: end at the concat (no final 1x1)

    def check(self) -> None:
        check_positive(self, "c_out", "c_hidden", "c_chain", "depth", "tap_every")
        if self.tap_every > self.depth:
            raise FieldError("tap_every", f"must be <= depth ({self.depth}), got {self.tap_every}")

    @property
    def chain_width(self) -> int:
        return self.c_hidden if self.c_chain is None else self.c_chain

    def n_taps(self) -> int:
        """How many tensors the concat joins (both entries + tapped chain outputs)."""
        return 2 + sum(self.tapped(i) for i in range(self.depth))

    def concat_width(self) -> int:
        """Channels of the concat the transition reads (what depth scaling widens, §3.2)."""
        return 2 * self.c_hidden + (self.n_taps() - 2) * self.chain_width

    def tapped(self, i: int) -> bool:
        """Is chain output ``i`` (0-based) concatenated? Counted back from the last one."""
        return (self.depth - 1 - i) % self.tap_every == 0


def _elan_taps(cfg: ElanCfg, x: Port, lb: LayerBuilder, widen: int, groups: int) -> list[Port]:
    """Entries and chain shared by ELAN (groups 1) and E-ELAN (groups = cardinality)."""
    first = lb.conv(x, cfg.c_hidden * widen, 1)
    h = lb.conv(x, cfg.c_hidden * widen, 1)
    taps = [first, h]
    for i in range(cfg.depth):
        h = lb.conv(h, cfg.chain_width * widen, 3, groups=groups)
        if cfg.tapped(i):
            taps.append(h)
    return taps[::-1]


@register_block("elan", ElanCfg, role="computational")
def lower_elan(cfg: ElanCfg, inputs: list[Port], lb: LayerBuilder) -> Port:
    cat = lb.concat(_elan_taps(cfg, inputs[0], lb, widen=1, groups=1))
    return lb.conv(cat, cfg.c_out, 1) if cfg.transition else cat


@dataclass(frozen=True)
class EElanCfg(ElanCfg):
    """E-ELAN: ELAN with expanded cardinality (group conv), shuffle, and merge (sum) of groups.

    Lowered as one ELAN ``cardinality`` times wider whose 3x3 chain and transition are
    grouped convs; the concat regroups channels by cardinality (shuffle) and the groups'
    outputs are summed (merge cardinality). Equal in params and FLOPs to ``cardinality``
    parallel ELANs added together, which is how the reference implementation writes E6E.

    Ports ``group0`` .. ``group{cardinality-1}``: group g's output before the merge (its
    transition's output, channel slice g of the grouped transition), i.e. the g-th of the
    parallel ELANs when their weights are stacked in order. The reference's partial
    auxiliary head (paper §5.4.3, Table 8) reads such a tensor.
    """

    cardinality: int = 2

    def concat_width(self) -> int:
        return super().concat_width() * self.cardinality

    def check(self) -> None:
        super().check()
        check_positive(self, "cardinality")
        if not self.transition:
            raise FieldError("transition", "E-ELAN merges after its transition; it must be true")


@register_block("eelan", EElanCfg, role="computational")
def lower_eelan(cfg: EElanCfg, inputs: list[Port], lb: LayerBuilder) -> Port:
    g = cfg.cardinality
    taps = _elan_taps(cfg, inputs[0], lb, widen=g, groups=g)
    shuffled = lb.group_concat(taps, g)
    expanded = lb.conv(shuffled, cfg.c_out * g, 1, groups=g)
    for i in range(g):  # emitted (a free channel slice) only where a node reads it
        lb.chunk_port(f"group{i}", expanded, g, i)
    return lb.merge(expanded, g)
