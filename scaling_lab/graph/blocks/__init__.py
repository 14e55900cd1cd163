"""Built-in block types; importing this package registers them."""

from scaling_lab.graph.blocks import basic, csp, elan, head, pyramid  # noqa: F401
