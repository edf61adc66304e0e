"""The lean fit: searched schedules and a training-free forecaster chosen on a few references, no head, no PPO.

The full recipe trains a forecaster head, searches masks move by move and trains a policy: on the embedded models
that is 10^5-10^6 transformer evaluations, tens of GPU-hours on a large model. The lean recipe keeps the two
choices that carry most of the gain over a training-free cache and costs each evaluation once:

1. references: `samples` full-compute samples, sampled once and shared by every score below;
2. the masks: per target, every start of the full search (`start_masks`: uniform, warm-ups, TaylorSeer's and
   FORA's schedules within the budget) with Taylor-1 (the first of `forecasters`), the best median PSNR over the
   samples kept: on 4 samples one sample a mask happens to suit moves a mean by dBs (the best mean lost 6 dB held
   out on the scenes model at 20 and 30 steps / 0.5; `experiments/lean_choice.py`);
3. the forecasters: each of `forecasters` (training-free, `predictors/`) on that mask; another replaces the first
   (Taylor-1) only where its mean gain over it on the samples exceeds its paired standard error
   (`choose_forecaster`), the largest such gain kept. Chosen on the mask it will run: chosen on the uniform masks
   instead, the forecaster (one for all targets, or one per target) lost up to 5 dB held out on the scenes model at
   50 steps where the masks it then ran differed. The best mean alone, on 4 samples, took HiCache's Hermite for a
   0.5 dB gain within a 2.8 dB standard error on the scenes model at 50 steps / 0.2 and lost 2.4 dB held out.
   No sweeps: two of them after the choice, on the same few samples, raised the training scores and moved nothing
   held out, for 4.6x the search's evaluations (`experiments/lean_sweeps.py`, docs/research-log.md).

Per sample the cost is S + sum_t (computes of every start at t) + (F - 1) x sum_t (computes of the chosen mask, at
most c(t): the first forecaster's score of it is the mask search's) evaluations (times the CFG copies);
`train.plan` counts it the same way (an upper bound: a start with fewer computes than the budget, FORA's or
TaylorSeer's, may be chosen). Under `torchrun` the scores are shared across the ranks like the full search's
(`train.distributed`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from cachepilot.driver import SamplingDriver
from cachepilot.policies.budget import budget_computes
from cachepilot.seeds import SEARCH
from cachepilot.train import distributed
from cachepilot.train.incremental import MaskScorer
from cachepilot.train.schedule_search import start_masks

# Taylor 1 and 2 (TaylorSeer), HiCache's Hermite basis, a rank-1 DMD, plain reuse (FORA): each is the best
# training-free forecaster somewhere on the embedded models (`docs/forecasters.md`); Taylor-1 first, as the masks
# are chosen with it. On the masks chosen, reuse won the scenes model's 20-step fit at 0.2-0.3 (+4.7 and +4.3 dB
# held out over the four others) and nowhere at 50 steps.
LEAN_FORECASTERS = ("taylor:1", "taylor:2", "hermite:2", "dmd:1", "reuse")


@dataclass
class LeanResult:
    forecaster: str                              # the best mean over the targets (for a target not searched)
    forecaster_scores: dict[str, dict[float, float]]  # forecaster -> target -> PSNR on the target's chosen mask
    forecasters: dict[float, str] = field(default_factory=dict)  # target -> the forecaster chosen for it
    schedules: dict[float, tuple[list[bool], float]] = field(default_factory=dict)  # target -> (mask, PSNR)


def lean_starts(num_steps: int, target: float) -> list[list[bool]]:
    """The masks the lean recipe scores at one target: the full search's starts (last step forecast allowed)."""
    return start_masks(num_steps, budget_computes(target, num_steps), compute_last=False)


def choose_forecaster(per_sample: np.ndarray) -> int:
    """The row of `per_sample` (forecasters x samples, PSNR on one mask) to keep: the first, unless another's mean
    gain over it exceeds that gain's paired standard error; then the largest such gain (ties to the first listed).
    On a few samples one easy sample moves a mean by dBs: the first forecaster is the prior a gain must beat."""
    gains = per_sample[1:] - per_sample[0]
    if not len(gains) or gains.shape[1] < 2:  # no other forecaster, or no spread to judge a gain by
        return 0
    mean = gains.mean(axis=1)
    standard_error = gains.std(axis=1, ddof=1) / np.sqrt(gains.shape[1])
    eligible = np.where((mean > 0) & (mean > standard_error), mean, -np.inf)
    return 0 if not np.isfinite(eligible.max()) else 1 + int(np.argmax(eligible))


def ranked_starts(per_sample: Callable[[list[bool], str], list[float]], steps: int, targets: list[float],
                  forecaster: str, samples: int) -> dict[float, list[tuple[list[bool], list[float]]]]:
    """Per target, every start (`lean_starts`) with its per-sample PSNR under `forecaster`, the best median
    first (ties in the starts' order)."""
    ranked = {}
    for target in targets:
        starts = lean_starts(steps, target)
        found = distributed.map_shared_rows(lambda mask: per_sample(mask, forecaster), starts, samples)
        order = sorted(range(len(starts)), key=lambda i: -float(np.median(found[i])))
        ranked[target] = [(starts[i], found[i]) for i in order]
    return ranked


def lean_search(driver: SamplingDriver, conditions: list[dict], targets: list[float], samples: int = 4,
                forecasters: tuple[str, ...] = LEAN_FORECASTERS, seed: int = SEARCH) -> LeanResult:
    """Per target the mask with the first forecaster (the best median PSNR vs. full compute over `samples` training
    samples: condition i mod len(conditions), seed `seed + i`; ties to the first start), then the forecaster on it
    (`choose_forecaster`). The driver's pipeline must be unhooked."""
    per_sample = MaskScorer(driver, conditions, 0, samples, seed).per_sample
    masks, first = {}, []
    for target, ranked in ranked_starts(per_sample, driver.num_steps, targets, forecasters[0], samples).items():
        masks[target] = ranked[0][0]
        first.append(ranked[0][1])  # the first forecaster on the chosen mask: scored already
    pairs = [(f, masks[t]) for f in forecasters[1:] for t in targets]
    others = distributed.map_shared_rows(lambda pair: per_sample(pair[1], pair[0]), pairs, samples)
    rows = np.array(first + others).reshape(len(forecasters), len(targets), samples)
    scores = rows.mean(axis=2)
    result = LeanResult(forecasters[int(np.argmax(scores.mean(axis=1)))],
                        {f: {t: float(v) for t, v in zip(targets, row)} for f, row in zip(forecasters, scores)})
    for j, target in enumerate(targets):
        best = choose_forecaster(rows[:, j])
        result.forecasters[target] = forecasters[best]
        result.schedules[target] = (masks[target], float(scores[best, j]))
    return result


def lean_evaluations(steps: int, targets: list[float], samples: int,
                     forecasters: tuple[str, ...] = LEAN_FORECASTERS) -> int:
    """Sample-steps the lean search evaluates (times the CFG copies for evaluations): the plan's count (a chosen
    mask may compute less than the budget: an upper bound then)."""
    budgets = sum(budget_computes(t, steps) for t in targets)
    starts = sum(sum(sum(mask) for mask in lean_starts(steps, t)) for t in targets)
    return samples * (steps + (len(forecasters) - 1) * budgets + starts)
