"""Built-in block types; importing this package registers them."""

from scaling_lab.graph.blocks import (  # noqa: F401
    basic,
    c3,
    csp,
    cspresnet,
    decoupled,
    elan,
    focus,
    head,
    pyramid,
    spp,
    stem,
    tiny,
)
