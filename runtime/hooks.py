"""diffusers hooks that hand a transformer's block stack to the cache engine.

The first block gets a stateful `StackHook`: it runs the whole stack (or the computing rows of
it) through the engine and returns the stack's output. Every later block gets a
`PassThroughHook` that returns its input unchanged — except while the engine runs the stack,
when it calls the block for real. Every block is called the way the model called the first one (same
positional layout: HunyuanVideo's two lists name an argument differently). A pass-through block checks
that it gets the very `hidden_states` tensor the block before it returned: a model that changes the
stream between blocks (ControlNet residuals, VACE hints) cannot be cached as one stack, and gets a clear
error instead of wrong outputs. On the first stack call of each call signature every block's output is
checked against the layout the adapter assumes (`StackAdapter.check_output`) before anything is cached.
Stacks whose blocks each get their own arguments (`StackAdapter.native`: Chroma) are not run by the first
block: when anyone computes, the model calls every block itself and the last block's hook completes the
step. Pipelines that open `cache_context(...)` get per-context state and a
per-call reset for free (diffusers' `StateManager`); without a context one named context is used and
calls are counted.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import CacheContext, StateManager

from cachepilot.core.actions import Action
from cachepilot.core.policy import CachePolicy
from cachepilot.core.predictor import Predictor
from cachepilot.errors import InvalidInputError
from cachepilot.runtime.adapters import StackAdapter, UnsupportedModelError, get_adapter
from cachepilot.runtime.engine import CacheEngine, EngineState
from cachepilot.runtime.parallel import outside_split_hooks
from cachepilot.runtime.structure import Structure

STACK_HOOK = "cachepilot_stack"
PASS_HOOK = "cachepilot_pass"
COMPILED_HOOK = "cachepilot_compiled_blocks"
DEFAULT_CONTEXT = CacheContext("cachepilot")  # when the pipeline opens no cache context


class _Handoff:
    """The `hidden_states` tensor the last hooked block returned (held weakly): the next block must get
    that very tensor, else the model changed the stream between two blocks of the stack."""

    def __init__(self, model_class: str):
        self.model_class = model_class
        self._last: weakref.ref | None = None

    def give(self, hidden: Any) -> None:
        self._last = weakref.ref(hidden) if isinstance(hidden, torch.Tensor) else None

    def check(self, hidden: Any, index: int) -> None:
        if self._last is not None and self._last() is not hidden:
            self._last = None
            raise UnsupportedModelError(
                f"{self.model_class} changed hidden_states between blocks {index - 1} and {index} of the cached "
                "stack (a ControlNet residual or a VACE hint?): cachepilot runs the stack as one and cannot "
                "apply that; disable cachepilot for such calls"
            )


class StackHook(ModelHook):
    _is_stateful = True

    def __init__(self, engine: CacheEngine, blocks: list[torch.nn.Module], handoff: _Handoff | None = None):
        super().__init__()
        self.engine = engine
        self.blocks = blocks
        self.handoff = handoff or _Handoff(engine.adapter.model_class)
        self.state_manager = StateManager(EngineState)
        self._positional = 0
        self.compiled: Any = None  # the block's regionally compiled call, taken over by `CompiledBlocksHook`
        self.pass_hooks: list[PassThroughHook] = []
        self._verified: set[tuple] = set()  # call signatures whose block outputs matched the layout
        self._verify = False
        self.stats_sink: Callable[..., None] | None = None  # told when the engine records stats, and (True) on reset
        self.native_step: tuple | None = None  # a natively run stack's (state, call, plan) until its last block

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        if self.engine.running_stack:  # a bypassed call (`CacheEngine.bypassed`): the plain block
            return self.fn_ref.original_forward(*args, **kwargs)
        adapter: StackAdapter = self.engine.adapter
        if self.state_manager._context is None:
            self.state_manager.set_context(DEFAULT_CONTEXT)
        context = self.state_manager.context
        call = adapter.bind(module, args, kwargs)
        self._positional = len(args)  # every block of the stack is called the way the model called this one
        signature = (len(args), *sorted(call), *(getattr(call.get(k), "shape", None) for k in adapter.streams))
        self._verify = signature not in self._verified  # checked on the stack's first full run of it
        if self._verify:
            self._pending_signature = signature
        if adapter.native:
            return self._native_first(args, kwargs, call, context)
        recorded = self.engine.last_stats
        out = self.engine.execute(
            self.state_manager.get_state(), call, self._run_stack,
            step_index=context.step_index, num_steps=context.num_inference_steps, context=context.name,
        )
        if self.stats_sink is not None and self.engine.last_stats is not recorded:
            self.stats_sink(self.engine)
        self.handoff.give(out["hidden_states"])
        return adapter.make_output(out)

    def _native_first(self, args: tuple, kwargs: dict[str, Any], call: dict[str, Any], context: CacheContext) -> Any:
        """A stack whose blocks each get their own arguments (`StackAdapter.native`): when anyone computes,
        the model runs every block itself, on every row (a step mixing computing and skipping samples
        computes them all, and is recorded so), and the last block's hook completes the step."""
        engine, adapter = self.engine, self.engine.adapter
        state = self.state_manager.get_state()
        plan = engine._plan(state, call, context.step_index, context.num_inference_steps, context.name)
        if plan.sub_call is not None and plan.new_hidden is not None:
            compute = int(Action.COMPUTE)
            plan = engine._plan_actions(state, call, torch.full_like(plan.actions, compute),
                                        torch.full_like(plan.actions_host, compute))
        if plan.sub_call is None:  # nobody computes: the cached output, passed through by the other blocks
            return self._complete(state, call, plan, None)
        output = (self.compiled or self.fn_ref.original_forward)(*args, **kwargs)
        streams = {k: call[k] for k in adapter.streams if k in call}
        if self._verify:
            adapter.check_output(self.blocks[0], output, streams)
        self.native_step = (state, call, plan)
        return self.native_last(output) if not self.pass_hooks else output

    def native_last(self, output: Any) -> Any:
        """The last block of a natively run stack returned `output`: the step is recorded, as the engine
        records a stack it ran itself."""
        (state, call, plan), self.native_step = self.native_step, None
        streams = {k: call[k] for k in self.engine.adapter.streams if k in call}
        streams.update(self.engine.adapter.read_output(output, call))
        if self._verify:
            self._verified.add(self._pending_signature)
            self._verify = False
        return self._complete(state, call, plan, streams)

    def _complete(self, state: EngineState, call: dict[str, Any], plan: Any, streams: dict[str, Any] | None) -> Any:
        recorded = self.engine.last_stats
        out = self.engine._finish(state, call, plan, streams)
        if self.stats_sink is not None and self.engine.last_stats is not recorded:
            self.stats_sink(self.engine)
        self.handoff.give(out["hidden_states"])
        return self.engine.adapter.make_output(out)

    def _run_stack(self, call: dict[str, Any]) -> dict[str, Any]:
        adapter = self.engine.adapter
        streams = {k: call[k] for k in adapter.streams if k in call}
        first = type(self.blocks[0])
        self.engine.running_stack = True
        try:
            args, kwargs = adapter.unbind(first, call, self._positional)
            output = (self.compiled or self.fn_ref.original_forward)(*args, **kwargs)
            if self._verify:
                adapter.check_output(self.blocks[0], output, streams)
            streams.update(adapter.read_output(output, call))
            for block, hook in zip(self.blocks[1:], self.pass_hooks):
                args, kwargs = adapter.unbind(first, {**call, **streams}, self._positional)
                output = (hook.compiled or block)(*args, **kwargs)
                if self._verify:
                    adapter.check_output(block, output, streams)
                streams.update(adapter.read_output(output, call))
        finally:
            self.engine.running_stack = False
        if self._verify:  # every block's output matched: this signature is trusted from now on
            self._verified.add(self._pending_signature)
            self._verify = False
        return streams

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        if self.stats_sink is not None:  # states that never reached their step count are read first
            self.stats_sink(self.engine, True)
        self.state_manager.reset()
        return module


