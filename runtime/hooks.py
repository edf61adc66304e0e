"""diffusers hooks that hand a transformer's block stack to the cache engine.

The first block gets a stateful `StackHook`: it runs the whole stack (or the computing rows of
it) through the engine and returns the stack's output. Every later block gets a
`PassThroughHook` that returns its input unchanged — except while the engine runs the stack,
when it calls the block for real. Pipelines that open `cache_context(...)` get per-context state
and a per-call reset for free (diffusers' `StateManager`); without a context one named context is
used and calls are counted.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import CacheContext, StateManager

from cachepilot.policies.base import CachePolicy
from cachepilot.predictors.base import Predictor
from cachepilot.runtime.adapters import StackAdapter, get_adapter
from cachepilot.runtime.engine import CacheEngine, EngineState

STACK_HOOK = "cachepilot_stack"
PASS_HOOK = "cachepilot_pass"
_DEFAULT_CONTEXT = CacheContext("cachepilot")


class StackHook(ModelHook):
    _is_stateful = True

    def __init__(self, engine: CacheEngine, blocks: list[torch.nn.Module]):
        super().__init__()
        self.engine = engine
        self.blocks = blocks
        self.state_manager = StateManager(EngineState)
        self._positional = 0

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        if self.engine.running_stack:  # a bypassed call (`CacheEngine.bypassed`): the plain block
            return self.fn_ref.original_forward(*args, **kwargs)
        adapter: StackAdapter = self.engine.adapter
        if self.state_manager._context is None:
            self.state_manager.set_context(_DEFAULT_CONTEXT)
        context = self.state_manager.context
        call = adapter.bind(module, args, kwargs)
        self._positional = len(args)  # every block of the stack is called the way the model called this one
        out = self.engine.execute(
            self.state_manager.get_state(), call, self._run_stack,
            step_index=context.step_index, num_steps=context.num_inference_steps,
        )
        return adapter.make_output(out)

    def _run_stack(self, call: dict[str, Any]) -> dict[str, Any]:
        adapter = self.engine.adapter
        streams = {k: call[k] for k in adapter.streams if k in call}
        first = type(self.blocks[0])
        self.engine.running_stack = True
        try:
            args, kwargs = adapter.unbind(first, call, self._positional)
            output = self.fn_ref.original_forward(*args, **kwargs)
            streams.update(adapter.read_output(output, call))
            for block in self.blocks[1:]:
                args, kwargs = adapter.unbind(first, {**call, **streams}, self._positional)
                output = block(*args, **kwargs)
                streams.update(adapter.read_output(output, call))
        finally:
            self.engine.running_stack = False
        return streams

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        self.state_manager.reset()
        return module


class PassThroughHook(ModelHook):
    def __init__(self, engine: CacheEngine):
        super().__init__()
        self.engine = engine

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        if self.engine.running_stack:
            return self.fn_ref.original_forward(*args, **kwargs)
        adapter = self.engine.adapter
        call = adapter.bind(module, args, kwargs)
        return adapter.make_output({k: call.get(k) for k in adapter.streams})


def apply_cache(
    transformer: torch.nn.Module,
    policy: CachePolicy,
    predictor: Predictor,
    num_inference_steps: int | None = None,
    cfg_copies: int | None = None,
    pipeline: Any = None,
) -> CacheEngine:
    """Hook `transformer`'s block stack; returns the engine (its `last_stats` after each call)."""
    adapter = get_adapter(transformer)
    policy.bind(transformer)
    predictor.bind(transformer)
    remove_cache(transformer)
    engine = CacheEngine(adapter, policy, predictor, num_inference_steps, cfg_copies, pipeline)
    blocks = adapter.blocks(transformer)
    HookRegistry.check_if_exists_or_initialize(blocks[0]).register_hook(StackHook(engine, blocks), STACK_HOOK)
    for block in blocks[1:]:
        HookRegistry.check_if_exists_or_initialize(block).register_hook(PassThroughHook(engine), PASS_HOOK)
    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    registry.invalidate_child_registries_cache()
    engine.state_manager = HookRegistry.check_if_exists_or_initialize(blocks[0]).get_hook(STACK_HOOK).state_manager
    transformer._cachepilot_engine = engine
    return engine


def get_engine(transformer: torch.nn.Module) -> CacheEngine | None:
    return getattr(transformer, "_cachepilot_engine", None)


def remove_cache(transformer: torch.nn.Module) -> None:
    """Undo `apply_cache` (no-op when the model is not hooked)."""
    if get_engine(transformer) is None:
        return
    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    registry.remove_hook(STACK_HOOK, recurse=True)
    registry.remove_hook(PASS_HOOK, recurse=True)
    registry.invalidate_child_registries_cache()
    del transformer._cachepilot_engine


def reset_cache(transformer: torch.nn.Module) -> None:
    """Reset per-call state (pipelines call this at the start of `__call__`)."""
    if get_engine(transformer) is not None:
        HookRegistry.check_if_exists_or_initialize(transformer).reset_stateful_hooks(recurse=True)
