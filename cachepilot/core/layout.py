"""Per-row reductions and buffers that follow a tensor's memory layout.

A transformer's stack input is often a transposed view (DiT's patch embedding gives (B, tokens, dim)
with the tokens innermost). Flattening such a row copies it, and copying it into a row-major buffer
is a strided gather: on CPU each costs ~3x the arithmetic it feeds. Rows read in memory order and
buffers laid out like the tensor they hold keep the engine's per-step bookkeeping to plain passes.
"""

from __future__ import annotations

import torch


def memory_order(tensor: torch.Tensor) -> list[int]:
    """Dims after the batch dim, outermost in memory first (ties keep their order)."""
    return sorted(range(1, tensor.ndim), key=lambda dim: -tensor.stride(dim))


def rows_flat(tensor: torch.Tensor, order: list[int] | None = None) -> torch.Tensor:
    """(rows, features): each row's elements in memory order, a view when the tensor is dense (the order of
    a row's elements is the same for every tensor laid out alike, which is all a per-row L1 needs)."""
    order = memory_order(tensor) if order is None else order
    return tensor.permute(0, *order).flatten(1)


def zeros_stacked_like(like: torch.Tensor, size: int) -> torch.Tensor:
    """(size, *like.shape) zeros, every entry laid out as `like` is, so that copying `like` in is a plain copy."""
    order = memory_order(like)
    buffer = like.new_zeros((size, like.shape[0], *(like.shape[dim] for dim in order)))
    inverse = [0] * like.ndim
    for position, dim in enumerate([0, *order]):
        inverse[dim] = position
    return buffer.permute(0, *(1 + position for position in inverse))
