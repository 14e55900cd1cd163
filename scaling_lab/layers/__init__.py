"""LayerGraph: primitive ops with shapes, lowered from a BlockGraph (no torch)."""
