"""Align two LayerGraphs that compute the same function, tensor by tensor.

``ours`` is the target model's graph; ``theirs`` is the graph imported from a checkpoint's
layer-list config, whose layers correspond 1:1 to the reference's layers. Starting from the
two heads, each tensor of ours is paired with a tensor of theirs and the pairing is carried to
the inputs: the ops must agree (same op and arguments, same output shape), and the inputs are
paired in order. A pairing may name a channel slice of ours, ``(layer, j, G)``: chunk ``j``
of ``G`` equal chunks of the layer's output. Slices come from the one structural difference
between the two ways to write E-ELAN, derived from the ops alone; each op says its part
(``Op.channel_slice``, ``slice_input``, ``channel_view``, ``summed_groups``), so an op a user
defines takes part without an edit here:

- a ``Merge(g)`` of ours (sum of g channel groups) pairs with an ``Add`` of g tensors of
  theirs, group ``j`` with one addend; addition is commutative, so which addend is group j is
  decided by any other reader of a group (a ``Chunk`` port), else by the reference's order;
- a conv of ours with ``groups`` divisible by G, sliced to chunk ``j``, is the conv with
  ``c_out / G`` outputs reading chunk ``j`` of its input (groups 1: the whole input);
- a ``GroupConcat(g)`` sliced to chunk j is the ``Concat`` of chunk j of every input;
- a ``Chunk(n, i)`` of ours is chunk i of n of its input; pooling, upsampling and adds keep
  the slice of their inputs.

Nested concatenations are compared flattened (``cat(cat(a, b), c) == cat(a, b, c)``), so a
block that concatenates inside (``mp_down``) pairs with the reference's single three-way
concat. Ops are compared by ``Op.alignment_difference`` (the head ignores anchors, which the
checkpoint brings). Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from scaling_lab.layers.layer_graph import Layer, LayerGraph
from scaling_lab.ops import Shape
from scaling_lab.weights.errors import AlignmentError

INPUT = "input"
Key = tuple[str, int, int]  # (our layer or "input", chunk index j, chunk count G)


@dataclass(frozen=True)
class Alignment:
    """Which tensor of theirs each (slice of a) tensor of ours equals."""

    pairs: dict[Key, str]

    def sources(self, layer: str) -> dict[int, dict[int, str]]:
        """For one layer of ours: chunk count G -> {chunk j: their layer}."""
        out: dict[int, dict[int, str]] = {}
        for (name, j, g), theirs in self.pairs.items():
            if name == layer:
                out.setdefault(g, {})[j] = theirs
        return out

    def matched_theirs(self) -> set[str]:
        return set(self.pairs.values())


def _slice_text(key: Key) -> str:
    _, j, g = key
    return "" if g == 1 else f" (channel group {j} of {g})"


class _Aligner:
    def __init__(
        self, ours: LayerGraph, theirs: LayerGraph, describe: Callable[[str], str] | None
    ) -> None:
        self.ours, self.theirs = ours, theirs
        self.describe = describe or (lambda name: f"'{name}' ({theirs[name].kind})")
        self.position = {layer.name: i for i, layer in enumerate(theirs.layers)}
        self.pairs: dict[Key, str] = {}
        self.todo: list[tuple[Key, str]] = []
        self.deferred: list[tuple[Layer, Layer]] = []  # (our Merge, their Add)

    # -- reporting ----------------------------------------------------------------------
    def _ours_text(self, key: Key) -> str:
        name = key[0]
        kind = "the image" if name == INPUT else self.ours[name].kind
        return f"our '{name}'{_slice_text(key)} ({kind})"

    def _theirs_text(self, name: str) -> str:
        if name == INPUT:
            return "the checkpoint's input image"
        return f"the checkpoint's {self.describe(name)}"

    def fail(self, key: Key, theirs: str, why: str) -> AlignmentError:
        return AlignmentError(
            f"the models differ at {self._ours_text(key)} vs {self._theirs_text(theirs)}: {why}"
        )

    # -- walking --------------------------------------------------------------------------
    def run(self) -> Alignment:
        self.todo.append(((self.ours.output.name, 0, 1), self.theirs.output.name))
        while self.todo or self.deferred:
            while self.todo:
                key, theirs = self.todo.pop()
                self._pair(key, theirs)
            if self.deferred:
                self._resolve_merge()
        return Alignment(dict(self.pairs))

    def _flat(self, graph: LayerGraph, names: tuple[str, ...]) -> list[str]:
        out: list[str] = []
        for name in names:
            if name != INPUT and graph[name].op.concatenates:
                out += self._flat(graph, graph[name].inputs)
            else:
                out.append(name)
        return out

    def _push_all(self, keys: list[Key], theirs: list[str], key: Key, t: str, what: str) -> None:
        if len(keys) != len(theirs):
            raise self.fail(key, t, f"{what}: {len(keys)} inputs vs {len(theirs)}")
        self.todo.extend(zip(reversed(keys), reversed(theirs)))

    def _pair(self, key: Key, t: str) -> None:
        if key in self.pairs:
            if self.pairs[key] != t:
                raise self.fail(
                    key, t, f"it already equals the checkpoint's {self.describe(self.pairs[key])}"
                )
            return
        self.pairs[key] = t
        name, _, g = key
        if name == INPUT or t == INPUT:
            if not (name == INPUT and t == INPUT and g == 1):
                raise self.fail(key, t, "one of them is the input image")
            return
        z, their = self.ours[name], self.theirs[t]
        s = z.shape
        if s.c % g or Shape(s.c // g, s.h, s.w, s.stride) != their.shape:
            mine = Shape(s.c // g, s.h, s.w, s.stride) if s.c % g == 0 else s
            raise self.fail(
                key,
                t,
                f"output {mine.c}x{mine.h}x{mine.w} vs {their.shape.c}x{their.shape.h}x"
                f"{their.shape.w}",
            )
        self._pair_op(key, z, their)

    def _pair_op(self, key: Key, z: Layer, their: Layer) -> None:
        _, j, g = key
        t = their.name
        op, top = z.op, their.op
        view = op.channel_view(j, g)
        if view is not None:  # a view: their tensor is a slice of our input
            self.todo.append(((z.inputs[0], *view), t))
            return
        summed = op.summed_groups()
        if summed is not None and g == 1 and top.sums_inputs and len(their.inputs) == summed:
            self.deferred.append((z, their))
            return
        sliced = op.channel_slice(g)
        if sliced is None:
            raise self.fail(key, t, f"{op.kind} cannot be split into {g} channel groups")
        difference = sliced.alignment_difference(top)
        if difference is not None:
            raise self.fail(key, t, difference)
        if op.concatenates:  # whole (a slice of a concat is not the concat of slices)
            ours_in = [(i, 0, 1) for i in self._flat(self.ours, z.inputs)]
        else:
            ours_in = [(i, *op.slice_input(j, g)) for i in z.inputs]
        theirs_in = self._flat(self.theirs, their.inputs) if top.concatenates else their.inputs
        self._push_all(ours_in, list(theirs_in), key, t, op.kind)

    def _resolve_merge(self) -> None:
        """Pair one deferred merge's groups with the addends: groups some other reader has
        already paired keep that addend, the rest follow the reference's layer order."""
        pick = 0
        for index, (z, _) in enumerate(self.deferred):
            src, g = z.inputs[0], _summed(z)
            if any((src, j, g) in self.pairs for j in range(g)):
                pick = index
                break
        z, their = self.deferred.pop(pick)
        src, g = z.inputs[0], _summed(z)
        fixed = {j: self.pairs[(src, j, g)] for j in range(g) if (src, j, g) in self.pairs}
        free_addends = [a for a in their.inputs if a not in fixed.values()]
        if len(free_addends) != g - len(fixed):
            raise self.fail(
                (z.name, 0, 1), their.name, "a group already equals a tensor this add does not sum"
            )
        free_addends.sort(key=lambda a: self.position.get(a, -1))
        free_groups = [j for j in range(g) if j not in fixed]
        for j, addend in zip(free_groups, free_addends):
            self.todo.append(((src, j, g), addend))


def _summed(layer: Layer) -> int:
    groups = layer.op.summed_groups()
    assert groups is not None  # only merges are deferred
    return groups


def align(
    ours: LayerGraph, theirs: LayerGraph, describe: Callable[[str], str] | None = None
) -> Alignment:
    """Pair every tensor of ``ours`` that the output depends on with the tensor of ``theirs``
    it equals; ``AlignmentError`` where the two graphs differ. ``describe`` names a layer of
    theirs in messages (e.g. with its reference layer index)."""
    return _Aligner(ours, theirs, describe).run()
