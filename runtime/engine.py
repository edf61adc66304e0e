"""The cache engine: the one place that decides how a denoising step's block stack is executed.

Inference drives it with a policy; the gym env drives it with the agent's actions through the same
`CachePolicy` interface, so train-time and inference-time behaviour cannot drift apart.

Per call of the stack (one denoising step of one context), the engine
1. measures the probe (the stack input) against the sample's last compute -> `Observation`;
2. asks the policy for one action per *sample* (CFG copies of a sample share it);
3. runs the stack on the computing rows only, fills the others with input + cached residual
   (REUSE) or input + forecast residual (FORECAST);
4. stores the new residuals. One host sync per step (reading the actions).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.hooks.hooks import BaseState

from cachepilot.errors import InvalidInputError
from cachepilot.core.policy import CachePolicy
from cachepilot.core.predictor import ForecastContext, Predictor
from cachepilot.core.history import ResidualHistory
from cachepilot.core.actions import Action
from cachepilot.runtime.adapters import StackAdapter, select_rows
from cachepilot.core.observation import Observation
from cachepilot.runtime.parallel import SequenceReducer, l1_sums
from cachepilot.runtime.stats import CacheStats

Streams = dict[str, Any]


def _relative_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-row mean |a - b| / mean |b| over all non-batch dimensions."""
    difference, reference = l1_sums(a, b)
    return difference / reference.clamp(min=1e-8 * a[0].numel())


class EngineState(BaseState):
    """Everything that lives for one generation call in one cache context."""

    def __init__(self) -> None:
        self.reset()

    def reset(self, *args, **kwargs) -> None:
        self.step = 0
        self.num_steps = 0
        self.samples = 0
        self.copies = 1
        self.history: ResidualHistory | None = None
        self.probe_ref: torch.Tensor | None = None
        self.probe_prev: torch.Tensor | None = None
        self.accumulated: torch.Tensor | None = None
        self.since_compute: torch.Tensor | None = None
        self.computes: torch.Tensor | None = None
        self.has_cache: torch.Tensor | None = None
        self.drift: torch.Tensor | None = None
        self.stream_residuals: dict[str, torch.Tensor] = {}  # per row, of the other streams (`carries_streams`)
        self.drift_pending: tuple | None = None  # context parallel: drift sums awaiting the next all-reduce
        self.finite: torch.Tensor | None = None  # context parallel: the group's finite flag of this step
        self.timesteps_ref: torch.Tensor | None = None
        self.warned_nonfinite = False
        self.context = ""
        self.policy_spec = ""
        self.decisions: list[torch.Tensor] = []
        self.seconds = {"policy": 0.0, "predictor": 0.0, "stack": 0.0}


@dataclass
class _StepPlan:
    """What `_plan` decided for one step, for `_finish`: the actions (device and host), the computing
    samples and their batch rows, the stack call of those rows (None when no one computes), and the
    skipping rows' outputs (None when everyone computes)."""

    actions: torch.Tensor
    actions_host: torch.Tensor
    compute: torch.Tensor
    computed_rows: torch.Tensor | None = None
    sub_call: dict[str, Any] | None = None
    new_hidden: torch.Tensor | None = None
    stack_started: float = 0.0


