"""BlockGraph: named blocks with meaning, and the registry of block types."""
