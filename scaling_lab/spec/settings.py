"""ModelSettings: the model-level fields of a spec, declared once.

``ModelSpec`` (the parsed text) and ``BlockGraph`` (the checked graph) extend it with their
nodes, and lowering reads it (default activation, classes, anchors), so a new model-level
field is added here and nowhere else. Each field's ``doc`` is what ``lab`` and the spec
loader print about the key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, kw_only=True)
class ModelSettings:
    """Model-level values: name, classes, default input, activation, anchors, RepConv policy."""

    name: str = field(metadata={"doc": "model name"})
    description: str = field(default="", metadata={"doc": "free text"})
    family: str = field(default="", metadata={"doc": "model family, e.g. YOLOv7"})
    nc: int = field(default=80, metadata={"doc": "number of classes"})
    img_size: int = field(default=640, metadata={"doc": "default square input size (pixels)"})
    channels: int = field(default=3, metadata={"doc": "input image channels"})
    act: str = field(default="silu", metadata={"doc": "default activation for conv blocks"})
    anchors: tuple[tuple[float, ...], ...] = field(
        default=(),
        metadata={"doc": "anchor sizes per detection level, [w, h, w, h, ...] in pixels"},
    )
    reference: dict[str, Any] = field(
        default_factory=dict,
        metadata={"doc": "published figures to compare against (params_m, gflops, ...)"},
    )
    repconv: str | dict[str, str] | None = field(
        default=None,
        metadata={"doc": "RepConv placement: none | all | planned | {layer pattern: placement}"},
    )
    source: str = field(default="<spec>", metadata={"doc": ""})  # where the text came from

    @property
    def settings(self) -> ModelSettings:
        """Just the settings (of a ModelSpec or BlockGraph, without their nodes)."""
        return ModelSettings(**{name: getattr(self, name) for name in settings_fields()})

    def with_settings(self, **changes: Any) -> Any:
        """A copy with some settings replaced (nodes kept)."""
        unknown = set(changes) - set(settings_fields())
        if unknown:
            raise TypeError(f"not a model setting: {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)


def settings_fields() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(ModelSettings))


def spec_keys() -> dict[str, str]:
    """Top-level keys a spec file may have, with what each means."""
    keys = {
        f.name: f.metadata["doc"] for f in dataclasses.fields(ModelSettings) if f.name != "source"
    }
    return {**keys, "nodes": "mapping of node name -> block fields"}