class PassThroughHook(ModelHook):
    def __init__(self, engine: CacheEngine, handoff: _Handoff | None = None, index: int = 0):
        super().__init__()
        self.engine = engine
        self.handoff = handoff
        self.index = index
        self.compiled: Any = None
        self.stack: StackHook | None = None  # the stack's first hook (set by apply_cache)

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        if self.engine.running_stack:
            return self.fn_ref.original_forward(*args, **kwargs)
        adapter = self.engine.adapter
        stack = self.stack
        if stack is not None and stack.native_step is not None:  # a natively run stack: the block runs
            output = (self.compiled or self.fn_ref.original_forward)(*args, **kwargs)
            if stack._verify:
                adapter.check_output(module, output, adapter.streams_of(module, args, kwargs))
            return stack.native_last(output) if self.index == len(stack.blocks) - 1 else output
        streams = adapter.streams_of(module, args, kwargs)
        if self.handoff is not None:
            self.handoff.check(streams["hidden_states"], self.index)
        return adapter.make_output(streams)


class CompiledBlocksHook(ModelHook):
    """On the transformer: before each call, takes over the compiled calls of stack blocks compiled
    regionally (`transformer.compile_repeated_blocks(...)`, or `block.compile()`, before or after
    enabling). The model then calls every block eagerly, so the engine's decisions stay out of the
    compiled graphs, and the engine runs the computing rows through the compiled blocks: `fullgraph=True`
    holds. `remove_cache` gives the compiled calls back."""

    def __init__(self, blocks: list[torch.nn.Module], hooks: list[StackHook | PassThroughHook]):
        super().__init__()
        self.blocks, self.hooks = blocks, hooks

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        for block, hook in zip(self.blocks, self.hooks):
            if block._compiled_call_impl is not None:
                hook.compiled, block._compiled_call_impl = block._compiled_call_impl, None
        return self.fn_ref.original_forward(*args, **kwargs)

    def give_back(self) -> None:
        for block, hook in zip(self.blocks, self.hooks):
            if hook.compiled is not None and block._compiled_call_impl is None:
                block._compiled_call_impl = hook.compiled
            hook.compiled = None


