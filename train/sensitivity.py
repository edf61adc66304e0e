"""How much an error in the stack residual at each step moves the final image.

A one-step residual MSE treats all steps alike, but the sampler does not: an error at the last
steps barely reaches the image (tiny eps coefficient), one in the middle is carried to the end.
We measure it: add a small random perturbation to the stack output at step i only, and record
|Δ final image|² / |perturbation|², averaged over samples. The forecaster's loss is weighted by it
(credit each step by its effect on the final image, as HarmoniCa argues).
"""

from __future__ import annotations

import torch

from cachepilot.conditions import group_by_shared
from cachepilot.driver import SamplingDriver
from cachepilot.runtime.adapters import get_adapter
from cachepilot.seeds import SENSITIVITY

SENSITIVITY_SAMPLES = 16  # one batched run per step: the weights cost samples x steps x (steps + 1) evaluations


@torch.no_grad()
def step_sensitivity(driver: SamplingDriver, conditions: list[dict], samples: int = SENSITIVITY_SAMPLES, seed: int = SENSITIVITY,
                     scale: float = 1e-2) -> torch.Tensor:
    """(steps,) mean-one weights: final-image change per unit of stack-output perturbation at each step.
    The driver's pipeline must not be cached (every call of the last block is one step)."""
    steps = driver.num_steps
    first_group = [conditions[i] for i in group_by_shared(conditions)[0]]  # one batched call per run
    chosen = [first_group[i % len(first_group)] for i in range(samples)]
    driver = SamplingDriver(driver.pipe, steps, driver.call_kwargs, batch_size=samples)
    seeds = [seed + i for i in range(samples)]
    adapter = get_adapter(driver.pipe.transformer)
    last_block = adapter.blocks(driver.pipe.transformer)[-1]

    def run(perturb_step: int | None) -> torch.Tensor:
        calls = {"n": 0}
        noise_gen = torch.Generator().manual_seed(seed + 1)

        def hook(module, args, output):
            step, calls["n"] = calls["n"], calls["n"] + 1
            if step != perturb_step:
                return output
            streams = adapter.read_output(output, {})
            hidden = streams["hidden_states"]
            delta = torch.randn(hidden.shape, generator=noise_gen).to(hidden) * scale * hidden.std()
            run.delta_sq = delta.pow(2).flatten(1).sum(1)
            return adapter.make_output({**streams, "hidden_states": hidden + delta})

        handle = last_block.register_forward_hook(hook)
        try:
            return driver.sample(chosen, seeds).images
        finally:
            handle.remove()

    reference = run(None)
    weights = []
    for step in range(steps):
        moved = (run(step) - reference).pow(2).flatten(1).sum(1)
        rows = run.delta_sq.view(-1, len(seeds)).sum(0)  # CFG copies of a sample perturbed together
        weights.append((moved / rows).mean())
    weights = torch.stack(weights)
    return weights / weights.mean()
