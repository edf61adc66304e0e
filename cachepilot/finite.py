"""Finite-value checks: NaN / inf in weights, images or features end in a clear error, never in a
segfault (MKL on NaN inside the Fréchet distance) or a silently wrong figure (an all-white grid, a NaN PSNR)."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from cachepilot.errors import CachepilotError, CheckpointError, InvalidInputError


class NonFiniteError(InvalidInputError):
    """Images, features or latents hold NaN or inf."""


def _describe(tensor: torch.Tensor) -> str:
    nan = int(torch.isnan(tensor).sum())
    inf = int(torch.isinf(tensor).sum())
    return f"{nan} NaN and {inf} inf of {tensor.numel()} values"


def check_finite(tensor: torch.Tensor, what: str, error: type[CachepilotError] = NonFiniteError) -> torch.Tensor:
    """Raise `error` naming `what` when `tensor` holds NaN or inf; returns the tensor unchanged."""
    if tensor.is_floating_point() or tensor.is_complex():
        if not bool(torch.isfinite(tensor).all()):
            raise error(f"{what} hold non-finite values ({_describe(tensor)})")
    return tensor


def check_finite_weights(named: Iterable[tuple[str, torch.Tensor]], source: str) -> None:
    """A `CheckpointError` naming the first tensor of a loaded checkpoint that holds NaN or inf."""
    for name, tensor in named:
        if (tensor.is_floating_point() or tensor.is_complex()) and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{source}: the weight {name} holds non-finite values ({_describe(tensor)}); "
                                  "the checkpoint is corrupt")
