"""The block registry: block type name -> config dataclass + lowering function + scaling role.

Researchers add a block from their own code without touching the package::

    from dataclasses import dataclass
    from scaling_lab import register_block

    @dataclass(frozen=True)
    class GhostCfg:
        c: int              # output channels
        ratio: int = 2

    @register_block("ghost", GhostCfg, role="computational")
    def lower_ghost(cfg, inputs, lb):
        (x,) = inputs
        primary = lb.conv(x, cfg.c // cfg.ratio, k=1)
        cheap = lb.conv(primary, cfg.c // cfg.ratio, k=3, groups=cfg.c // cfg.ratio)
        return lb.concat([primary, cheap])

After that import, specs may use ``type: ghost``.

Scaling (``scaling_lab.transforms.scale``) reads what each field means from the dataclass
field's metadata, so a registered block scales like a built-in one::

    c: int = field(metadata={"scale": "width"})        # a channel count
    c_out: int = field(metadata={"scale": "transition"})  # a block's own final 1x1 width
    depth: int = field(default=1, metadata={"scale": "depth"})  # stacked layers
    tap_every: int = field(default=2, metadata={"at_most": "depth"})  # kept <= depth

A computational block whose output width grows with its depth (a concatenation) also defines
``concat_width() -> int``, the width of what its transition reads; compound scaling widens
the transition by the change of that width (paper §3.2).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scaling_lab import schema
from scaling_lab.errors import shown
from scaling_lab.limits import MAX_BLOCK_DEPTH
from scaling_lab.spec.errors import SpecError

ROLES = ("computational", "transition", "fixed")
SCALE_KINDS = ("width", "transition", "depth")  # values of a field's metadata["scale"]


FieldError = schema.FieldError  # raised by a config's ``check()`` to reject one field's value


@dataclass(frozen=True)
class BlockType:
    """A registered block: how its fields look and how it lowers to layers."""

    name: str
    cfg_cls: type
    lower: Callable[..., Any]
    role: str
    n_inputs: int | None  # None: any number (concat, detect)
    head: bool = False  # a detection head: a model has exactly one, as its output

    @property
    def doc(self) -> str:
        return (self.cfg_cls.__doc__ or "").strip().splitlines()[0] if self.cfg_cls.__doc__ else ""


_REGISTRY: dict[str, BlockType] = {}


def register_block(
    name: str,
    cfg_cls: type,
    *,
    role: str = "fixed",
    n_inputs: int | None = 1,
    head: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a block type; its lowering function is ``fn(cfg, inputs, lb) -> Port``.

    ``role`` tells compound scaling what the block is (paper §3.2): a computational block
    (depth scales), a transition (width follows the blocks), or fixed. ``head``: a detection
    head (a model spec has exactly one, as its last node).
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    if not dataclasses.is_dataclass(cfg_cls):
        raise TypeError(f"block '{name}': config {cfg_cls!r} must be a dataclass")
    _check_scale_metadata(name, cfg_cls)

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY:
            raise ValueError(f"block registry: '{name}' is already registered")
        _REGISTRY[name] = BlockType(name, cfg_cls, fn, role, n_inputs, head)
        return fn

    return decorate


def _check_scale_metadata(name: str, cfg_cls: type) -> None:
    """Refuse a misspelled scaling declaration at registration rather than ignore it."""
    names = {f.name for f in dataclasses.fields(cfg_cls)}
    for f in dataclasses.fields(cfg_cls):
        kind = f.metadata.get("scale")
        if kind is not None and kind not in SCALE_KINDS:
            raise ValueError(
                f"block '{name}': field '{f.name}': metadata scale must be one of "
                f"{SCALE_KINDS}, got {kind!r}"
            )
        bound = f.metadata.get("at_most")
        if bound is not None and bound not in names:
            raise ValueError(
                f"block '{name}': field '{f.name}': metadata at_most names no field ({bound!r})"
            )


def unregister_block(name: str) -> None:
    """Remove a block type (for tests and interactive sessions that redefine a block)."""
    _REGISTRY.pop(name, None)


def get_block(name: str) -> BlockType:
    """Look up a block type, naming the known ones when it is missing."""
    _ensure_builtin_blocks()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise SpecError(
            f"unknown block type '{name}' (known: {', '.join(sorted(_REGISTRY))})", field="type"
        ) from None


def registered_blocks() -> dict[str, BlockType]:
    _ensure_builtin_blocks()
    return dict(_REGISTRY)


def _ensure_builtin_blocks() -> None:
    import scaling_lab.graph.blocks  # noqa: F401  (registers the built-in blocks on import)


REPEAT_FIELDS = ("depth", "n", "cardinality")  # loop counts of a lowering, besides "scale"


def check_sizes(block: BlockType, cfg: Any) -> None:
    """Bounds that keep lowering cheap: repeat counts at most ``MAX_BLOCK_DEPTH``, every
    integer below 2**31 (a channel count of 10**20 would only be refused later, by memory)."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        values = value if isinstance(value, (tuple, list)) else (value,)
        for v in values:
            if not isinstance(v, int) or isinstance(v, bool):
                continue
            repeat = f.metadata.get("scale") == "depth" or f.name in REPEAT_FIELDS
            if repeat and v > MAX_BLOCK_DEPTH:
                raise SpecError(
                    f"{v} is more than {MAX_BLOCK_DEPTH} (MAX_BLOCK_DEPTH) for block "
                    f"'{block.name}'",
                    field=f.name,
                )
            if abs(v) >= 2**31:
                raise SpecError(
                    f"{shown(v)} is out of range for block '{block.name}'", field=f.name
                )


def make_cfg(block: BlockType, fields: dict[str, Any]) -> Any:
    """Build a block's config from spec fields, checking names, types, sizes and
    ``check()``."""
    try:
        cfg: Any = schema.build(block.cfg_cls, fields)
    except schema.UnknownKeyError as exc:
        known = ", ".join(exc.known)
        raise SpecError(
            f"unknown field for block '{block.name}' (known: {known})", field=exc.key
        ) from None
    except schema.MissingKeyError as exc:
        raise SpecError(f"required field missing for block '{block.name}'", field=exc.key) from None
    except schema.SchemaError as exc:
        raise SpecError(exc.reason, field=exc.field) from None
    check_sizes(block, cfg)
    return cfg


def cfg_fields(cfg: Any) -> dict[str, Any]:
    """The fields of a config that differ from their defaults (what a dump writes)."""
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        has_default = f.default is not dataclasses.MISSING
        if not has_default or value != f.default:
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out
