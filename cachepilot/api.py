"""`cachepilot.enable(pipe, ...)` / `cachepilot.disable(pipe)`: the one-line way in.

diffusers' `enable_cache` only accepts diffusers' own config types, so cachepilot hooks the
transformer itself (cache-dit style) and leaves `_cache_config` alone.
"""

from __future__ import annotations

from typing import Any

import torch

from cachepilot.policies.base import CachePolicy
from cachepilot.policies.spec import make_policy
from cachepilot.predictors.base import Predictor
from cachepilot.predictors.spec import make_predictor
from cachepilot.runtime.engine import CacheEngine
from cachepilot.runtime.hooks import apply_cache, get_engine, remove_cache
from cachepilot.runtime.stats import CacheStats


def _split(pipe_or_model: Any) -> tuple[torch.nn.Module, Any]:
    transformer = getattr(pipe_or_model, "transformer", None)
    if isinstance(transformer, torch.nn.Module):
        return transformer, pipe_or_model
    return pipe_or_model, None


def enable(
    pipe_or_model: Any,
    policy: str | CachePolicy = "always",
    predictor: str | Predictor | None = None,
    num_inference_steps: int | None = None,
    cfg_copies: int | None = None,
    checkpoint: str | None = None,
    speed: float | None = None,
) -> CacheEngine:
    """Cache a pipeline's transformer (or a bare transformer) with `policy` and `predictor`.

    policy: a `CachePolicy` or a spec ('always', 'fixed:3', 'threshold:0.1', 'schedule:1101...');
    predictor: what skipped steps use ('reuse' by default, 'taylor:1', 'taylor:2').
    For a bare transformer outside a pipeline pass num_inference_steps (and cfg_copies=2 when
    the batch holds [cond; uncond]). Enabling again replaces the previous configuration.
    checkpoint / speed: a learned policy directory (default: the shipped one) and its target
    compute fraction (e.g. 0.3 = compute 30 % of the steps); FORECAST then uses the learned head.
    """
    transformer, pipeline = _split(pipe_or_model)
    if checkpoint is not None or speed is not None:  # a learned policy checkpoint at a compute target
        from cachepilot.checkpoints import DEFAULT_POLICY
        from cachepilot.policies.learned import LearnedPolicy

        policy = LearnedPolicy(checkpoint or DEFAULT_POLICY, target=0.3 if speed is None else speed)
        predictor = predictor or "learned"
    return apply_cache(transformer, make_policy(policy), make_predictor(predictor),
                       num_inference_steps=num_inference_steps, cfg_copies=cfg_copies, pipeline=pipeline)


def disable(pipe_or_model: Any) -> None:
    """Remove cachepilot's hooks; the model computes every step again."""
    remove_cache(_split(pipe_or_model)[0])


def last_stats(pipe_or_model: Any) -> CacheStats | None:
    """Statistics of the last completed cached call (None if not enabled or nothing ran)."""
    engine = get_engine(_split(pipe_or_model)[0])
    return engine.last_stats if engine is not None else None
