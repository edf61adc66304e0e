"""A copy of the cache engine's per-call state between two steps, and its return into a later call.

Scoring many schedules that agree up to step k (a schedule search's moves) need not run the shared steps again:
the trajectory up to k is the incumbent's, and so is everything the engine holds when step k starts (residual
histories, probes, counters, decisions so far). `take` copies that state, `restore` puts it into a call that has
replayed the incumbent's first k steps (`train.incremental`), and the engine goes on as if it had run them.

A snapshot lives on `device` (the host by default: on a large model one holds a few residuals per row, and a search
keeps one per step it forks at). Only for policies that hold no per-call state of their own (fixed schedules):
the policy is reset, not restored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from cachepilot.runtime.engine import CacheEngine, EngineState
from cachepilot.runtime.parallel import SequenceReducer


@dataclass
class EngineSnapshot:
    states: dict[str, EngineState]   # per cache context, as its state stood before the step
    leader: str | None               # the context that decides each step
    device: torch.device             # where the engine's tensors lived


def copy_to(value: Any, device: torch.device | str, memo: dict[int, Any] | None = None) -> Any:
    """A deep copy with every tensor moved to `device`; tensors shared inside the state stay shared (the engine
    tells "everyone computed last step" by `probe_prev is probe_ref`)."""
    memo = {} if memo is None else memo
    if id(value) in memo:
        return memo[id(value)]
    if isinstance(value, torch.Tensor):
        copied = value.detach().to(device, copy=True)
    elif isinstance(value, (list, tuple)):
        copied = type(value)(copy_to(v, device, memo) for v in value)
    elif isinstance(value, dict):  # a model output (`BaseOutput`, a dataclass and a dict) keeps its class
        items = {k: copy_to(v, device, memo) for k, v in value.items()}
        copied = items if type(value) is dict else type(value)(**items)
    elif hasattr(value, "__dict__") and not isinstance(value, type):
        copied = object.__new__(type(value))
        memo[id(value)] = copied
        copied.__dict__.update({k: copy_to(v, device, memo) for k, v in vars(value).items()})
        return copied
    else:  # numbers, strings, None
        return value
    memo[id(value)] = copied
    return copied


def take(engine: CacheEngine, device: torch.device | str = "cpu") -> EngineSnapshot:
    """The engine's states now, between two steps of a call (copies: the call goes on untouched)."""
    states = engine.state_manager._state_cache
    memo: dict[int, Any] = {}
    held = next((s.history.residuals.device for s in states.values()
                 if s.history is not None and s.history.allocated), torch.device(device))
    return EngineSnapshot({name: copy_to(state, device, memo) for name, state in states.items()}, engine._leader, held)


def restore(engine: CacheEngine, snapshot: EngineSnapshot, timesteps: torch.Tensor | None) -> None:
    """Make `snapshot` the engine's state in the running call (`timesteps`: the call's scheduler timesteps, by which
    the engine knows its call); the snapshot itself stays as it is, for the next restore."""
    memo: dict[int, Any] = {}
    cache = engine.state_manager._state_cache
    cache.clear()
    for name, state in snapshot.states.items():
        restored = copy_to(state, snapshot.device, memo)
        restored.timesteps_ref = timesteps
        cache[name] = restored
    engine._call_timesteps, engine._leader, engine._decided = timesteps, snapshot.leader, {}
    engine.reducer = SequenceReducer.for_model(engine.model_ref(), engine.reducer)
    some = next(iter(cache.values()), None)
    if some is not None:
        engine.policy.reset(some.num_steps, some.samples)
        for state in cache.values():
            state.policy_spec = engine.policy.spec()
