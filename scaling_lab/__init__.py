"""scaling_lab: design, scale and profile concatenation-based real-time detectors.

The flow: spec text -> BlockGraph -> (transforms) -> LayerGraph -> nn.Module -> analyzers.
"""

from scaling_lab.analyze.complexity import Complexity, count_graph
from scaling_lab.analyze.profile import Profile, profile
from scaling_lab.graph.block_graph import BlockGraph, BlockNode, build_block_graph, dump_spec
from scaling_lab.graph.registry import FieldError, register_block, registered_blocks
from scaling_lab.layers.builder import LayerBuilder, Port
from scaling_lab.layers.fuse import fuse_layers
from scaling_lab.layers.layer_graph import LayerGraph
from scaling_lab.layers.lower import lower
from scaling_lab.layers.plan_repconv import plan_repconv
from scaling_lab.models import create_model, get_block_graph, get_layer_graph, resolve_spec
from scaling_lab.spec import ModelSpec, SpecError, load_spec, parse_spec
from scaling_lab.transforms.deploy import drop_aux_heads
from scaling_lab.transforms.scale import scale
from scaling_lab.zoo import list_models

__version__ = "0.1.0"

# sweeps pull in pandas (and Ray when run): imported on first use, not with the package
_LAZY = {
    "Experiment": "scaling_lab.sweep.experiment",
    "load_experiment": "scaling_lab.sweep.experiment",
    "run_sweep": "scaling_lab.sweep.runner",
    "write_sweep_report": "scaling_lab.sweep.report",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'scaling_lab' has no attribute '{name}'")


__all__ = [
    "BlockGraph",
    "BlockNode",
    "Complexity",
    "Experiment",
    "FieldError",
    "LayerBuilder",
    "LayerGraph",
    "ModelSpec",
    "Port",
    "Profile",
    "SpecError",
    "build_block_graph",
    "count_graph",
    "create_model",
    "drop_aux_heads",
    "dump_spec",
    "fuse_layers",
    "get_block_graph",
    "get_layer_graph",
    "list_models",
    "load_experiment",
    "load_spec",
    "lower",
    "parse_spec",
    "plan_repconv",
    "profile",
    "register_block",
    "registered_blocks",
    "resolve_spec",
    "run_sweep",
    "scale",
    "write_sweep_report",
]
