"""Offline search for the best *fixed* compute schedule at a budget: the honest baseline for a
per-sample policy (if a searched fixed schedule ties it, per-sample decisions are not paying).

Greedy local search over masks, scored on training seeds only: start from the best of the uniform schedule
with the budget's computes and TaylorSeer-shaped ones (the first few steps all computed, then evenly spaced:
single moves from uniform never reach that shape, which beat the uniform-started search by 2.6 dB at 50 steps),
each with the last step computed and, unless `compute_last`, with it forecast (the rest centred in equal slices,
as TaylorSeer's own schedule leaves the last step to its forecast: on the scenes model at 50 steps its mask beat
the same warm-up spread to the last step by 4.1 dB at compute 0.3; and the uniform spread up to the
second-to-last step, where the scenes cache's searched masks at 50 steps / 0.2-0.4 compute last), move one
compute by a few steps at a time, keep the best move of each sweep, stop when no move helps. Only the first step
is always computed. A move leaves the steps before it as they were: each sweep samples its incumbent once and every
move forks from that run (`train.incremental`).

Under `torchrun` the candidates of each round (the starts, each sweep's moves, the re-scoring for the selection)
are split across the ranks and their scores gathered in order (`train/distributed.py`): every rank then takes the
same best, ties to the first as in one process, so the result is the one-process result. Each rank samples the
full-compute references itself (one batch, against a round of candidates: cheaper than sending images around).
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from cachepilot.driver import SamplingDriver
from cachepilot.envs.references import uniform_mask
from cachepilot.errors import InvalidInputError
from cachepilot.policies.baselines import taylorseer_mask
from cachepilot.policies.budget import budget_computes
from cachepilot.predictors.spec import make_predictor
from cachepilot.seeds import SEARCH, SEARCH_SELECT_OFFSET
from cachepilot.train import distributed
from cachepilot.train.incremental import MaskScorer


def warmup_mask(num_steps: int, computes: int, warmup: int, open_end: bool = False) -> list[bool]:
    """The first `warmup` steps computed, the other computes evenly spaced after them up to the last step, or
    (open_end) each centred in one of equal slices of the steps after the warm-up, the last half a slice before
    the end."""
    if computes <= 1 or num_steps <= 1:  # no room for a warm-up and a spread: the first `computes` steps
        return [s < max(computes, 1) for s in range(num_steps)]
    warmup = max(1, min(warmup, computes - 1))
    if open_end:
        slice_width = (num_steps - warmup) / (computes - warmup)
        rest = (warmup - 0.5 + slice_width * (np.arange(computes - warmup) + 0.5)).round().astype(int).tolist()
    else:
        rest = np.linspace(warmup - 1, num_steps - 1, computes - warmup + 1)[1:].round().astype(int).tolist()
    chosen = set(range(warmup)) | set(rest)
    return [s in chosen for s in range(num_steps)]


def start_masks(num_steps: int, computes: int, max_warmup: int = 4, compute_last: bool = True) -> list[list[bool]]:
    """The search's candidate starts: uniform, then warm-ups of 2..max, each with exactly `computes` computes;
    without compute_last also the open-ended ones (warm-ups of 1..max, the last step forecast), the uniform spread
    up to the second-to-last step (`uniform_to_penultimate`) and the training-free schedules within the budget
    (`training_free_masks`)."""
    starts = [uniform_mask(num_steps, computes)]
    shapes = [(w, False) for w in range(2, max_warmup + 1)]
    if not compute_last:
        shapes += [(w, True) for w in range(1, max_warmup + 1)]
    candidates = [warmup_mask(num_steps, computes, warmup, open_end) for warmup, open_end in shapes]
    if not compute_last:
        candidates.append(uniform_to_penultimate(num_steps, computes))
    for mask in candidates:
        if sum(mask) == computes and mask not in starts:
            starts.append(mask)
    if not compute_last:
        starts += [mask for mask in training_free_masks(num_steps, computes) if mask not in starts]
    return starts


def uniform_to_penultimate(num_steps: int, computes: int) -> list[bool]:
    """`computes` evenly spaced from the first step to the second-to-last, the last step forecast from one step
    away. Neither the uniform start (the last step computed) nor the open-ended ones (the last half slice, several
    steps, forecast) place it: on the scenes model at 50 steps / 0.2 it beat every other start by 2.5-14 dB on
    32 held-out prompts with Taylor-1 (39.98 dB; the open-ended uniform, which 4 training samples chose, 35.54)."""
    if computes >= num_steps:
        return [True] * num_steps
    return uniform_mask(num_steps - 1, computes) + [False]


def training_free_masks(num_steps: int, computes: int) -> list[list[bool]]:
    """FORA's fixed interval and TaylorSeer's schedule with the most computes within the budget (fewer computes
    where no interval spends it exactly): starts, so that the search never ends behind those schedules on its
    training samples. At 75 steps / 0.3 TaylorSeer's interval-4 mask (compute 0.28) beat the searched one by 2.4 dB
    held-out, and no start could reach it with the budget's 22 computes."""
    masks = []
    for shape in ([s % k == 0 for s in range(num_steps)] for k in range(2, num_steps)), \
            ([c == "1" for c in taylorseer_mask(k, num_steps)] for k in range(2, num_steps)):
        within = [mask for mask in shape if sum(mask) <= computes]
        if within:
            masks.append(max(within, key=sum))  # the first with the most computes: the shortest interval
    return masks


