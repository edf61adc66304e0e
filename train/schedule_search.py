"""Offline search for the best *fixed* compute schedule at a budget: the honest baseline for a
per-sample policy (if a searched fixed schedule ties it, per-sample decisions are not paying).

Greedy local search over masks, scored on training seeds only: start from the uniform schedule with
the budget's computes (first and last step included), move one compute by a few steps at a time,
keep the best move of each sweep, stop when no move helps.
"""

from __future__ import annotations

from tqdm.auto import tqdm

import cachepilot
from cachepilot.envs.references import uniform_mask
from cachepilot.pipeline import DigitsDiTPipeline
from cachepilot.policies.baselines import Schedule
from cachepilot.policies.budget import budget_computes
from cachepilot.predictors.spec import make_predictor
from cachepilot.quality import psnr
from cachepilot.sampling import sample_images


def search_schedule(
    pipe: DigitsDiTPipeline, target: float, num_steps: int = 50, samples: int = 16, seed: int = 300_000,
    predictor: str = "learned", max_sweeps: int = 6, shifts: tuple[int, ...] = (-2, -1, 1, 2), progress: bool = True,
) -> tuple[list[bool], float]:
    """(best mask, its mean PSNR vs. full compute on the training seeds)."""
    labels = [i % 10 for i in range(samples)]
    pipe.set_progress_bar_config(disable=True)
    reference = sample_images(pipe, labels, seed=seed, num_inference_steps=num_steps)
    forecaster = make_predictor(predictor)

    def score(mask: list[bool]) -> float:
        cachepilot.enable(pipe, Schedule(mask), forecaster)
        try:
            return psnr(sample_images(pipe, labels, seed=seed, num_inference_steps=num_steps), reference)
        finally:
            cachepilot.disable(pipe)

    best = uniform_mask(num_steps, budget_computes(target, num_steps))
    best_score = score(best)
    for _ in tqdm(range(max_sweeps), desc=f"search {target:g}", disable=not progress):
        candidates = []
        for step in [s for s, on in enumerate(best) if on and 0 < s < num_steps - 1]:
            for shift in shifts:
                new = step + shift
                if 0 < new < num_steps - 1 and not best[new]:
                    mask = list(best)
                    mask[step], mask[new] = False, True
                    candidates.append(mask)
        scored = [(score(mask), mask) for mask in candidates]
        top_score, top = max(scored, key=lambda pair: pair[0], default=(best_score, best))
        if top_score <= best_score:
            break
        best, best_score = top, top_score
    return best, best_score
