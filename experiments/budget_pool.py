"""Could a batch-pooled budget pay? Each sample's fidelity at every budget of a grid, the best split of the batch's
computes among its samples at the same total, and whether that split survives new noise under the same conditions.

A batch-pooled budget (issue 12's "actions with more reach") lets a sample that needs more computes take them from
one that needs fewer, the batch's total unchanged. Before building it into the policy, this measures its ceiling:

1. Curves: every sample sampled with the prior's (searched) mask at each target of --grid, all rows of one call at one
   target, PSNR against its full-compute images (the bench's measure).
2. Oracle split: per --targets budget, the per-sample choice of grid targets that maximises the mean PSNR with the
   total computes at most the uniform split's (a multiple-choice knapsack, solved exactly), on the fitting seeds.
3. What a condition carries: the split fitted on the fitting seeds' curves (each condition's mean curve over its
   --seeds-per-condition seeds) given to as many *fresh* seeds of the same conditions, at the same total. This is
   the most a splitter that sees the condition (a prompt embedding, free at step 0) could take; the in-sample gain
   above it is the noise's, which only a splitter that watches the sampling could reach.

    python -m experiments.budget_pool --pipeline checkpoints/scenes-flux --cache checkpoints/scenes-flux-cache \\
        --predictor gated:checkpoints/scenes-flux-cache/predictors --steps 50 --conditions 64 --out pool50.json

Compute counts block-stack evaluations, as the bench does (a computed step is the whole stack).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from cachepilot.errors import InvalidInputError
from cachepilot.seeds import POLICY_TRAINING
from experiments.options import add_pipeline_args

DEFAULT_GRID = tuple(round(0.1 + 0.05 * i, 2) for i in range(13))  # 0.1 .. 0.7


def allocate(values: np.ndarray, costs: np.ndarray, total: int) -> np.ndarray:
    """(N,) index into the G choices, one per row of `values` (N, G), maximising the sum of the chosen values with
    the chosen `costs` (G,) non-negative integers summing to at most `total` (a multiple-choice knapsack, by dynamic
    programming over the spent total: N x G vector operations of length total + 1)."""
    values, costs = np.asarray(values, dtype=np.float64), np.asarray(costs, dtype=np.int64)
    if values.ndim != 2 or costs.shape != (values.shape[1],) or (costs < 0).any():
        raise ValueError("values must be (N, G) and costs (G,) non-negative integers")
    if total < values.shape[0] * costs.min():
        raise ValueError(f"total {total} is below the cheapest choice for every row")
    best = np.full(total + 1, -np.inf)  # best[s]: the best sum of the rows so far spending exactly s
    best[0] = 0.0
    choices = np.zeros((values.shape[0], total + 1), dtype=np.int64)
    for row, row_values in enumerate(values):
        new = np.full(total + 1, -np.inf)
        for j, cost in enumerate(costs.tolist()):
            if cost > total:
                continue
            candidate = np.full(total + 1, -np.inf)
            candidate[cost:] = best[:total + 1 - cost] + row_values[j]
            better = candidate > new
            new[better], choices[row, better] = candidate[better], j
        best = new
    spent = int(np.argmax(best))
    picks = np.zeros(values.shape[0], dtype=np.int64)
    for row in range(values.shape[0] - 1, -1, -1):
        picks[row] = choices[row, spent]
        spent -= int(costs[picks[row]])
    return picks


def _paired(gain_rows: np.ndarray, k: int) -> tuple[float, float]:
    """Mean and standard error of per-sample gains, over conditions (each condition's k rows averaged first)."""
    per_condition = gain_rows.reshape(-1, k).mean(1)
    return float(per_condition.mean()), float(per_condition.std(ddof=1) / np.sqrt(len(per_condition)))


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson's r; NaN where either side is constant (nothing to correlate)."""
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def pooled_headroom(fit: np.ndarray, fresh: np.ndarray, costs: np.ndarray, column: int,
                    seeds_per_condition: int) -> dict:
    """The figures at one budget (the grid's `column`), from PSNR curves (N, G) of the fitting and the fresh samples
    (rows grouped by condition, `seeds_per_condition` consecutive rows each, the same conditions in both).

    Three splits, each at the uniform split's total: the oracle's (each fitting sample its own curve), the
    condition's (each condition's mean fitting curve, given to its fresh seeds) and a blind mixture (the mean curve of
    all fitting samples, split among samples without looking at them: grid masks that are better mixed than the
    target's own, e.g. half the samples a step up, half a step down). What the condition carries is the condition
    split's gain on fresh seeds *over the blind mixture's*."""
    k = seeds_per_condition
    rows = np.arange(fit.shape[0])
    budget = int(costs[column])
    own = allocate(fit, costs, budget * fit.shape[0])
    by_condition = fit.reshape(-1, k, fit.shape[1]).mean(1)  # each condition's mean curve over its fitting seeds
    condition_split = np.repeat(allocate(by_condition, costs, budget * by_condition.shape[0]), k)
    mixture = allocate(np.tile(fit.mean(0), (fit.shape[0], 1)), costs, budget * fit.shape[0])
    mixture = mixture[np.random.default_rng(0).permutation(len(mixture))]  # blind: which sample gets which is chance
    uniform_fit, uniform_fresh = fit[:, column], fresh[:, column]
    condition_gain, condition_se = _paired(fresh[rows, condition_split] - uniform_fresh, k)
    mixture_gain, mixture_se = _paired(fresh[rows, mixture] - uniform_fresh, k)
    over_mixture, over_mixture_se = _paired(fresh[rows, condition_split] - fresh[rows, mixture], k)
    return {
        "computes_per_sample": budget,
        "uniform_psnr_fitting_seeds": float(uniform_fit.mean()),
        "uniform_psnr_fresh_seeds": float(uniform_fresh.mean()),
        "oracle_split_gain_db": float((fit[rows, own] - uniform_fit).mean()),
        "oracle_split_samples_moved": float((own != column).mean()),
        "condition_split_gain_db_fitting_seeds": float((fit[rows, condition_split] - uniform_fit).mean()),
        "condition_split_gain_db_fresh_seeds": condition_gain, "condition_split_gain_se": condition_se,
        "condition_split_samples_moved": float((condition_split != column).mean()),
        "mixture_split_gain_db_fresh_seeds": mixture_gain, "mixture_split_gain_se": mixture_se,
        "mixture_split_computes": sorted(int(c) for c in set(costs[mixture].tolist())),
        "condition_over_mixture_db_fresh_seeds": over_mixture, "condition_over_mixture_se": over_mixture_se,
        # does a sample's fidelity at this budget carry over to another seed of its condition?
        "psnr_correlation_across_seeds": _correlation(uniform_fit, uniform_fresh),
    }


@torch.no_grad()
def budget_curves(driver, conditions: list[dict], seeds: list[int], prior, predictor, grid: list[float],
                  progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """PSNR (N, G) of every sample with the prior's mask at each grid target, and each target's computes (G,)."""
    from cachepilot.driver import caching
    from cachepilot.policies.baselines import Schedule
    from cachepilot.quality import psnr_per_image

    reference = driver.sample(conditions, seeds).images
    psnr, costs = [], []
    for target in tqdm(grid, desc="budgets", disable=not progress):
        mask = prior.mask(target, driver.num_steps)  # one mask for every row: the driver may split the batch
        with caching(driver.pipe, Schedule(mask), predictor):
            psnr.append(psnr_per_image(driver.sample(conditions, seeds).images, reference).numpy())
        costs.append(sum(mask))
    return np.stack(psnr, 1), np.array(costs)


def check_args(grid: list[float], targets: list[float], conditions: int, seeds_per_condition: int) -> None:
    if not grid or any(not 0 < g <= 1 for g in grid):
        raise InvalidInputError(f"--grid targets must be in (0, 1], got {grid}")
    missing = [t for t in targets if round(t, 6) not in {round(g, 6) for g in grid}]
    if not targets or missing:
        raise InvalidInputError(f"--targets must be targets of --grid: {missing or 'none given'}")
    if conditions < 2 or seeds_per_condition < 1:
        raise InvalidInputError(f"--conditions must be >= 2 and --seeds-per-condition >= 1, got {conditions}, "
                                f"{seeds_per_condition}")


def figures_from_curves(record: dict, targets: list[float]) -> dict:
    """The per-target figures from a record holding the curves (`main`'s output): no sampling."""
    grid, k = [round(g, 6) for g in record["grid"]], int(record["seeds_per_condition"])
    fit, fresh = np.array(record["curves"]["fitting"]), np.array(record["curves"]["fresh"])
    costs = np.array(record["computes"])
    return {f"{t:g}": pooled_headroom(fit, fresh, costs, grid.index(round(t, 6)), k) for t in targets}


def sample_curves(args: argparse.Namespace, grid: list[float]) -> dict:
    """Sample the curves (fitting and fresh seeds of --conditions conditions) and what they were sampled with."""
    from experiments.headroom import load_setup
    from cachepilot.driver import SamplingDriver
    from cachepilot.predictors.spec import make_predictor

    tic = time.perf_counter()
    pipe, prior_path, prior, predictor, steps, call_kwargs, pool, source = load_setup(args)
    rng = np.random.default_rng(0)
    picked = [pool[i % len(pool)] for i in rng.permutation(max(len(pool), args.conditions))[:args.conditions]]
    k = args.seeds_per_condition
    conditions = [c for c in picked for _ in range(k)]
    seeds = rng.choice(np.arange(*POLICY_TRAINING), 2 * len(conditions), replace=False).tolist()  # training seeds
    driver = SamplingDriver(pipe, steps, call_kwargs, batch_size=2 * len(conditions))
    psnr, costs = budget_curves(driver, conditions + conditions, seeds, prior, make_predictor(predictor), grid)
    return {
        "grid": grid, "computes": costs.tolist(), "uniform_psnr_by_target": [round(float(v), 3) for v in psnr.mean(0)],
        "conditions": args.conditions,
        "distinct_conditions": len({json.dumps(c, sort_keys=True, default=str) for c in picked}),
        "seeds_per_condition": k, "condition_source": source, "steps": steps, "call_kwargs": call_kwargs,
        "pipeline": str(getattr(pipe, "name_or_path", None) or type(pipe).__name__),
        "pipeline_class": type(pipe).__name__, "prior": str(prior_path), "predictor": predictor,
        "threads": torch.get_num_threads(), "wall_s": round(time.perf_counter() - tic, 1),
        "curves": {"fitting": np.round(psnr[:len(conditions)], 3).tolist(),
                   "fresh": np.round(psnr[len(conditions):], 3).tolist()},
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--conditions", type=int, default=64, help="distinct conditions (prompts, classes) drawn")
    parser.add_argument("--seeds-per-condition", type=int, default=1,
                        help="fitting seeds per condition (as many fresh ones score the condition's split)")
    parser.add_argument("--grid", type=float, nargs="+", default=list(DEFAULT_GRID),
                        help="the compute targets a sample may be given")
    parser.add_argument("--targets", type=float, nargs="+", default=[0.2, 0.3, 0.4, 0.5],
                        help="the batch budgets (mean compute targets) split; each a --grid target")
    parser.add_argument("--steps", type=int, default=None,
                        help="denoising steps (default: the searched schedules' own, 50 for the digits model)")
    parser.add_argument("--cache", type=Path, default=None, help="a `cachepilot fit` directory (as the headroom tool)")
    parser.add_argument("--prior", type=Path, default=None, help="searched_schedules.json (default: the cache's)")
    parser.add_argument("--predictor", default=None, help="forecaster spec (default: the cache's learned head)")
    parser.add_argument("--from", dest="source", type=Path, default=None,
                        help="an earlier --out: its curves again, other --targets, no sampling")
    parser.add_argument("--out", type=Path, default=None, help="write the figures (and the curves) as JSON here")
    add_pipeline_args(parser)
    args = parser.parse_args(argv)
    if args.source is not None:
        try:
            record = json.loads(args.source.read_text())
            grid = [round(g, 6) for g in record["grid"]]
            record["curves"]["fitting"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise InvalidInputError(f"--from {args.source}: not a budget_pool output with curves ({err})") from None
        check_args(grid, args.targets, 2, 1)
        record = {key: value for key, value in record.items() if key in RECORD_KEYS}
    else:
        grid = sorted({round(g, 6) for g in args.grid})
        check_args(grid, args.targets, args.conditions, args.seeds_per_condition)
        record = sample_curves(args, grid)
    figures = {**figures_from_curves(record, args.targets), **record}
    print(json.dumps({key: value for key, value in figures.items() if key != "curves"}, indent=2))
    if args.out:
        args.out.write_text(json.dumps(figures, indent=1))
    return figures


RECORD_KEYS = ("grid", "computes", "uniform_psnr_by_target", "conditions", "distinct_conditions",
               "seeds_per_condition", "condition_source", "steps", "call_kwargs", "pipeline", "pipeline_class", "prior",
               "predictor", "threads", "wall_s", "curves")


if __name__ == "__main__":
    main()
