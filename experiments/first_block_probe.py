"""A First-Block-Cache probe, recorded for measurement: would the policy see the headroom through it?

First-Block-Cache and DBCache decide from the first block's output (or residual), which the engine does not
compute on a skipped step. Before building that into the engine (one block per step, counted as compute), the
headroom tool asks whether it predicts where per-sample masks leave the prior better than today's observation.
`first_block_probe_features` replays masks on a pipeline, runs the first block on the stack's input at every step
(skipped or not, outside the engine's decision), and returns per step and sample what such a probe would observe.
"""

from __future__ import annotations

import torch
from diffusers.hooks import HookRegistry

from cachepilot.driver import SamplingDriver, caching
from cachepilot.policies.baselines import Schedule
from cachepilot.runtime.engine import _relative_l1  # the engine's probe change, per row
from cachepilot.runtime.hooks import STACK_HOOK, get_engine

PROBE_FEATURES = ("fb_change", "fb_residual_change", "fb_accumulated")


@torch.no_grad()
def first_block_probe_features(driver: SamplingDriver, conditions: list[dict], seeds: list[int], masks: torch.Tensor,
                               predictor) -> torch.Tensor:
    """(T, N, 3): for sample i at step t, before its decision, the relative L1 change of the first block's output and
    of its residual (output - input) since the sample's last compute, and the step-to-step output changes summed since
    then (TeaCache's accumulation, on the probe). The trajectory is the one `masks` (N, T) give with `predictor`;
    with classifier-free guidance run as separate calls, the first call of each step is the one probed."""
    rows = {}

    with caching(driver.pipe, Schedule(masks), predictor):
        engine = get_engine(driver.pipe.transformer)
        hook = HookRegistry.check_if_exists_or_initialize(engine.adapter.blocks(driver.pipe.transformer)[0]) \
            .get_hook(STACK_HOOK)
        original = engine._plan
        state = {}

        def plan(engine_state, call, *args, **kwargs):
            planned = original(engine_state, call, *args, **kwargs)  # sets the call's step counter
            step_index = engine_state.step
            if step_index not in rows:  # the first call of this step
                engine.running_stack = True  # the plain block, as the stack runs it
                try:
                    args, kwargs = engine.adapter.unbind(type(hook.blocks[0]), call, hook._positional)
                    out = hook.fn_ref.original_forward(*args, **kwargs)
                finally:
                    engine.running_stack = False
                hidden_in = call["hidden_states"].float()
                hidden_out = engine.adapter.read_output(out, call)["hidden_states"].float()
                n = masks.shape[0]
                hidden_in, hidden_out = hidden_in[-n:], hidden_out[-n:]  # batched CFG: the conditional rows
                residual = hidden_out - hidden_in
                if "ref" not in state:
                    state.update(ref=hidden_out, ref_res=residual, prev=hidden_out, acc=torch.zeros(n))
                step_change = _relative_l1(hidden_out, state["prev"]).cpu()
                state["acc"] = state["acc"] + step_change
                rows[step_index] = torch.stack([_relative_l1(hidden_out, state["ref"]).cpu(),
                                                _relative_l1(residual, state["ref_res"]).cpu(), state["acc"]], 1)
                computed = masks[:, step_index].to(hidden_out.device).view(-1, *[1] * (hidden_out.dim() - 1))
                state["ref"] = torch.where(computed, hidden_out, state["ref"])
                state["ref_res"] = torch.where(computed, residual, state["ref_res"])
                state["acc"] = torch.where(masks[:, step_index], torch.zeros(n), state["acc"].cpu())
                state["prev"] = hidden_out
            return planned

        engine._plan = plan
        try:
            driver.sample(conditions, seeds)
        finally:
            del engine._plan
    return torch.stack([rows[t] for t in sorted(rows)]).clamp(max=10.0)