def search_schedule(
    driver: SamplingDriver, conditions: list[dict], target: float, samples: int = 16, seed: int = SEARCH,
    predictor: str = "learned", max_sweeps: int = 6, shifts: tuple[int, ...] = (-2, -1, 1, 2), progress: bool = True,
    compute_last: bool = False, extra_starts: list[list[bool]] | tuple = (), select_samples: int = 0,
    incremental: bool = True,
) -> tuple[list[bool], float]:
    """(best mask, its mean PSNR vs. full compute) over `samples` training samples: condition i mod
    len(conditions), seed `seed + i`, sampled through the driver's pipeline (which must be unhooked).
    compute_last keeps the last step computed (a prior for a policy trained with such masks: the policy's
    budget rules follow its prior, `SchedulePrior.computes_last`). extra_starts: more candidate starts (an earlier
    search's mask, to refine it), each with at most the budget's computes. select_samples > 0: every start and
    each sweep's best are scored again on that many other training samples (conditions from `samples` on, seeds
    `seed + 50_000 + i`) and the best there is returned with that score: on the scenes model the 16 samples of a
    search picked a 20-step mask at compute 0.5 that lost 2.8 dB to fixed interval 2, one of its starts, on 64
    validation samples (held out: +1.0 dB for the selection there, but -1.2 dB at 50 steps / 0.2, where it
    preferred a start to the searched mask: a guard against a bad pick, not a sure gain). incremental: each sweep's
    moves fork from the incumbent's recorded run at their first changed step (`train.incremental`; the same scores,
    bit for bit, for about half the evaluations); False samples every move in full."""
    num_steps = driver.num_steps
    forecaster = make_predictor(predictor)
    scorer = MaskScorer(driver, conditions, 0, samples, seed)

    computes = budget_computes(target, num_steps)
    starts = start_masks(num_steps, computes, compute_last=compute_last)
    for mask in extra_starts:
        if len(mask) != num_steps or sum(mask) > computes or not mask[0] or (compute_last and not mask[-1]):
            raise InvalidInputError(f"a start mask for target {target:g} must have {num_steps} steps, at most "
                                    f"{computes} computes, the first step{' and the last' if compute_last else ''} "
                                    "among them")
        starts.append(list(mask))
    best_score, best = _best(lambda mask: scorer.score(mask, forecaster), starts)
    path = [list(mask) for mask in starts]
    end = num_steps - 1 if compute_last else num_steps  # moves stay before it
    best, best_score, moved = sweep(scorer, forecaster, best, best_score, max_sweeps, shifts, end,
                                    desc=f"search {target:g}" if progress else None, incremental=incremental)
    path += moved
    if select_samples > 0:
        select = MaskScorer(driver, conditions, samples, select_samples, seed + SEARCH_SELECT_OFFSET)
        best_score, best = _best(lambda mask: select.score(mask, forecaster), path)
    return best, best_score


def sweep(scorer: MaskScorer, forecaster, best: list[bool], best_score: float, max_sweeps: int,
          shifts: tuple[int, ...] = (-2, -1, 1, 2), end: int | None = None, desc: str | None = None,
          incremental: bool = True) -> tuple[list[bool], float, list[list[bool]]]:
    """Greedy sweeps from `best` (scored `best_score`): every move of one compute (not the first step, none at or
    after `end`) by one of `shifts` onto a step that skips, the best move kept while it helps. Returns the best mask,
    its score and each sweep's best (the path). incremental: the moves fork from the incumbent's run."""
    end = len(best) if end is None else end
    path = []
    for _ in tqdm(range(max_sweeps), desc=desc, disable=desc is None or distributed.rank() != 0):
        candidates = []
        for step in [s for s, on in enumerate(best) if on and 0 < s < end]:
            for shift in shifts:
                new = step + shift
                if 0 < new < end and not best[new]:
                    mask = list(best)
                    mask[step], mask[new] = False, True
                    candidates.append(mask)
        if not candidates:
            break
        forks = scorer.forks(best, forecaster, candidates) if incremental else None
        top_score, top = _best(forks.score if forks else lambda mask: scorer.score(mask, forecaster), candidates)
        if top_score <= best_score:
            break
        best, best_score = top, top_score
        path.append(best)
    return best, best_score, path


def sweep_evaluations(computes: int, shifts: tuple[int, ...] = (-2, -1, 1, 2)) -> int:
    """Sample-steps one incremental sweep computes at most, from a mask of `computes` computes: its incumbent once,
    and each move of the j-th compute (j = 1..c-1) from its first changed step on, at most c - j + 1 computes."""
    return computes + len(shifts) * (computes * (computes + 1) // 2 - 1)


def _best(score, masks: list[list[bool]]) -> tuple[float, list[bool]]:
    """(score, mask) of the best-scoring mask, the first of a tie; the masks scored across the ranks."""
    scores = distributed.map_shared(score, masks)
    top = max(range(len(masks)), key=scores.__getitem__)
    return scores[top], masks[top]
