"""The cache engine and its hooks on diffusers transformers (cache engine issue)."""
