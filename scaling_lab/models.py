"""One-call entry points: model name or spec path -> BlockGraph, LayerGraph, nn.Module.

A model is named by a zoo name (``yolov7``), a zoo name with ``-deploy`` (the deploy graph),
or the path of a spec file. ``nc`` and ``img_size`` override the spec's values.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from scaling_lab.graph.block_graph import BlockGraph, build_block_graph
from scaling_lab.layers.fuse import fuse_layers
from scaling_lab.layers.layer_graph import LayerGraph
from scaling_lab.layers.lower import lower
from scaling_lab.layers.plan_repconv import Policy
from scaling_lab.spec.errors import SpecError
from scaling_lab.spec.layer_list import is_layer_list_file, load_layer_list
from scaling_lab.spec.load import ModelSpec, load_spec
from scaling_lab.transforms.deploy import drop_aux_heads
from scaling_lab.zoo import list_models, load_zoo_spec

if TYPE_CHECKING:
    from torch import nn

DEPLOY_SUFFIX = "-deploy"


def _split_deploy(model: str) -> tuple[str, bool]:
    if model.endswith(DEPLOY_SUFFIX) and model[: -len(DEPLOY_SUFFIX)] in list_models():
        return model[: -len(DEPLOY_SUFFIX)], True
    return model, False


def resolve_spec(model: str | Path | ModelSpec) -> ModelSpec:
    """A zoo name or a spec path -> the parsed spec. A YAML file with ``backbone`` and
    ``head`` lists is a YOLO layer-list config (YOLOv5 / YOLOv7 format) and is imported."""
    if isinstance(model, ModelSpec):
        return model
    text = str(model)
    if text.endswith((".yaml", ".yml")) or Path(text).is_file():
        if is_layer_list_file(text):
            return load_layer_list(text).spec
        return load_spec(text)
    return load_zoo_spec(_split_deploy(text)[0])


def wants_deploy(model: str | Path | ModelSpec, deploy: bool) -> bool:
    return deploy or (isinstance(model, str) and _split_deploy(model)[1])


def get_block_graph(
    model: str | Path | ModelSpec | BlockGraph,
    *,
    nc: int | None = None,
    img_size: int | None = None,
    deploy: bool = False,
    repconv: Policy | None = None,
) -> BlockGraph:
    """The model's BlockGraph (aux heads dropped when ``deploy``), with overrides applied."""
    graph = model if isinstance(model, BlockGraph) else build_block_graph(resolve_spec(model))
    if nc is not None:
        if nc < 1:
            raise SpecError(f"must be >= 1, got {nc}", source=graph.source, field="nc")
        graph = graph.with_settings(nc=nc)
    if img_size is not None:
        graph = graph.with_settings(img_size=img_size)
    if repconv is not None:
        graph = graph.with_settings(repconv=repconv)
    if isinstance(model, BlockGraph):
        return drop_aux_heads(graph) if deploy else graph
    return drop_aux_heads(graph) if wants_deploy(model, deploy) else graph


def get_layer_graph(
    model: str | Path | ModelSpec | BlockGraph,
    *,
    nc: int | None = None,
    img_size: int | None = None,
    deploy: bool = False,
    repconv: Policy | None = None,
) -> LayerGraph:
    """Lowered graph; ``deploy`` gives the fused form without auxiliary heads.

    ``repconv`` places RepConvs (``none``, ``all``, ``planned`` or explicit positions) before
    fusing; it overrides a ``repconv`` key in the spec.
    """
    deploy = wants_deploy(model, deploy) if not isinstance(model, BlockGraph) else deploy
    graph = get_block_graph(model, nc=nc, img_size=img_size, deploy=deploy, repconv=repconv)
    layers = lower(graph)
    return fuse_layers(layers) if deploy else layers


def create_model(
    model: str | Path | ModelSpec | BlockGraph,
    *,
    nc: int | None = None,
    img_size: int | None = None,
    deploy: bool = False,
    repconv: Policy | None = None,
) -> nn.Module:
    """Build the model as a torch module (a torch.fx GraphModule with generated forward).

    ``deploy=True`` builds the fused architecture with fresh weights; to fuse trained
    weights, build the training form and call ``reparameterize`` on it.
    """
    from scaling_lab.nn import build_module

    layers = get_layer_graph(model, nc=nc, img_size=img_size, deploy=deploy, repconv=repconv)
    return build_module(layers)
