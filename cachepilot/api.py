"""`cachepilot.enable(pipe, ...)` / `cachepilot.disable(pipe)`: the one-line way in.

diffusers' `enable_cache` only accepts diffusers' own config types, so cachepilot hooks the
transformer itself (cache-dit style) and leaves `_cache_config` alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cachepilot.core.policy import CachePolicy
from cachepilot.policies.spec import make_policy
from cachepilot.core.predictor import Predictor
from cachepilot.predictors.spec import make_predictor
from cachepilot.runtime.engine import CacheEngine
from cachepilot.runtime.hooks import apply_cache, get_engine, remove_cache
from cachepilot.runtime.stats import CacheStats


def _unwrap(model: Any) -> Any:
    """The module under `torch.compile`'s wrapper: hooks go on the real blocks, which the compiled wrapper
    calls (so enabling before or after compiling both work)."""
    original = getattr(model, "_orig_mod", None)
    return original if isinstance(original, torch.nn.Module) else model


def _split(pipe_or_model: Any) -> tuple[torch.nn.Module, Any]:
    transformer = getattr(pipe_or_model, "transformer", None)
    if isinstance(transformer, torch.nn.Module):
        return _unwrap(transformer), pipe_or_model
    return _unwrap(pipe_or_model), None


def enable(
    pipe_or_model: Any,
    policy: str | CachePolicy = "always",
    predictor: str | Predictor | None = None,
    num_inference_steps: int | None = None,
    cfg_copies: int | None = None,
    checkpoint: str | None = None,
    speed: float | None = None,
    per_batch: bool = False,
) -> CacheEngine:
    """Cache a pipeline's transformer (or a bare transformer) with `policy` and `predictor`.

    policy: a `CachePolicy` or a spec ('always', 'fixed:3', 'threshold:0.1', 'schedule:1101...');
    predictor: what skipped steps use ('reuse' by default, 'taylor:1', 'taylor:2', 'taylor:1.5': their mean).
    For a bare transformer outside a pipeline pass num_inference_steps (and cfg_copies=2 when
    the batch holds [cond; uncond]). Enabling again replaces the previous configuration.
    checkpoint / speed: a cache checkpoint (`CacheCheckpoint.from_pretrained`: a directory, a hub id, or the shipped
    one by default) and its target compute fraction (e.g. 0.3 = compute 30 % of the steps); FORECAST then uses the
    checkpoint's forecaster (`CacheCheckpoint.predictor_spec`: the gated head once calibrated, else the head, else
    Taylor-2). A checkpoint made for another backbone is refused, naming the field that differs.
    per_batch: the learned policy takes one decision for the whole batch (see `LearnedPolicy`).
    """
    transformer, pipeline = _split(pipe_or_model)
    if checkpoint is not None or speed is not None:  # a learned policy checkpoint at a compute target
        from cachepilot.cache_checkpoint import DEFAULT_TARGET, CacheCheckpoint

        cache = CacheCheckpoint.from_pretrained(checkpoint)
        cache.check_backbone(transformer)
        policy = cache.policy(DEFAULT_TARGET if speed is None else speed, per_batch=per_batch)
        predictor = predictor or cache.predictor_spec()
    return apply_cache(transformer, make_policy(policy), make_predictor(predictor),
                       num_inference_steps=num_inference_steps, cfg_copies=cfg_copies, pipeline=pipeline)


def head_spec(predictor_dir: Path) -> str:
    """A head directory's predictor spec (`cache_checkpoint.head_spec`): `gated:` once its gate is calibrated."""
    from cachepilot.cache_checkpoint import head_spec as spec

    return spec(predictor_dir)


def resolve_checkpoint(checkpoint: str | Path | None) -> tuple[Path, Path | None]:
    """(policy directory, predictor directory or None) of a cache checkpoint (`CacheCheckpoint.from_pretrained`:
    the shipped one by default, a `fit` directory, a bare policy directory or a hub id)."""
    from cachepilot.cache_checkpoint import CacheCheckpoint

    cache = CacheCheckpoint.from_pretrained(checkpoint)
    return cache.policy_dir if cache.policy_dir is not None else cache.root, cache.predictor_dir


def disable(pipe_or_model: Any) -> None:
    """Remove cachepilot's hooks; the model computes every step again."""
    remove_cache(_split(pipe_or_model)[0])


def last_stats(pipe_or_model: Any) -> CacheStats | None:
    """Statistics of the last completed cached call (None if not enabled or nothing ran)."""
    engine = get_engine(_split(pipe_or_model)[0])
    return engine.last_stats if engine is not None else None
