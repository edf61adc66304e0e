"""The methods the benchmark sweeps: ours, and peers installed from the package registry.

Each method installs itself on a pipeline for one knob value and removes itself afterwards; the
runner measures them all the same way (block evaluations, wall time, fidelity, quality).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

import cachepilot
from cachepilot.cache_checkpoint import CacheCheckpoint
from cachepilot.driver import unhooked_twin
from cachepilot.policies.baselines import TAYLORSEER_WARMUP, taylorseer_mask
from cachepilot.policies.prior import SchedulePrior
from cachepilot.searched import mask_string


@dataclass
class Method:
    """apply(pipe, knob) -> the pipeline to sample with (may be a copy); remove(pipe) undoes it;
    before_call(pipe) runs before each generation call (peers that need an explicit reset)."""

    name: str
    knobs: Sequence[Any]
    apply: Callable[[Any, Any], Any]
    remove: Callable[[Any], None]
    before_call: Callable[[Any], None] = field(default=lambda pipe: None)
    family: str = "cachepilot"
    steps_for: Callable[[Any, int], int] | None = None  # sample with fewer steps instead of caching
    needs_fit: bool = False  # it reads a cache checkpoint (`cachepilot fit`): not something a user runs for free


def ours_method(name: str, policy: Callable[[Any], str], predictor: str | Callable[[Any], str],
                knobs: Sequence[Any]) -> Method:
    """predictor: a spec, or the spec per knob (a lean checkpoint's forecaster per target)."""
    def apply(pipe, knob):
        cachepilot.enable(pipe, policy(knob), predictor(knob) if callable(predictor) else predictor)
        return pipe

    return Method(name, knobs, apply, cachepilot.disable)


def cachepilot_methods(steps: int = 50, cache: Path | None | str = "default") -> list[Method]:
    """Ours: training-free policies x predictors, fewer steps, and a cache checkpoint's learned methods
    (cache: a `fit` directory or hub id; "default": the shipped cache checkpoint; None: none)."""
    intervals = [2, 3, 4, 5, 6]
    deltas = [0.02, 0.03, 0.05, 0.07, 0.1, 0.2, 0.3, 0.5]  # compute fractions ~0.5 down to ~0.03
    return [
        ours_method("always", lambda _: "always", "reuse", [None]),  # the engine at full compute: its overhead
        ours_method("fixed+reuse", lambda n: f"fixed:{n}", "reuse", intervals),
        ours_method("fixed+taylor1", lambda n: f"fixed:{n}", "taylor:1", intervals),
        ours_method("fixed+taylor2", lambda n: f"fixed:{n}", "taylor:2", intervals),
        ours_method("threshold+reuse", lambda d: f"threshold:{d}", "reuse", deltas),
        ours_method("threshold+taylor1", lambda d: f"threshold:{d}", "taylor:1", deltas),
        ours_method("threshold+taylor2", lambda d: f"threshold:{d}", "taylor:2", deltas),
        # diffusers' TaylorSeer schedule with our forecasters: the same computes, only the predictor differs
        ours_method("ts-schedule+taylor1", lambda n: "schedule:" + taylorseer_mask(n, steps), "taylor:1", intervals),
        ours_method("ts-schedule+taylor2", lambda n: "schedule:" + taylorseer_mask(n, steps), "taylor:2", intervals),
    ] + _learned_methods(steps, intervals, deltas, cache)


def fewer_steps() -> Method:
    """The free baseline: the same scheduler with round(f x steps) steps, no cache at all."""
    return Method("fewer-steps", [0.2, 0.3, 0.4, 0.5], lambda pipe, f: pipe, lambda pipe: None,
                  steps_for=lambda f, steps: max(1, round(f * steps)))


def _searched_schedules(steps: int, cache: CacheCheckpoint) -> list[Method]:
    """The best fixed schedules of an offline search (`cachepilot search-schedule`, `fit`), when the cache has them:
    those searched at the bench's count (`searched_schedules_<steps>.json`, e.g. merged into the policy's prior with
    `add-prior`), else the main file's."""
    found = cache.schedules(steps)
    if found is None:
        return []
    masks = found.masks()
    # the cache's own forecaster when the search used its head; a lean fit's, per target
    predictor = lambda f: cache.schedule_predictor(found, f)  # noqa: E731
    if found.num_steps != steps:  # searched at another step count: its masks resampled to this one, as the
        prior = SchedulePrior(masks)  # learned policy's prior resamples them
        resampled = {f: mask_string(prior.mask(f, steps)) for f in masks}
        return [ours_method("resampled-schedule", lambda f: "schedule:" + resampled[f], predictor, sorted(masks))]
    return [ours_method("searched-schedule", lambda f: "schedule:" + masks[f], predictor, sorted(masks)),
            # the same decisions, Taylor-1 forecasting: whether the schedule or the forecaster is the weak part
            ours_method("searched-schedule+taylor1", lambda f: "schedule:" + masks[f], "taylor:1", sorted(masks))]


def _learned_methods(steps: int, intervals: Sequence[int], deltas: Sequence[float],
                     cache: Path | None | str) -> list[Method]:
    """Fewer steps; and, from a cache checkpoint (default: the shipped one), the searched schedules, the
    learned policy and the usual schedules with its learned forecaster (marked `needs_fit`)."""
    if cache is None:
        return [fewer_steps()]
    return [fewer_steps()] + [replace(m, needs_fit=True) for m in _checkpoint_methods(steps, intervals, deltas, cache)]


def _checkpoint_methods(steps: int, intervals: Sequence[int], deltas: Sequence[float],
                        cache: Path | str) -> list[Method]:
    methods: list[Method] = []
    checkpoint = CacheCheckpoint.from_pretrained(None if cache == "default" else cache)
    methods += _searched_schedules(steps, checkpoint)
    forecaster = checkpoint.predictor_spec()  # the one rule: gated head, else head, else Taylor-2
    if checkpoint.policy_dir is not None:
        targets = [0.2, 0.3, 0.4, 0.5]
        methods.append(ours_method("learned-policy", lambda f: checkpoint.policy(f), forecaster, targets))
        methods.append(ours_method("learned-policy-batch", lambda f: checkpoint.policy(f, per_batch=True),
                                   forecaster, targets))
        methods.append(ours_method("learned-policy+taylor1", lambda f: checkpoint.policy(f), "taylor:1", targets))
        # the actor's own decisions where, outside its trained step counts, the policy follows a searched prior
        methods.append(ours_method("learned-policy-actor", lambda f: checkpoint.policy(f, actor_outside_range=True),
                                   forecaster, targets))
    head = checkpoint.predictor_dir
    if head is None:
        return methods
    learned = f"learned:{head}"
    methods += [
        ours_method("fixed+learned", lambda n: f"fixed:{n}", learned, intervals),
        ours_method("threshold+learned", lambda d: f"threshold:{d}", learned, deltas),
        ours_method("ts-schedule+learned", lambda n: "schedule:" + taylorseer_mask(n, steps), learned, intervals),
    ]
    if not checkpoint.has_gate:
        return methods
    gated = forecaster  # the head with its calibrated Taylor fallback: what `enable(checkpoint=...)` forecasts with
    return methods + [
        ours_method("fixed+gated", lambda n: f"fixed:{n}", gated, intervals),
        ours_method("threshold+gated", lambda d: f"threshold:{d}", gated, deltas),
        ours_method("ts-schedule+gated", lambda n: "schedule:" + taylorseer_mask(n, steps), gated, intervals),
    ]


# -- diffusers' own cache hooks --------------------------------------------------------------
def _remove_diffusers_hooks(pipe: Any, *names: str) -> None:
    from diffusers.hooks import HookRegistry

    registry = HookRegistry.check_if_exists_or_initialize(pipe.transformer)
    for name in names:
        registry.remove_hook(name, recurse=True)
    registry.invalidate_child_registries_cache()


def diffusers_methods() -> list[Method]:
    from diffusers.hooks import (
        FirstBlockCacheConfig, HookRegistry, TaylorSeerCacheConfig, apply_first_block_cache, apply_taylorseer_cache,
    )
    from diffusers.hooks.first_block_cache import _FBC_BLOCK_HOOK, _FBC_LEADER_BLOCK_HOOK
    from diffusers.hooks.taylorseer_cache import _TAYLORSEER_CACHE_HOOK

    def taylorseer(pipe, interval):
        # diffusers' default identifiers target modules named `...attn`; DiT's are attn1/attn2, so
        # cache whole blocks (the granularity TaylorSeer uses for DiT in its paper).
        apply_taylorseer_cache(pipe.transformer, TaylorSeerCacheConfig(
            cache_interval=interval, disable_cache_before_step=TAYLORSEER_WARMUP, max_order=1,
            taylor_factors_dtype=torch.float32, cache_identifiers=[r"transformer_blocks\.\d+"]))
        HookRegistry.check_if_exists_or_initialize(pipe.transformer).invalidate_child_registries_cache()
        return pipe

    def first_block(pipe, threshold):
        apply_first_block_cache(pipe.transformer, FirstBlockCacheConfig(threshold=threshold))
        HookRegistry.check_if_exists_or_initialize(pipe.transformer).invalidate_child_registries_cache()
        return pipe

    return [
        Method("diffusers-taylorseer", [2, 3, 4, 5, 6], taylorseer,
               lambda pipe: _remove_diffusers_hooks(pipe, _TAYLORSEER_CACHE_HOOK), family="diffusers"),
        Method("diffusers-fbcache", [0.02, 0.05, 0.1, 0.2, 0.4], first_block,
               lambda pipe: _remove_diffusers_hooks(pipe, _FBC_LEADER_BLOCK_HOOK, _FBC_BLOCK_HOOK),
               family="diffusers"),
    ]


# -- cache-dit ---------------------------------------------------------------------------------
CACHE_DIT_THRESHOLDS = [0.04, 0.08, 0.12, 0.2, 0.3, 0.5, 0.8, 1.2]  # compute ~1.0 down to its floor (~0.25)
# (name, Fn, Bn, calibrator): its default F8B0 needs 8+ blocks; F1B0 / F1B1 fit every embedded model
CACHE_DIT_VARIANTS = [("cache-dit-dbcache", 1, 0, None), ("cache-dit-dbcache-F1B1", 1, 1, None),
                      ("cache-dit-dbcache+taylorseer", 1, 0, "taylorseer"), ("cache-dit-dbcache+dmd", 1, 0, "dmd")]
PEERS = {"cache-dit": ("cache_dit", "pip install 'cachepilot[bench]'  (or: pip install cache-dit)")}


def missing_peers() -> dict[str, str]:
    """The peer libraries the bench compares against that are not installed, with how to add each: a report
    without its strongest peer must say so at the top, not only in a log line."""
    import importlib.util

    return {peer: hint for peer, (module, hint) in PEERS.items() if importlib.util.find_spec(module) is None}


def cache_dit_methods() -> list[Method]:
    """cache-dit's DBCache (the first Fn blocks probe and are always computed, the last Bn too, the rest cached
    while the probe's residual changes by less than the knob), alone and with its TaylorSeer / DMD calibrators
    (forecasts of the cached blocks' residual), if installed."""
    os.environ.setdefault("CACHE_DIT_LOG_LEVEL", "error")
    try:
        import cache_dit
        from cache_dit import DBCacheConfig, DMDCalibratorConfig, TaylorSeerCalibratorConfig
    except ImportError:
        return []
    calibrators = {None: lambda: None, "taylorseer": lambda: TaylorSeerCalibratorConfig(taylorseer_order=1),
                   "dmd": DMDCalibratorConfig}

    def variant(name: str, fn: int, bn: int, calibrator: str | None) -> Method:
        def apply(pipe, threshold):
            # cache-dit patches the transformer in place: work on a copy so the shared one stays clean
            clone = unhooked_twin(pipe)
            cache_dit.enable_cache(clone.transformer, cache_config=DBCacheConfig(
                Fn_compute_blocks=fn, Bn_compute_blocks=bn, residual_diff_threshold=threshold,
                max_warmup_steps=2, enable_separate_cfg=False), calibrator_config=calibrators[calibrator]())
            return clone

        def before_call(pipe):
            cache_dit.refresh_context(pipe.transformer)  # its automatic per-call reset fires one call late

        def remove(pipe):
            cache_dit.disable_cache(pipe.transformer)

        return Method(name, CACHE_DIT_THRESHOLDS, apply, remove, before_call, family="cache-dit")

    return [variant(*spec) for spec in CACHE_DIT_VARIANTS]


def all_methods(steps: int = 50, cache: Path | None | str = "default") -> list[Method]:
    from cachepilot.bench.forecasters import forecaster_methods
    from cachepilot.bench.structures import group_methods, structure_methods

    return (cachepilot_methods(steps, cache) + forecaster_methods(steps) + structure_methods() + group_methods()
            + diffusers_methods() + cache_dit_methods())