class CacheEngine:
    """policy: a `CachePolicy`; predictor: what FORECAST uses (default: `Reuse`).
    num_inference_steps: fallback when neither the cache context nor the pipeline says it.
    cfg_copies: batch rows per sample ([cond; uncond] = 2); None = ask the pipeline, else 1."""

    def __init__(
        self,
        adapter: StackAdapter,
        policy: CachePolicy,
        predictor: Predictor,
        num_inference_steps: int | None = None,
        cfg_copies: int | None = None,
        pipeline: Any = None,
    ):
        self.adapter = adapter
        self.policy = policy
        self.predictor = predictor
        self.num_inference_steps = num_inference_steps
        self.cfg_copies = cfg_copies
        self.pipeline = pipeline
        self.running_stack = False  # pass-through hooks compute while the engine runs the stack
        self.samples_hint: int | None = None  # samples in the current call, when a driver knows it
        self.last_stats: CacheStats | None = None
        self.context_stats: dict[str, CacheStats] = {}  # per cache context, of the last call
        self._stats_timesteps: torch.Tensor | None = None
        # Several contexts in one call (true CFG: "cond" then "uncond", one stack call each per step): the
        # first context decides each step, the others take its actions, as CFG copies in one batch do.
        self._call_timesteps: torch.Tensor | None = None
        self._leader: str | None = None
        self._decided: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # step -> (actions, actions on host)
        self.state_manager = None  # set by apply_cache: the stack hook's per-context states
        self.model_ref: Callable[[], torch.nn.Module | None] = lambda: None  # set by apply_cache (weakly)
        self.reducer: SequenceReducer | None = None  # context parallel: picked up per call by `_start`
        # set by apply_cache: the structure, the indices of the cached blocks, the blocks computed every step
        self.structure: Any = None
        self.cached_blocks: range = range(0)
        self.fixed_blocks = 0
        # set by apply_cache for a structure with groups: every group's engine, in block order (the same list on
        # each); the last one's `last_stats` covers them all, and `bypassed` reaches them all
        self.groups: list[CacheEngine] = []
        # set by apply_cache when blocks after this stack read its streams besides `hidden_states` (a group before
        # another, a structure's last blocks): their residuals are kept and applied at skipped steps
        self.carries_streams = False
        # groups under one policy (apply_cache given one): the first group decides every step (`group_decided`,
        # (context, step) -> its actions) and the later ones `follows` it, with no observation and no host sync
        self.follows: CacheEngine | None = None
        self.followed = False
        self.group_decided: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}

    @contextmanager
    def bypassed(self):
        """Calls of the transformer inside run every block for real, untouched by the cache (collection
        computes the true residual at a cached trajectory's inputs this way, with no model copy); every group's."""
        engines = self.groups or [self]
        for engine in engines:
            engine.running_stack = True
        try:
            yield
        finally:
            for engine in engines:
                engine.running_stack = False

    # -- the step ---------------------------------------------------------------------------
    def execute(
        self, state: EngineState, call: dict[str, Any], run_stack: Callable[[dict[str, Any]], Streams],
        step_index: int | None, num_steps: int | None, context: str = "",
    ) -> Streams:
        """One step of one context (`context`: its name, for per-context stats). Under `torch.compile` the decision and the bookkeeping (`_plan`,
        `_finish`) run eagerly (`torch.compiler.disable`, as diffusers' own cache hooks do): the only code
        traced is the stack itself, so a compiled model breaks its graph twice per step, and blocks compiled
        regionally (`compile_repeated_blocks(fullgraph=True)`) keep their full graphs."""
        plan = self._plan(state, call, step_index, num_steps, context)
        sub_out = run_stack(plan.sub_call) if plan.sub_call is not None else None
        return self._finish(state, call, plan, sub_out)

    @torch.compiler.disable
    def _plan(self, state: EngineState, call: dict[str, Any], step_index: int | None,
              num_steps: int | None, context: str = "") -> _StepPlan:
        """Observe, decide (the step's one host sync), fill the rows that skip, and select the rows that
        compute. Timers live here and in `_finish`, never in traced code."""
        hidden = call["hidden_states"]
        first = self._opens_call(state, step_index)
        if first:
            leads = self._joins_call(state, context)
            self._start(state, hidden, num_steps, reset_policy=leads and self.follows is None)
        step, samples = state.step, state.samples

        if self.follows is not None:  # a later group under one policy: the first group decided this step
            shared = self.follows.group_decided.get((context, step))
            if shared is None or shared[0].shape[0] != samples:
                raise RuntimeError(f"cachepilot: the first group of the stack took no decision at step {step} "
                                   f"of context {context!r} before this group ran")
            return self._plan_actions(state, call, *shared)
        tic = time.perf_counter()
        shared = self._decided.get(step) if context != self._leader else None
        if shared is not None and shared[0].shape[0] == samples:  # another context of this call decided
            if self.followed:
                self.group_decided[(context, step)] = shared
            return self._plan_actions(state, call, *shared)
        obs = self.observe(state, hidden)
        state.accumulated = obs.accumulated
        actions = self.policy.decide(obs).to(hidden.device)
        actions = torch.where(state.has_cache, actions, int(Action.COMPUTE))
        if first:  # nothing is cached yet: everyone computes, known without reading the device
            actions_host = torch.full((samples,), int(Action.COMPUTE))
        else:  # the step's one host sync: the actions, and whether the stack input is finite
            finite = state.finite if state.finite is not None else (  # one reduction: NaN / inf survive a sum
                torch.isfinite(hidden.sum(dtype=torch.float32)).view(1).long())
            state.finite = None
            read = torch.cat([actions.long(), finite]).cpu()
            actions_host = read[:-1]
            if not read[-1] and not state.warned_nonfinite:
                state.warned_nonfinite = True
                warnings.warn(f"cachepilot: NaN or inf in the transformer's stack input at step {step} of "
                              f"{state.num_steps}: the latents diverged (guidance too high, a bad checkpoint?); "
                              "cached steps will carry it on", RuntimeWarning, stacklevel=2)
        state.seconds["policy"] += time.perf_counter() - tic
        if context == self._leader and self._call_timesteps is not None:
            self._decided[step] = (actions, actions_host)
        if self.followed:
            if first:  # this context's earlier call is over
                self.group_decided = {key: v for key, v in self.group_decided.items() if key[0] != context}
            self.group_decided[(context, step)] = (actions, actions_host)
        return self._plan_actions(state, call, actions, actions_host)

    def _plan_actions(self, state: EngineState, call: dict[str, Any], actions: torch.Tensor,
                      actions_host: torch.Tensor) -> _StepPlan:
        hidden = call["hidden_states"]
        rows, step, samples = hidden.shape[0], state.step, state.samples
        compute = (actions_host == Action.COMPUTE).nonzero().flatten()
        plan = _StepPlan(actions, actions_host, compute)
        if compute.numel() == samples:  # everyone computes: the untouched call (bit-exact)
            plan.sub_call = call
            plan.computed_rows = torch.arange(rows, device=hidden.device)
        else:
            plan.new_hidden = self._fill_skipped(state, hidden, actions, actions_host, step)
            plan.computed_rows = self._device_rows(actions, Action.COMPUTE, compute.numel(), state)
            if compute.numel():
                plan.sub_call = {k: select_rows(v, plan.computed_rows, rows) for k, v in call.items()}
        plan.stack_started = time.perf_counter()
        return plan

    def _fill_skipped(self, state: EngineState, hidden: torch.Tensor, actions: torch.Tensor,
                      actions_host: torch.Tensor, step: int) -> torch.Tensor:
        """The stack output of the rows that REUSE or FORECAST (the computing rows are left to fill)."""
        new_hidden = torch.empty_like(hidden)
        tic = time.perf_counter()
        for action in (Action.REUSE, Action.FORECAST):
            count = int((actions_host == action).sum())
            if not count:
                continue
            if count == state.samples:  # the whole batch: no gathers, no scatter
                if action == Action.REUSE:
                    cached = state.history.residuals[0]
                else:
                    context = ForecastContext(state.num_steps, hidden, state.probe_ref, state.policy_spec)
                    cached = self.predictor.predict(state.history, step, None, context)
                new_hidden = hidden + cached.to(hidden.dtype)
                continue
            r = self._device_rows(actions, action, count, state)
            hidden_rows = hidden.index_select(0, r)
            if action == Action.REUSE:
                cached = state.history.residuals[0].index_select(0, r)
            else:
                context = ForecastContext(state.num_steps, hidden_rows, state.probe_ref.index_select(0, r),
                                          state.policy_spec)
                cached = self.predictor.predict(state.history, step, r, context)
            new_hidden.index_copy_(0, r, hidden_rows + cached.to(hidden.dtype))
        state.seconds["predictor"] += time.perf_counter() - tic
        return new_hidden

    @torch.compiler.disable
    def _finish(self, state: EngineState, call: dict[str, Any], plan: _StepPlan,
                sub_out: Streams | None) -> Streams:
        """Merge the computed rows into the step's output and record them (history, probe, drift, counters)."""
        if plan.sub_call is not None:
            state.seconds["stack"] += time.perf_counter() - plan.stack_started
        hidden = call["hidden_states"]
        step = state.step
        computed_rows = plan.computed_rows
        if plan.new_hidden is None:  # everyone computed
            out = sub_out
            new_hidden = out["hidden_states"]
            residual = new_hidden - hidden
        else:
            out = {k: v for k, v in call.items() if k in self.adapter.streams}
            for name, stream_residual in state.stream_residuals.items():  # blocks after this stack read them
                if out.get(name) is not None:
                    out[name] = out[name] + stream_residual.to(out[name].dtype)
            new_hidden = plan.new_hidden
            residual = hidden.new_zeros((0, *hidden.shape[1:]))
            if sub_out is not None:
                new_hidden.index_copy_(0, computed_rows, sub_out["hidden_states"])
                residual = sub_out["hidden_states"] - plan.sub_call["hidden_states"]
                rows = hidden.shape[0]
                for name, value in sub_out.items():  # other streams: computed rows updated, others pass
                    if name != "hidden_states" and value is not None and out.get(name) is not None:
                        base = out[name]  # one row for the whole batch (a negative prompt "" under true CFG)
                        merged = (base if base.shape[0] == rows else base.expand(rows, *base.shape[1:])).clone()
                        merged.index_copy_(0, computed_rows, value.to(merged.dtype))
                        out[name] = merged

        if computed_rows.numel():
            if not state.history.allocated:
                # laid out as the residuals (the stack's output layout, often not its input's): plain copies in
                full = residual.shape[0] == hidden.shape[0]
                state.history.allocate(residual if full else torch.zeros_like(hidden, dtype=residual.dtype))
            computed = plan.actions == int(Action.COMPUTE)  # on the device already: no copy, no sync
            if self.policy.observes_probe and self.policy.observes_drift and self.follows is None:
                tic = time.perf_counter()
                self._update_drift(state, computed, computed_rows, residual, step)  # observation cost
                state.seconds["policy"] += time.perf_counter() - tic
            state.history.update(computed_rows, step, residual)
            if self.carries_streams:
                self._store_stream_residuals(state, plan, sub_out, hidden.shape[0])
            # The stack input at each row's last compute. Everyone computed: the input itself (held, never
            # written: `probe_prev` holds it too, and the next observation sees that both are one tensor).
            if state.probe_ref is None or plan.new_hidden is None:
                state.probe_ref = hidden
            else:  # out of place: the tensor held may be an earlier step's input
                state.probe_ref = state.probe_ref.index_copy(0, computed_rows, hidden.index_select(0, computed_rows))
            state.accumulated = torch.where(computed, 0.0, state.accumulated)
            state.since_compute = torch.where(computed, 0, state.since_compute)
            state.computes = state.computes + computed.long()
            state.has_cache = state.has_cache | computed
        state.since_compute = state.since_compute + 1
        state.probe_prev = hidden
        state.decisions.append(plan.actions)
        state.step += 1
        if state.step == state.num_steps:
            self._record_stats(state)
        out["hidden_states"] = new_hidden
        return out

    @staticmethod
    def _store_stream_residuals(state: EngineState, plan: _StepPlan, sub_out: Streams, rows: int) -> None:
        """The computing rows' residuals of the streams besides `hidden_states` (Flux's text stream), kept where
        blocks after this stack read them (a group before another, a structure's last blocks): a skipped step
        then passes on its input plus the last computed residual (reused, as DBCache does), not its bare input."""
        for name, value in sub_out.items():
            given = plan.sub_call.get(name)
            if name == "hidden_states" or value is None or given is None:
                continue
            stream_residual = value - given  # a one-row input (a negative prompt "" for the batch) broadcasts
            held = state.stream_residuals.get(name)
            if held is None or plan.new_hidden is None:  # the first step (everyone computes), or everyone again
                state.stream_residuals[name] = (stream_residual if stream_residual.shape[0] == rows
                                                else stream_residual.expand(rows, *stream_residual.shape[1:]).clone())
            else:
                held.index_copy_(0, plan.computed_rows, stream_residual.to(held.dtype))

    def observe(self, state: EngineState, hidden: torch.Tensor) -> Observation:
        """What the policy sees at this step, from the stack input; changes nothing (but, under context
        parallelism, completes the drift of the last compute in the step's one all-reduce)."""
        copies, samples = state.copies, state.samples
        if state.probe_ref is not None and self.policy.observes_probe and self.reducer is not None:
            change, step_change = (r.view(copies, samples).mean(0) for r in self._reduce_changes(state, hidden))
        elif state.probe_ref is not None and self.policy.observes_probe:
            change = _relative_l1(hidden, state.probe_ref).view(copies, samples).mean(0)
            step_change = change if state.probe_prev is state.probe_ref else (  # everyone computed last step
                _relative_l1(hidden, state.probe_prev).view(copies, samples).mean(0))
        else:
            change = step_change = hidden.new_zeros(samples, dtype=torch.float32)
        return Observation(state.step, state.num_steps, change, state.accumulated + step_change,
                           state.since_compute, state.computes, state.has_cache, state.drift)

    # -- bookkeeping ------------------------------------------------------------------------
    def _update_drift(self, state: EngineState, computed: torch.Tensor, computed_rows: torch.Tensor,
                      residual: torch.Tensor, step: int) -> None:
        """Per computing sample, before its history takes the new residual: the relative change of its
        stack residual since its previous compute, per step — how fast its cache goes stale (one
        reduction over the computing rows; 0 until the sample has computed twice)."""
        history = state.history
        if computed_rows.numel() == history.count.shape[0]:  # every row: views, no gathers
            previous, previous_step, count = history.residuals[0], history.steps[0], history.count
        else:
            previous = history.residuals[0].index_select(0, computed_rows)
            previous_step = history.steps[0].index_select(0, computed_rows)
            count = history.count.index_select(0, computed_rows)
        gap = (step - previous_step).clamp(min=1.0)
        valid = count > 0
        if self.reducer is not None:  # context parallel: the next step's all-reduce completes it
            state.drift_pending = (l1_sums(residual, previous), gap, valid, computed, computed_rows)
            return
        self._set_drift(state, _relative_l1(residual, previous), gap, valid, computed, computed_rows)

    def _set_drift(self, state: EngineState, relative: torch.Tensor, gap: torch.Tensor, valid: torch.Tensor,
                   computed: torch.Tensor, computed_rows: torch.Tensor) -> None:
        per_row = (relative / gap).where(valid, 0.0)
        rows = state.copies * state.samples
        all_rows = per_row if computed_rows.numel() == rows else per_row.new_zeros(rows).index_copy_(0, computed_rows, per_row)
        state.drift = torch.where(computed, all_rows.view(state.copies, state.samples).mean(0), state.drift)

    def _reduce_changes(self, state: EngineState, hidden: torch.Tensor) -> list[torch.Tensor]:
        """Context parallel: this rank's L1 sums of the probe changes (and of the last compute's residual
        change), summed over the group in one all-reduce with the finite flag, so every rank observes the
        unsharded model's values and takes the same decisions. Per row: [change, step change]."""
        pending, state.drift_pending = state.drift_pending, None
        sums = [l1_sums(hidden, state.probe_ref), l1_sums(hidden, state.probe_prev)]
        relative, state.finite = self.reducer.relative_l1(sums + ([pending[0]] if pending else []), hidden)
        if pending:
            self._set_drift(state, relative[2], *pending[1:])
        return relative[:2]

    @staticmethod
    def _device_rows(actions: torch.Tensor, action: int, count: int, state: EngineState) -> torch.Tensor:
        """Batch rows of the samples taking `action` (sample i owns rows i, i + S, i + 2S, ...: its CFG copies),
        found where the actions live: a host index copied to the GPU is a pageable copy, i.e. a host sync (12 per
        20-step call on the H200 where REUSE and FORECAST mixed). The count, known from the step's one read, sizes
        the result without a sync; a stable sort keeps the samples in order."""
        picked = torch.argsort((actions != action).to(torch.int32), stable=True)[:count]
        offsets = torch.arange(state.copies, device=actions.device) * state.samples
        return (offsets[:, None] + picked[None, :]).flatten()

    def _opens_call(self, state: EngineState, step_index: int | None) -> bool:
        """Whether this stack call is the first step of a new generation call. A pipeline's scheduler gets a new
        `timesteps` tensor from `set_timesteps` at the start of every call, so a call that raised, was
        interrupted or ran fewer steps never leaks its state into the next one; without a pipeline, the cache
        context's step index or the step count says it."""
        if state.step == 0 or (state.num_steps and state.step >= state.num_steps):
            return True
        timesteps = self._scheduler_timesteps()
        if timesteps is not None:
            return timesteps is not state.timesteps_ref
        return step_index == 0

    def _scheduler_timesteps(self) -> torch.Tensor | None:
        return getattr(getattr(self.pipeline, "scheduler", None), "timesteps", None)

    def _joins_call(self, state: EngineState, context: str) -> bool:
        """A context starts its part of a call: whether it leads (decides the steps). A call is known by the
        scheduler's `timesteps` tensor; without a pipeline every context decides for itself."""
        timesteps = self._scheduler_timesteps()
        state.context = context
        if timesteps is None:
            self._call_timesteps, self._leader, self._decided = None, context, {}
            return True
        if timesteps is not self._call_timesteps or context == self._leader:
            self._call_timesteps, self._leader, self._decided = timesteps, context, {}
            return True
        return False

    def _start(self, state: EngineState, hidden: torch.Tensor, num_steps: int | None,
               reset_policy: bool = True) -> None:
        context = state.context
        self._init_state(state, hidden, num_steps)
        state.context = context
        self.reducer = SequenceReducer.for_model(self.model_ref(), self.reducer)
        if reset_policy:
            self.policy.reset(state.num_steps, state.samples)
        state.policy_spec = self.policy.spec()  # once per call: the forecaster's context

    def _init_state(self, state: EngineState, hidden: torch.Tensor, num_steps: int | None) -> None:
        state.reset()
        rows = hidden.shape[0]
        steps = num_steps or self._pipeline_steps() or self.num_inference_steps
        if not steps:
            raise InvalidInputError(
                "cachepilot needs the number of denoising steps: run it through a pipeline, open "
                "a cache context with num_inference_steps, or pass num_inference_steps= when enabling"
            )
        copies = self._cfg_copies(hidden)
        state.num_steps, state.copies, state.samples = int(steps), copies, rows // copies
        state.timesteps_ref = self._scheduler_timesteps()
        state.history = self.predictor.new_history()
        device = hidden.device
        state.accumulated = torch.zeros(state.samples, device=device)
        state.since_compute = torch.zeros(state.samples, dtype=torch.long, device=device)
        state.computes = torch.zeros(state.samples, dtype=torch.long, device=device)
        state.has_cache = torch.zeros(state.samples, dtype=torch.bool, device=device)
        state.drift = torch.zeros(state.samples, device=device)

    def _pipeline_steps(self) -> int | None:
        """The steps the pipeline really runs in this call: its `_num_timesteps` (set before the loop by most
        diffusers pipelines), else the scheduler's timesteps after its begin index (img2img, strength < 1)."""
        counted = getattr(self.pipeline, "_num_timesteps", None)
        if isinstance(counted, int) and counted > 0:
            return counted
        timesteps = self._scheduler_timesteps()
        if timesteps is None:
            return None
        begin = getattr(self.pipeline.scheduler, "begin_index", None)
        return len(timesteps) - (begin if isinstance(begin, int) else 0)

    def _cfg_copies(self, hidden: torch.Tensor) -> int:
        """Batch rows per sample in this call, decided afresh every call: the driver's sample count, else an
        explicit `cfg_copies` that divides the batch, else the pipeline's `do_classifier_free_guidance`,
        else the batch layout (a [cond; uncond] batch repeats the same latents in both halves)."""
        rows = hidden.shape[0]
        if self.samples_hint and rows % self.samples_hint == 0:
            return rows // self.samples_hint  # the driver knows the call's samples: the rest are CFG copies
        if self.cfg_copies is not None:
            if self.cfg_copies >= 1 and rows % self.cfg_copies == 0:
                return self.cfg_copies
            if self.pipeline is None:
                raise InvalidInputError(f"a batch of {rows} rows cannot hold {self.cfg_copies} CFG copies per sample")
        if self.pipeline is None:
            return 1
        if isinstance(getattr(type(self.pipeline), "do_classifier_free_guidance", None), property):
            return 2 if self.pipeline.do_classifier_free_guidance and rows % 2 == 0 else 1
        half = rows // 2
        if rows % 2 == 0 and torch.equal(hidden[:half], hidden[half:]):  # once per call, in place of the actions' sync
            return 2
        return 1

    def _record_stats(self, state: EngineState) -> None:
        """A context finished its call: `last_stats` becomes the call's stats over every context finished in
        it. A new call starts when a context finishes again or the scheduler's timesteps changed."""
        if state.context in self.context_stats or state.timesteps_ref is not self._stats_timesteps:
            self.context_stats = {}
            self._stats_timesteps = state.timesteps_ref
        self.context_stats[state.context] = self.stats(state)
        self.last_stats = CacheStats.of_contexts(self._over_groups(self.context_stats))

    def _over_groups(self, contexts: dict[str, CacheStats]) -> dict[str, CacheStats]:
        """The last group's engine: each context's stats over every group (the groups before it finished the
        same call's steps first); any other engine: its own."""
        if not self.groups or self is not self.groups[-1]:
            return contexts
        combined = {}
        for name, own in contexts.items():
            parts = [engine.context_stats.get(name) for engine in self.groups[:-1]]
            if any(part is None or part.num_steps != own.num_steps for part in parts):
                return contexts
            combined[name] = CacheStats.of_groups([*parts, own], self.fixed_blocks)
        return combined

    def stats(self, state: EngineState) -> CacheStats:
        """This engine's stats of one state (a group's own blocks only: `_over_groups` adds the fixed ones)."""
        decisions = torch.stack(state.decisions).cpu() if state.decisions else torch.zeros(0, state.samples)
        return CacheStats(decisions, state.seconds["policy"], state.seconds["predictor"], state.seconds["stack"],
                          fixed_blocks=0 if self.groups else self.fixed_blocks,
                          stack_blocks=max(len(self.cached_blocks), 1))
