"""Transforms: BlockGraph -> BlockGraph (pure functions; inputs are never changed)."""