def apply_cache(
    transformer: torch.nn.Module,
    policy: CachePolicy | Sequence[CachePolicy],
    predictor: Predictor | Sequence[Predictor],
    num_inference_steps: int | None = None,
    cfg_copies: int | None = None,
    pipeline: Any = None,
    structure: Structure | None = None,
) -> CacheEngine:
    """Hook `transformer`'s block stack (the blocks `structure` leaves to the cache: all by default); returns the
    engine (its `last_stats` after each call). A structure with groups gets one engine per group, each with its own
    predictor (one per group, or one copied to each) and residual history; one policy decides for every group (the
    first group observes and decides, the others take its decisions), a list gives each group its own. The last
    group's engine is returned, its `last_stats` over every group."""
    adapter = get_adapter(transformer)
    structure = structure or Structure()
    all_blocks = adapter.blocks(transformer)
    ranges = structure.group_ranges(len(all_blocks), adapter.model_class)
    if adapter.native and not structure.is_whole_stack:
        raise InvalidInputError(f"structure {structure.spec()} is not supported on {adapter.model_class}: its blocks "
                                "take per-block arguments that the model computes itself; cache its whole stack")
    shared = not isinstance(policy, (list, tuple))  # one policy: the first group decides for every group
    policies = [policy] * len(ranges) if shared else _one_per_group(policy, len(ranges), "policies")
    predictors = _one_per_group(predictor, len(ranges), "predictors")
    for bound in {id(made): made for made in (*policies, *predictors)}.values():
        bound.bind(transformer)
    remove_cache(transformer)
    fixed_blocks = len(all_blocks) - sum(len(r) for r in ranges)
    engines, hooked_blocks, hooks = [], [], []
    for cached, group_policy, group_predictor in zip(ranges, policies, predictors):
        engine = CacheEngine(adapter, group_policy, group_predictor, num_inference_steps, cfg_copies, pipeline)
        engine.model_ref = weakref.ref(transformer)  # its context-parallel config, read at every call's start
        engine.structure, engine.cached_blocks, engine.fixed_blocks = structure, cached, fixed_blocks
        engine.carries_streams = cached.stop < len(all_blocks) and len(adapter.streams) > 1
        blocks = all_blocks[cached.start:cached.stop]
        handoff = _Handoff(adapter.model_class)
        first_hook = StackHook(engine, blocks, handoff)
        with outside_split_hooks(blocks[0]):
            HookRegistry.check_if_exists_or_initialize(blocks[0]).register_hook(first_hook, STACK_HOOK)
        for index, block in enumerate(blocks[1:], start=1):
            hook = PassThroughHook(engine, handoff if adapter.checks_handoff else None, index)
            HookRegistry.check_if_exists_or_initialize(block).register_hook(hook, PASS_HOOK)
            hook.stack = first_hook
            first_hook.pass_hooks.append(hook)
        engine.state_manager = first_hook.state_manager
        engines.append(engine)
        hooked_blocks += blocks
        hooks += [first_hook, *first_hook.pass_hooks]
    if len(engines) > 1:
        for engine in engines:
            engine.groups = engines
        if shared:
            engines[0].followed = True
            for engine in engines[1:]:
                engine.follows = engines[0]
    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    registry.register_hook(CompiledBlocksHook(hooked_blocks, hooks), COMPILED_HOOK)
    registry.invalidate_child_registries_cache()
    transformer._cachepilot_engine = engines[-1]
    return engines[-1]


