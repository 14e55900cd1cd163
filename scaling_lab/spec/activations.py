"""The activations a spec may name: each name and its torch module, declared once."""

from __future__ import annotations

from typing import Any

from scaling_lab.spec.errors import SpecError

# name -> (torch.nn class name, constructor keywords)
ACTIVATIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "silu": ("SiLU", {"inplace": True}),
    "leaky_relu": ("LeakyReLU", {"negative_slope": 0.1, "inplace": True}),
    "relu": ("ReLU", {"inplace": True}),
    "hardswish": ("Hardswish", {"inplace": True}),
    "mish": ("Mish", {"inplace": True}),
    "sigmoid": ("Sigmoid", {}),
    "hardsigmoid": ("Hardsigmoid", {}),
    "identity": ("Identity", {}),
}


def check_activation(name: str) -> None:
    """Refuse an activation name nothing can build."""
    if name not in ACTIVATIONS:
        raise SpecError(
            f"unknown activation '{name}' (known: {', '.join(ACTIVATIONS)})", field="act"
        )


def module_text(name: str) -> str:
    """How YOLO layer-list configs write the activation: ``nn.LeakyReLU(0.1)``, ``nn.SiLU()``."""
    class_name, kwargs = ACTIVATIONS[name]
    return f"nn.{class_name}({kwargs.get('negative_slope', '')})"


def make_activation(name: str) -> Any:
    """The torch module of an activation (imports torch)."""
    from torch import nn

    class_name, kwargs = ACTIVATIONS[name]
    return getattr(nn, class_name)(**kwargs)
