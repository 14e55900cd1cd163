"""Build: LayerGraph -> torch module with a generated forward (torch.fx GraphModule)."""

from scaling_lab.nn.fx_build import build_module

__all__ = ["build_module"]