def _one_per_group(given: Any, groups: int, what: str) -> list:
    """One object per group: a sequence as given (its length checked), else `given` and copies of it (a predictor
    holds per-call state)."""
    if isinstance(given, (list, tuple)):
        if len(given) != groups:
            raise InvalidInputError(f"{len(given)} {what} given for a structure of {groups} groups: give one, or one "
                                    "per group")
        return list(given)
    return [given] + [copy.deepcopy(given) for _ in range(groups - 1)]


def stack_hook(transformer: torch.nn.Module) -> StackHook | None:
    """The hook that runs `transformer`'s cached stack, its last group's with groups (None when not hooked)."""
    engine = get_engine(transformer)
    if engine is None:
        return None
    first = engine.adapter.blocks(transformer)[engine.cached_blocks.start]
    return HookRegistry.check_if_exists_or_initialize(first).get_hook(STACK_HOOK)


def get_engine(transformer: torch.nn.Module) -> CacheEngine | None:
    return getattr(transformer, "_cachepilot_engine", None)


def remove_cache(transformer: torch.nn.Module) -> None:
    """Undo `apply_cache` (no-op when the model is not hooked)."""
    if get_engine(transformer) is None:
        return
    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    compiled_hook = registry.get_hook(COMPILED_HOOK)
    if compiled_hook is not None:
        compiled_hook.give_back()
        registry.remove_hook(COMPILED_HOOK, recurse=False)
    registry.remove_hook(STACK_HOOK, recurse=True)
    registry.remove_hook(PASS_HOOK, recurse=True)
    registry.invalidate_child_registries_cache()
    del transformer._cachepilot_engine


def reset_cache(transformer: torch.nn.Module) -> None:
    """Reset per-call state (pipelines call this at the start of `__call__`)."""
    if get_engine(transformer) is not None:
        HookRegistry.check_if_exists_or_initialize(transformer).reset_stateful_hooks(recurse=True)
