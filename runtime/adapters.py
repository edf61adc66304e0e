"""Where a diffusers transformer keeps its block stack, and how its blocks are called.

The cache engine works on the *stack*: everything from the first block's input to the last block's
output. For each supported model class an adapter names the block lists (Flux has two, run one
after the other), the streams a block passes on, and what a skipped block must return.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from cachepilot.errors import CachepilotError


class UnsupportedModelError(CachepilotError, TypeError):
    """enable()/apply_cache() was given a model the engine has no adapter for."""


@dataclass(frozen=True)
class StackAdapter:
    """block_lists: attribute names of the block lists, in execution order.
    streams: the names of the tensors a block passes to the next one; the first is the stream the
    model uses after the stack, whose residual (output - input) is what gets cached.
    returns_tuple: blocks return `(encoder_hidden_states, hidden_states)` instead of one tensor."""

    model_class: str
    block_lists: tuple[str, ...]
    streams: tuple[str, ...]
    returns_tuple: bool

    def blocks(self, model: torch.nn.Module) -> list[torch.nn.Module]:
        return [block for name in self.block_lists for block in getattr(model, name)]

    def bind(self, block: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
        """A block call's arguments by name (positional ones included)."""
        bound = _signature(type(block)).bind(block, *args, **kwargs)
        arguments = dict(bound.arguments)
        arguments.pop("self", None)
        return arguments

    def read_output(self, output: Any, call: dict[str, Any]) -> dict[str, Any]:
        """A block's output as streams."""
        if self.returns_tuple:
            encoder_hidden_states, hidden_states = output
            return {"hidden_states": hidden_states, "encoder_hidden_states": encoder_hidden_states}
        return {"hidden_states": output}

    def make_output(self, streams: dict[str, Any]) -> Any:
        """What a block returns, built from streams (used by blocks that are passed through)."""
        if self.returns_tuple:
            return streams.get("encoder_hidden_states"), streams["hidden_states"]
        return streams["hidden_states"]


_SIGNATURES: dict[type, inspect.Signature] = {}


def _signature(cls: type) -> inspect.Signature:
    if cls not in _SIGNATURES:
        _SIGNATURES[cls] = inspect.signature(cls.forward)
    return _SIGNATURES[cls]


ADAPTERS: dict[str, StackAdapter] = {
    adapter.model_class: adapter
    for adapter in (
        StackAdapter("DiTTransformer2DModel", ("transformer_blocks",), ("hidden_states",), False),
        StackAdapter("PixArtTransformer2DModel", ("transformer_blocks",), ("hidden_states",), False),
        StackAdapter("SD3Transformer2DModel", ("transformer_blocks",), ("hidden_states", "encoder_hidden_states"), True),
        StackAdapter(
            "FluxTransformer2DModel", ("transformer_blocks", "single_transformer_blocks"),
            ("hidden_states", "encoder_hidden_states"), True,
        ),
    )
}


def get_adapter(model: torch.nn.Module) -> StackAdapter:
    """The adapter for `model`'s class; a clear error naming the supported classes otherwise."""
    name = type(model).__name__
    if name not in ADAPTERS:
        supported = ", ".join(sorted(ADAPTERS))
        raise UnsupportedModelError(
            f"cachepilot cannot cache a {name}: supported transformers are {supported} "
            "(pass the pipeline or its .transformer)"
        )
    adapter = ADAPTERS[name]
    if not adapter.blocks(model):
        raise UnsupportedModelError(f"{name} has no transformer blocks to cache")
    return adapter


def select_rows(value: Any, rows: torch.Tensor, batch_rows: int) -> Any:
    """Slice a block argument to the given batch rows when it carries a batch dimension.

    Tensors whose first dimension is the batch are sliced; tuples (rotary embeddings), dicts
    (attention kwargs) and scalars are shared by all rows and passed as they are.
    """
    if isinstance(value, torch.Tensor) and value.ndim >= 1 and value.shape[0] == batch_rows:
        return value.index_select(0, rows)
    return value


def supported_models() -> Sequence[str]:
    return sorted(ADAPTERS)
