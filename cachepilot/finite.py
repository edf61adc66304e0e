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


def saved_weight_names(directory) -> set[str] | None:
    """The tensor names a diffusers model directory stores (one safetensors file, or a sharded index);
    None when that cannot be told without unpickling (.bin weights, several variants)."""
    import json
    from pathlib import Path

    from safetensors import safe_open

    directory = Path(directory)
    indexes = sorted(directory.glob("*.safetensors.index.json"))
    if len(indexes) == 1:
        try:
            weight_map = json.loads(indexes[0].read_text())["weight_map"]
        except (ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"{indexes[0]} is not a valid weight index ({err})") from None
        return set(weight_map)
    files = sorted(directory.glob("*.safetensors"))
    if len(files) != 1:
        return None
    try:
        with safe_open(str(files[0]), "pt") as f:
            return set(f.keys())
    except Exception as err:
        raise CheckpointError(f"{files[0]} could not be read, it looks corrupt: {err}") from None


def check_strict_load(model: torch.nn.Module, directory, what: str) -> None:
    """Missing or unexpected weights are an error (diffusers only warns, and leaves missing ones
    uninitialised: a config.json saying 7 layers over 6 layers of weights gives a block of garbage)."""
    saved = saved_weight_names(directory)
    if saved is None:
        return
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - saved), sorted(saved - expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} weight(s) the config needs are missing (first: {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} stored weight(s) the config has no place for (first: {unexpected[0]})")
        raise CheckpointError(f"{what} at {directory} does not match its config.json: {'; '.join(parts)}")
