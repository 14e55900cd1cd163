"""Model references: what the user names, parsed once, then built as a graph or a module.

A model is named by a zoo name (``yolov7``), a zoo name with a form suffix (``yolov7-deploy``:
auxiliary heads dropped and every op fused; ``yolov7-fused``: fused, auxiliary heads kept),
the path of a spec or YOLO layer-list file, or an in-memory ``ModelSpec`` / ``BlockGraph``.
``model_ref`` turns any of these into a ``ModelRef`` (source + form) once; every entry point
(``create_model``, ``profile``, the CLI, sweeps) takes one, so the form cannot be dropped
on the way. ``nc`` and ``img_size`` override the spec's values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from scaling_lab.errors import shown
from scaling_lab.graph.block_graph import BlockGraph, build_block_graph
from scaling_lab.graph.lower import lower
from scaling_lab.layers.forms import FORM_SUFFIXES, FORMS
from scaling_lab.layers.fuse import fuse_layers
from scaling_lab.layers.layer_graph import LayerGraph
from scaling_lab.layers.plan_repconv import Policy
from scaling_lab.limits import MAX_NC
from scaling_lab.spec.errors import SpecError
from scaling_lab.spec.layer_list import is_layer_list_file, load_layer_list
from scaling_lab.spec.load import ModelSpec, load_spec
from scaling_lab.transforms.deploy import drop_aux_heads
from scaling_lab.zoo import is_zoo_model, load_zoo_spec

if TYPE_CHECKING:
    from torch import nn


ModelSource = str | ModelSpec | BlockGraph


@dataclass(frozen=True)
class ModelRef:
    """A model as the user named it: where its spec comes from and which form is wanted.

    ``training``: BatchNorm, RepConv branches, implicit knowledge and auxiliary heads as
    trained. ``deploy``: auxiliary heads dropped, every op fused (what the paper counts and
    times). ``fused``: every op fused, auxiliary heads kept.
    """

    source: ModelSource
    form: str = "training"

    @property
    def deploy(self) -> bool:
        return self.form == "deploy"

    def label(self, name: str) -> str:
        """How reports name the model: its spec's name with the form suffix."""
        return name + FORM_SUFFIXES.get(self.form, "")

    def with_graph(self, graph: BlockGraph) -> ModelRef:
        """The same form of another (e.g. transformed) graph."""
        return replace(self, source=graph)

    def spec(self) -> ModelSpec:
        return resolve_spec(self.source)


def _check_form(form: str) -> str:
    if form not in FORMS:
        raise SpecError(f"unknown model form '{form}' (known: {', '.join(FORMS)})", field="form")
    return form


def _split_suffix(name: str) -> tuple[str, str | None]:
    """``yolov7-deploy`` -> (``yolov7``, ``deploy``) where the base is a zoo model."""
    for form, suffix in FORM_SUFFIXES.items():
        base = name.removesuffix(suffix)
        if base != name and is_zoo_model(base):
            return base, form
    return name, None


def model_ref(
    model: ModelSource | Path | ModelRef, *, form: str | None = None, deploy: bool = False
) -> ModelRef:
    """Parse a model reference once. ``deploy=True`` asks for the deploy form, like a
    ``-deploy`` suffix; an explicit ``form`` that contradicts the suffix is refused."""
    wanted = _check_form(form) if form is not None else ("deploy" if deploy else None)
    if isinstance(model, ModelRef):
        source, named = model.source, model.form
    elif isinstance(model, (ModelSpec, BlockGraph)):
        source, named = model, None
    else:
        source, named = _split_suffix(str(model))
    if wanted and named and named != "training" and wanted != named:
        raise SpecError(
            f"'{model}' names the {named} form but the {wanted} form was asked for", field="form"
        )
    return ModelRef(source, wanted or named or "training")


def resolve_spec(model: ModelSource | Path) -> ModelSpec:
    """A zoo name or a spec path -> the parsed spec. A YAML file with ``backbone`` and
    ``head`` lists is a YOLO layer-list config (YOLOv5 / YOLOv7 format) and is imported."""
    if isinstance(model, ModelSpec):
        return model
    if isinstance(model, BlockGraph):
        raise TypeError("resolve_spec: a BlockGraph has no spec text; use it as it is")
    text = str(model)
    # a path when it names a file that is there (os.path: False, not OSError, for a name too
    # long) or a YAML file; anything else, ``../../x`` too, is a zoo name: "unknown model"
    if text.endswith((".yaml", ".yml")) or os.path.exists(text):
        if is_layer_list_file(text):
            return load_layer_list(text).spec
        return load_spec(text)
    return load_zoo_spec(_split_suffix(text)[0])


def _overridden(
    graph: BlockGraph, nc: int | None, img_size: int | None, repconv: Policy | None
) -> BlockGraph:
    if nc is not None:
        if nc < 1 or nc > MAX_NC:
            raise SpecError(
                f"must be between 1 and {MAX_NC} (MAX_NC), got {shown(nc)}",
                source=graph.source,
                field="nc",
            )
        graph = graph.with_settings(nc=nc)
    if img_size is not None:
        graph = graph.with_settings(img_size=img_size)
    if repconv is not None:
        graph = graph.with_settings(repconv=repconv)
    return graph


def get_block_graph(
    model: ModelSource | Path | ModelRef,
    *,
    nc: int | None = None,
    img_size: int | None = None,
    deploy: bool = False,
    repconv: Policy | None = None,
) -> BlockGraph:
    """The model's BlockGraph with overrides applied; auxiliary heads dropped for the deploy
    form (fusing happens on the LayerGraph)."""
    ref = model_ref(model, deploy=deploy)
    source = ref.source
    graph = source if isinstance(source, BlockGraph) else build_block_graph(resolve_spec(source))
    graph = _overridden(graph, nc, img_size, repconv)
    return drop_aux_heads(graph) if ref.deploy else graph


def get_layer_graph(
    model: ModelSource | Path | ModelRef,
    *,
    nc: int | None = None,
    img_size: int | None = None,
    deploy: bool = False,
    repconv: Policy | None = None,
) -> LayerGraph:
    """The lowered graph in the reference's form (``deploy``: fused, no auxiliary heads).

    ``repconv`` places RepConvs (``none``, ``all``, ``planned`` or explicit positions) before
    fusing; it overrides a ``repconv`` key in the spec.
    """
    ref = model_ref(model, deploy=deploy)
    graph = get_block_graph(ref, nc=nc, img_size=img_size, repconv=repconv)
    layers = lower(graph)
    return layers if ref.form == "training" else fuse_layers(layers)


def create_model(
    model: ModelSource | Path | ModelRef,
    *,
    nc: int | None = None,
    img_size: int | None = None,
    deploy: bool = False,
    repconv: Policy | None = None,
) -> nn.Module:
    """Build the model as a torch module (a torch.fx GraphModule with generated forward).

    The deploy or fused form builds that architecture with fresh weights; to fuse trained
    weights, build the training form and call ``reparameterize`` on it.
    """
    from scaling_lab.nn import build_module

    layers = get_layer_graph(model, nc=nc, img_size=img_size, deploy=deploy, repconv=repconv)
    return build_module(layers)
