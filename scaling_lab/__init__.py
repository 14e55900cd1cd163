"""scaling_lab: design, scale and profile concatenation-based real-time detectors.

The flow: spec text -> BlockGraph -> (transforms) -> LayerGraph -> nn.Module -> analyzers.
Importing the package does not import torch; the names that need it (building, fusing,
timing, training, sweeps) load on first use.
"""

from scaling_lab.analyze.complexity import Complexity, count_graph
from scaling_lab.analyze.profile import Profile, profile
from scaling_lab.errors import UserError
from scaling_lab.graph.block_graph import BlockGraph, BlockNode, build_block_graph, dump_spec
from scaling_lab.graph.lower import lower
from scaling_lab.graph.registry import FieldError, register_block, registered_blocks
from scaling_lab.layers.builder import LayerBuilder
from scaling_lab.layers.fuse import fuse_layers
from scaling_lab.layers.layer_graph import Layer, LayerGraph
from scaling_lab.layers.plan_repconv import plan_repconv
from scaling_lab.models import (
    ModelRef,
    create_model,
    get_block_graph,
    get_layer_graph,
    model_ref,
    resolve_spec,
)
from scaling_lab.ops.base import Op, OpCount, Port, Shape, TorchCall
from scaling_lab.spec import ModelSpec, SpecError, load_spec, parse_spec
from scaling_lab.spec.settings import ModelSettings
from scaling_lab.transforms.deploy import drop_aux_heads
from scaling_lab.transforms.scale import scale
from scaling_lab.zoo import list_models

__version__ = "0.1.0"

# public name -> (module, attribute), loaded on first use (torch, pandas and Ray are heavy).
# Training is `run_training` / `resume_training`: `scaling_lab.train` is the subpackage.
_LAZY = {
    "build_module": ("scaling_lab.nn.fx_build", "build_module"),
    "reparameterize": ("scaling_lab.nn.reparam", "reparameterize"),
    "fuse_check": ("scaling_lab.analyze.fuse_check", "fuse_check"),
    "benchmark": ("scaling_lab.analyze.latency", "benchmark"),
    "build_latency_table": ("scaling_lab.analyze.latency_build", "build_table"),
    "load_latency_table": ("scaling_lab.analyze.latency_table", "load_table"),
    "predict_latency": ("scaling_lab.analyze.latency_predict", "predict_latency"),
    "TrainConfig": ("scaling_lab.train.config", "TrainConfig"),
    "run_training": ("scaling_lab.train.trainer", "train"),
    "resume_training": ("scaling_lab.train.trainer", "resume"),
    "evaluate_checkpoint": ("scaling_lab.train.evaluation", "evaluate_checkpoint"),
    "evaluate_model": ("scaling_lab.train.evaluation", "evaluate_model"),
    "HeadFamily": ("scaling_lab.train.heads", "HeadFamily"),
    "head_family": ("scaling_lab.train.heads", "head_family"),
    "register_head": ("scaling_lab.train.heads", "register_head"),
    "with_decode": ("scaling_lab.train.heads", "with_decode"),
    "convert_weights": ("scaling_lab.weights", "convert_weights"),
    "Experiment": ("scaling_lab.sweep.experiment_format", "Experiment"),
    "load_experiment": ("scaling_lab.sweep.experiment", "load_experiment"),
    "run_sweep": ("scaling_lab.sweep.runner", "run_sweep"),
    "screen_designs": ("scaling_lab.sweep.screen", "screen_designs"),
    "all_proxies": ("scaling_lab.analyze.proxies", "all_proxies"),
    "rescore_calibration": ("scaling_lab.report.calibration_proxies", "rescore_calibration"),
    "write_sweep_report": ("scaling_lab.report.sweep_report", "write_sweep_report"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'scaling_lab' has no attribute '{name}'")


__all__ = [
    "BlockGraph",
    "BlockNode",
    "Complexity",
    "FieldError",
    "Layer",
    "LayerBuilder",
    "LayerGraph",
    "ModelRef",
    "ModelSettings",
    "ModelSpec",
    "Op",
    "OpCount",
    "Port",
    "Profile",
    "Shape",
    "SpecError",
    "TorchCall",
    "UserError",
    "build_block_graph",
    "count_graph",
    "create_model",
    "drop_aux_heads",
    "dump_spec",
    "fuse_layers",
    "get_block_graph",
    "get_layer_graph",
    "list_models",
    "load_spec",
    "lower",
    "model_ref",
    "parse_spec",
    "plan_repconv",
    "profile",
    "register_block",
    "registered_blocks",
    "resolve_spec",
    "scale",
    *_LAZY,
]
