"""Everything k0slab does with k0s itself: its binary, config, tokens and services."""
