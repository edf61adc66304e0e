"""How much an error in the stack residual at each step moves the final image.

A one-step residual MSE treats all steps alike, but the sampler does not: an error at the last
steps barely reaches the image (tiny eps coefficient), one in the middle is carried to the end.
We measure it: add a small random perturbation to the stack output at step i only, and record
|Δ final image|² / |perturbation|², averaged over samples. The forecaster's loss is weighted by it
(credit each step by its effect on the final image, as HarmoniCa argues).
"""

from __future__ import annotations

import torch

from cachepilot.pipeline import DigitsDiTPipeline
from cachepilot.runtime.adapters import get_adapter


@torch.no_grad()
def step_sensitivity(
    pipe: DigitsDiTPipeline, steps: int, samples: int = 16, seed: int = 90_000, guidance: float = 1.0,
    scale: float = 1e-2,
) -> torch.Tensor:
    """(steps,) mean-one weights: final-image change per unit of stack-output perturbation at each step."""
    labels = [i % 10 for i in range(samples)]
    last_block = get_adapter(pipe.transformer).blocks(pipe.transformer)[-1]

    def run(perturb_step: int | None) -> torch.Tensor:
        calls = {"n": 0}
        noise_gen = torch.Generator().manual_seed(seed + 1)

        def hook(module, args, output):
            step, calls["n"] = calls["n"], calls["n"] + 1
            if step != perturb_step:
                return output
            hidden = output[1] if isinstance(output, tuple) else output
            delta = torch.randn(hidden.shape, generator=noise_gen).to(hidden) * scale * hidden.std()
            run.delta_sq = delta.pow(2).flatten(1).sum(1)
            hidden = hidden + delta
            return (output[0], hidden) if isinstance(output, tuple) else hidden

        handle = last_block.register_forward_hook(hook)
        try:
            generators = [torch.Generator().manual_seed(seed + i) for i in range(samples)]
            return pipe(labels, num_inference_steps=steps, guidance_scale=guidance, generator=generators,
                        output_type="pt").images
        finally:
            handle.remove()

    pipe.set_progress_bar_config(disable=True)
    reference = run(None)
    weights = []
    for step in range(steps):
        moved = (run(step) - reference).pow(2).flatten(1).sum(1)
        weights.append((moved / run.delta_sq).mean())
    weights = torch.stack(weights)
    return weights / weights.mean()
