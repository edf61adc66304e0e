"""Synthetic computed-residual histories for the forecaster tests, and a tiny-transformer engine run."""

from __future__ import annotations

from collections.abc import Callable

import torch

from cachepilot.core.predictor import Predictor

SHAPE = (16, 4)  # (tokens, channels): 16 tokens, a 4 x 4 patch grid


def fill_history(predictor: Predictor, steps_per_row: list[list[int]], fn: Callable, shape=SHAPE):
    """Row r computed at steps_per_row[r] (oldest first) with residual fn(step, row); rows pushed one by one,
    as the engine pushes rows that compute at different steps."""
    history = predictor.new_history()
    history.allocate(torch.zeros(len(steps_per_row), *shape))
    for k in range(max(len(s) for s in steps_per_row)):
        for r, steps in enumerate(steps_per_row):
            if k < len(steps):
                history.update(torch.tensor([r]), steps[k], fn(steps[k], r)[None])
    return history


def polynomial(degree: int, shape=SHAPE, seed: int = 0) -> Callable:
    """fn(step, row): a polynomial of `degree` in the step, with random coefficients per row."""
    base = torch.randn(degree + 1, *shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return lambda s, r: sum(base[k] * (s / 10) ** k * (r + 1) for k in range(degree + 1)).float()


def engine_outputs(predictor, steps: int = 8, interval: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """(outputs with `predictor` under fixed:`interval`, outputs with reuse under the same schedule) of a tiny DiT."""
    from cachepilot.policies.baselines import FixedInterval
    from cachepilot.predictors.taylor import Reuse
    from cachepilot.runtime.hooks import apply_cache, remove_cache

    from ..runtime.tiny_models import build, run

    model, x, kwargs = build("dit", batch=2)
    outputs = []
    for p in (predictor, Reuse()):
        apply_cache(model, FixedInterval(interval), p)
        try:
            outputs.append(run(model, x, kwargs, steps))
        finally:
            remove_cache(model)
    return outputs[0], outputs[1]
