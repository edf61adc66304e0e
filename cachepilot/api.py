"""`cachepilot.enable(pipe, ...)` / `cachepilot.disable(pipe)`: the one-line way in.

diffusers' `enable_cache` only accepts diffusers' own config types, so cachepilot hooks the
transformer itself (cache-dit style) and leaves `_cache_config` alone.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch

from cachepilot.core.policy import CachePolicy
from cachepilot.errors import InvalidInputError
from cachepilot.policies.spec import make_policy
from cachepilot.core.predictor import Predictor
from cachepilot.predictors.spec import make_predictor
from cachepilot.predictors.taylor import Taylor
from cachepilot.runtime.engine import CacheEngine
from cachepilot.runtime.fingerprint import scheduler_differences, scheduler_fingerprint
from cachepilot.runtime.adapters import UnsupportedModelError
from cachepilot.runtime.hooks import apply_cache, get_engine, remove_cache, reset_cache
from cachepilot.runtime.pipelines import (
    PipelineCache, pipeline_transformers, track, tracker_of, unwrap as _unwrap, warn_refused,
)
from cachepilot.runtime.stats import CacheStats
from cachepilot.runtime.structure import Structure, make_structure, per_group


def _split(pipe_or_model: Any) -> tuple[torch.nn.Module, Any]:
    """(the pipeline's `transformer`, or its first other transformer when it has none; the pipeline), or
    (the model, None) for a bare transformer."""
    transformer = getattr(pipe_or_model, "transformer", None)
    if isinstance(transformer, torch.nn.Module):
        return _unwrap(transformer), pipe_or_model
    if transformer is None and isinstance(getattr(pipe_or_model, "components", None), dict):
        found = pipeline_transformers(pipe_or_model)[0]  # no `transformer` (Wan 2.2 low-noise only): the others
        if found:
            return next(iter(found.values())), pipe_or_model
    return _unwrap(pipe_or_model), None


def _cached_transformers(transformer: torch.nn.Module, pipeline: Any) -> tuple[torch.nn.Module, dict[str, Any]]:
    """(the transformer to cache first, {component name: every transformer to cache}): all of a pipeline's
    transformers the engine supports (Wan 2.2's transformer and transformer_2), with a warning naming those
    it cannot cache; a bare transformer, or a pipeline none of whose transformers is supported, as given (so
    `apply_cache` raises its clear error)."""
    if pipeline is None:
        return transformer, {"transformer": transformer}
    found, refused = pipeline_transformers(pipeline)
    if not found:
        return transformer, {"transformer": transformer}
    warn_refused(refused, found)
    return next(iter(found.values())), found


def _checkpoint_predictor(cache: Any, scheduler: Any, target: float | None = None) -> str:
    """The checkpoint's forecaster (`CacheCheckpoint.predictor_spec`), or Taylor-2 with one warning when the
    pipeline's scheduler differs from the one the checkpoint was fitted with: the head learned the residuals of
    that trajectory, and is not trusted on another."""
    differs = cache.scheduler_differences(scheduler)
    if not differs:
        return cache.predictor_spec(target)
    return _fall_back(cache, scheduler, differs, stacklevel=4)


def _fall_back(cache: Any, scheduler: Any, differs: list[str], stacklevel: int) -> str:
    """Warn that `scheduler` differs from the checkpoint's in the fields `differs`; the forecaster used instead."""
    from cachepilot.cache_checkpoint import FALLBACK_PREDICTOR

    fitted, here = cache.config()["scheduler"], scheduler_fingerprint(scheduler)
    detail = "; ".join(f"{k} {fitted[k]!r} when fitted, {here[k]!r} here" for k in differs)
    warnings.warn(f"the cache checkpoint {cache.root} was fitted with another scheduler ({detail}): its learned "
                  f"forecaster is not used out of the trajectory it learned, skipped steps forecast with "
                  f"Taylor-2 ({FALLBACK_PREDICTOR}) instead; refit on this pipeline (`cachepilot fit`) to use a "
                  "learned forecaster with this scheduler", UserWarning, stacklevel=stacklevel)
    return FALLBACK_PREDICTOR


class _SchedulerWatch:
    """Before each pipeline call: a scheduler replaced after `enable` by one the checkpoint was not fitted with
    gets the same warning and fallback as at `enable` (once; `enable` again restores the head)."""

    def __init__(self, cache: Any, transformer: torch.nn.Module):
        self.cache, self.transformer = cache, transformer
        self.fitted = cache.config().get("scheduler")

    def __call__(self, pipeline: Any) -> None:
        engine = get_engine(self.transformer)
        if engine is None or isinstance(engine.predictor, Taylor):
            return
        differs = scheduler_differences(self.fitted, getattr(pipeline, "scheduler", None))
        if differs:
            engine.predictor = make_predictor(_fall_back(self.cache, pipeline.scheduler, differs, stacklevel=4))
            engine.predictor.bind(self.transformer)
            reset_cache(self.transformer)  # states hold the head's history layout: the next call starts fresh


def _fresh(spec: Any) -> Any:
    """A policy or predictor for one more engine: a spec string as is, an object copied (they hold state)."""
    return spec if spec is None or isinstance(spec, str) else copy.deepcopy(spec)


def enable(
    pipe_or_model: Any,
    policy: str | CachePolicy = "always",
    predictor: str | Predictor | None = None,
    num_inference_steps: int | None = None,
    cfg_copies: int | None = None,
    checkpoint: str | None = None,
    speed: float | None = None,
    per_batch: bool = False,
    structure: str | Structure | None = None,
) -> CacheEngine:
    """Cache a pipeline's transformers (every one the engine supports: Wan 2.2's transformer and transformer_2;
    a warning names any it cannot cache) or a bare transformer, with `policy` and `predictor`.

    policy: a `CachePolicy` or a spec ('always', 'fixed:3', 'threshold:0.1', 'schedule:1101...');
    predictor: what skipped steps use ('reuse' by default, 'taylor:1', 'taylor:2', 'taylor:1.5': their mean).
    For a bare transformer outside a pipeline pass num_inference_steps (and cfg_copies=2 when
    the batch holds [cond; uncond]). Enabling again replaces the previous configuration.
    checkpoint / speed: a cache checkpoint (`CacheCheckpoint.from_pretrained`: a directory, a hub id, or the shipped
    one by default) and its target compute fraction (e.g. 0.3 = compute 30 % of the steps); FORECAST then uses the
    checkpoint's forecaster (`CacheCheckpoint.predictor_spec`: the gated head once calibrated, else the head, else
    Taylor-2). A checkpoint made for another backbone is refused, naming the field that differs; on a pipeline
    whose scheduler differs from the one it was fitted with (class, shift, solver order, prediction type, ...)
    FORECAST uses Taylor-2 instead of its head, with a warning naming the fields.
    per_batch: the learned policy takes one decision for the whole batch (see `LearnedPolicy`).
    structure: which blocks the cache may skip: 'F1B0' computes the first block at every step (its output is
    the probe the policy observes, and the forecast is applied on top of it) and caches the rest, DBCache style;
    'F<n>B<m>' also computes the last m. Compute is then counted in block evaluations (`last_stats`). 'G3,3'
    caches the blocks in two groups of three, each with its own residual history and predictor (one per group: a
    list, or 'dmd:1|reuse'; or one copied to each): one policy decides for every group (a checkpoint's too, with
    predictors given), a list of policies ('fixed:2|fixed:4') gives each group its own decisions.
    """
    structure = make_structure(structure)  # a bad spec fails before any hook or load
    if structure.num_groups > 1 and (checkpoint is not None or speed is not None) and predictor is None:
        raise InvalidInputError(f"structure {structure.spec()} forecasts each group on its own, and a cache "
                                "checkpoint's forecaster forecasts the whole cached stack: give a forecaster per group "
                                "(e.g. predictor='dmd:1|reuse') or one for every group, or no groups")
    transformer, pipeline = _split(pipe_or_model)
    transformer, cached = _cached_transformers(transformer, pipeline)
    if len(cached) > 1 and (checkpoint is not None or speed is not None):
        raise UnsupportedModelError(
            f"a cache checkpoint holds one transformer's policy and forecaster, and this pipeline runs several "
            f"({', '.join(cached)}): enable it with a training-free policy (e.g. 'fixed:2'), or pass one of its "
            "transformers to enable() to use a checkpoint fitted on that transformer")
    watch = None
    if checkpoint is not None or speed is not None:  # a learned policy checkpoint at a compute target
        from cachepilot.cache_checkpoint import DEFAULT_TARGET, CacheCheckpoint

        cache = CacheCheckpoint.from_pretrained(checkpoint)
        cache.check_backbone(transformer)
        policy = cache.policy(DEFAULT_TARGET if speed is None else speed, per_batch=per_batch)
        if predictor is None:  # the checkpoint's own forecaster, watched for a scheduler it was not fitted with
            predictor = _checkpoint_predictor(cache, getattr(pipeline, "scheduler", None),
                                              DEFAULT_TARGET if speed is None else speed)
            watch = _SchedulerWatch(cache, transformer) if pipeline is not None else None
    engine = apply_cache(transformer, per_group(policy, make_policy), per_group(predictor, make_predictor),
                         num_inference_steps=num_inference_steps, cfg_copies=cfg_copies, pipeline=pipeline,
                         structure=structure)
    for other in cached.values():
        if other is not transformer:
            apply_cache(other, per_group(_fresh(policy), make_policy), per_group(_fresh(predictor), make_predictor),
                        num_inference_steps=num_inference_steps, cfg_copies=cfg_copies, pipeline=pipeline,
                        structure=structure)
    if pipeline is not None:  # last_stats covers every transformer and phase of a whole pipeline call
        tracker = track(pipeline, cached)
        if watch is not None:
            tracker.before_call.append(watch)
    return engine


def disable(pipe_or_model: Any) -> None:
    """Remove cachepilot's hooks (from every transformer of a pipeline); the model computes every step again."""
    transformer, pipeline = _split(pipe_or_model)
    remove_cache(transformer)
    tracker = tracker_of(pipeline)
    if tracker is not None:
        for other in tracker.transformers.values():
            remove_cache(other)
        PipelineCache.release(pipeline)


def last_stats(pipe_or_model: Any) -> CacheStats | None:
    """Statistics of the last completed cached call (None if not enabled or nothing ran). For a pipeline: its
    last whole `__call__`, over every transformer it caches and every denoising phase (rows stacked,
    `CacheStats.of_phases`); the transformer's own last call when the pipeline was not called through."""
    transformer, pipeline = _split(pipe_or_model)
    tracker = tracker_of(pipeline)
    if tracker is not None and tracker.last_stats is not None:
        return tracker.last_stats
    engine = get_engine(transformer)
    return engine.last_stats if engine is not None else None
