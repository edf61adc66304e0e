"""Every transformer a pipeline holds, cached, and one pipeline call's stats over all of them.

Pipelines may hold several transformers (Wan 2.2: `transformer` for the high-noise steps, `transformer_2`
for the rest) or call one transformer in several denoising phases of one `__call__` (VisualCloze). Each
transformer gets its own engine; `PipelineCache` gathers what they record during one `__call__` (the
pipeline's class is swapped for a subclass whose `__call__` brackets the call; `release` swaps it back), so
`last_stats` covers every expert and phase. An engine that ran only part of a call's steps (an expert)
never reaches its step count: its stats are read from its states when the call ends.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch

from cachepilot.runtime.adapters import UnsupportedModelError, get_adapter
from cachepilot.runtime.engine import CacheEngine
from cachepilot.runtime.hooks import get_engine, stack_hook
from cachepilot.runtime.stats import CacheStats

_TRACKER = "_cachepilot_pipeline_cache"


def unwrap(model: Any) -> Any:
    """The module under `torch.compile`'s wrapper: hooks go on the real blocks, which the compiled wrapper
    calls (so enabling before or after compiling both work)."""
    original = getattr(model, "_orig_mod", None)
    return original if isinstance(original, torch.nn.Module) else model


def _is_transformer(name: str, module: torch.nn.Module) -> bool:
    return "transformer" in name or type(module).__module__.startswith("diffusers.models.transformers")


def pipeline_transformers(pipe: Any) -> tuple[dict[str, torch.nn.Module], dict[str, str]]:
    """({component name: transformer the engine can cache}, {component name: why it cannot}) of a pipeline:
    its `transformer` first, then every other component that is a transformer (by name, or a diffusers
    transformer model). Text encoders, VAEs and the like are not looked at."""
    components = dict(getattr(pipe, "components", None) or {})
    if "transformer" not in components and isinstance(getattr(pipe, "transformer", None), torch.nn.Module):
        components["transformer"] = pipe.transformer
    names = sorted(components, key=lambda n: (n != "transformer", n))
    found, refused = {}, {}
    for name in names:
        module = unwrap(components[name])
        if not isinstance(module, torch.nn.Module) or not _is_transformer(name, module):
            continue
        try:
            get_adapter(module)
        except UnsupportedModelError as err:
            refused[name] = str(err)
            continue
        found[name] = module
    return found, refused


def warn_refused(refused: dict[str, str], cached: dict[str, torch.nn.Module]) -> None:
    """Tell which of a pipeline's transformers stay uncached while others are cached."""
    for name, why in refused.items():
        reason = why.split(". Supported")[0]
        warnings.warn(f"cachepilot caches {', '.join(cached)} but not the pipeline's {name}: {reason}", UserWarning,
                      stacklevel=3)


