"""Compile a cached transformer's blocks (inductor), leaving cachepilot's decisions eager."""

from __future__ import annotations

import torch

from cachepilot.runtime.adapters import get_adapter


def compile_blocks(transformer: torch.nn.Module, **compile_kwargs) -> None:
    """diffusers' regional compilation (`fullgraph=True` unless told otherwise) where the model names its
    repeated blocks, else `block.compile()` on each block of the stack (what `compile_repeated_blocks` does)."""
    compile_kwargs = {"fullgraph": True, **compile_kwargs}
    if getattr(transformer, "_repeated_blocks", None):
        transformer.compile_repeated_blocks(**compile_kwargs)
    else:
        for block in get_adapter(transformer).blocks(transformer):
            block.compile(**compile_kwargs)