class PipelineCache:
    """The engines of one pipeline and the stats of its last completed `__call__` (None before one)."""

    def __init__(self, pipeline: Any, transformers: dict[str, torch.nn.Module]):
        self.transformers = transformers
        self.last_stats: CacheStats | None = None
        self._log: dict[tuple[int, int], tuple[dict, CacheStats]] = {}
        self._seen: dict[int, tuple[int, Any]] = {}
        self._partial: dict[int, dict[str, CacheStats]] = {}
        self._depth = 0
        self._warned: set[tuple[str, int]] = set()  # replaced components already warned about
        self.before_call: list[Callable[[Any], None]] = []  # checks of the pipeline before each outer call
        for transformer in transformers.values():
            stack_hook(transformer).stats_sink = self._record
        self._swap_class(pipeline)

    @property
    def engines(self) -> list[CacheEngine]:
        return [e for e in (get_engine(t) for t in self.transformers.values()) if e is not None]

    def _record(self, engine: CacheEngine, ending: bool = False) -> None:
        """An engine recorded a stack call's stats (kept per engine call: its `context_stats` dict grows as
        its contexts finish, and is a new dict for its next call), or, `ending`, its states are about to be
        reset (diffusers resets stateful hooks at the end of a call): states that ran part of the steps
        never recorded, and are read now."""
        if not self._depth:
            return
        if ending:
            self._read_partial(engine)
        else:
            self._log[(id(engine), id(engine.context_stats))] = (engine.context_stats, engine.last_stats)

    def _states(self, engine: CacheEngine) -> list[Any]:
        manager = engine.state_manager
        return list(manager._state_cache.values()) if manager is not None else []

    def _read_partial(self, engine: CacheEngine) -> None:
        """The stats of `engine`'s states that ran part of this call's steps (an expert's share)."""
        for state in self._states(engine):
            seen = self._seen.get(id(state))
            touched = seen is None or seen[0] != len(state.decisions) or seen[1] is not state.timesteps_ref
            if touched and state.decisions and 0 < state.step < state.num_steps:
                self._partial.setdefault(id(engine), {})[state.context] = engine.stats(state)
                self._seen[id(state)] = (len(state.decisions), state.timesteps_ref)

    def check_components(self, pipeline: Any) -> None:
        """Warn (once per replacement) when a cached transformer was replaced after `enable` (`pipe.transformer_2
        = other`): the new module is not the one hooked, so it would run uncached and silently out of the stats."""
        for name, cached in self.transformers.items():
            current = unwrap(getattr(pipeline, name, None))
            if not isinstance(current, torch.nn.Module) or current is cached or (name, id(current)) in self._warned:
                continue
            self._warned.add((name, id(current)))
            runs = "with its own engine" if get_engine(current) is not None else "uncached"
            warnings.warn(f"the pipeline's {name} was replaced after cachepilot.enable by another "
                          f"{type(current).__name__}: the cache enable set up for {name} does not reach it (it runs "
                          f"{runs}, and this pipeline's last_stats leaves it out); call cachepilot.enable(pipe, ...) "
                          "again to cache it with the pipeline", UserWarning, stacklevel=3)

    def start(self) -> None:
        if self._depth == 0:
            self._log, self._partial = {}, {}
            self._seen = {id(state): (len(state.decisions), state.timesteps_ref)
                          for engine in self.engines for state in self._states(engine)}
        self._depth += 1

    def finish(self, completed: bool) -> None:
        self._depth -= 1
        if self._depth or not completed:
            return
        for engine in self.engines:
            self._read_partial(engine)
        parts = [stats for _, stats in self._log.values()]
        parts += [CacheStats.of_contexts(contexts) for contexts in self._partial.values()]
        if parts:
            self.last_stats = CacheStats.of_phases(parts)

    def _swap_class(self, pipeline: Any) -> None:
        base = type(pipeline)

        def __call__(self_: Any, *args: Any, **kwargs: Any) -> Any:
            tracker = vars(self_).get(_TRACKER)
            if tracker is None:  # another pipeline of the tracked class (built from this one's components)
                return base.__call__(self_, *args, **kwargs)
            if not tracker._depth:
                tracker.check_components(self_)
                for check in tracker.before_call:
                    check(self_)
            tracker.start()
            completed = False
            try:
                out = base.__call__(self_, *args, **kwargs)
                completed = True
                return out
            finally:
                tracker.finish(completed)

        tracked = type(base.__name__, (base,), {"__call__": __call__, "__module__": base.__module__,
                                                "__qualname__": base.__qualname__, "_cachepilot_base": base})
        pipeline.__class__ = tracked
        setattr(pipeline, _TRACKER, self)

    @staticmethod
    def release(pipeline: Any) -> None:
        """Undo the class swap (no-op for a pipeline that was not tracked)."""
        base = type(pipeline).__dict__.get("_cachepilot_base")
        if base is not None:
            pipeline.__class__ = base
        if _TRACKER in vars(pipeline):
            delattr(pipeline, _TRACKER)


def tracker_of(pipeline: Any) -> PipelineCache | None:
    return vars(pipeline).get(_TRACKER) if pipeline is not None and hasattr(pipeline, "__dict__") else None


def track(pipeline: Any, transformers: dict[str, torch.nn.Module]) -> PipelineCache:
    """Gather the stats of `transformers` over each whole `__call__` of `pipeline` (replacing any earlier
    tracker)."""
    PipelineCache.release(pipeline)
    return PipelineCache(pipeline, transformers)


