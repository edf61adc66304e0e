"""Do per-sample caching decisions have headroom, and can a policy see it? The figures that answer it.

1. Headroom: each training sample's own greedily improved mask (`train.oracle`, which sees the
   full-compute reference) vs. the prior (searched) schedule, in dB of final distance; the same masks
   given to *other* samples of the same budget (is it per-sample, or just a better common schedule?);
   and the own masks on perturbed noise (fresh references: is it a stable property of the sample, or
   selection on chance?), down to wholly new noise under the same condition. With --seeds-per-condition K,
   also one mask per condition fitted on K seeds and scored on K fresh ones: what a policy that sees only the
   condition (a prompt embedding, known at step 0) could at best take.
2. Visibility: a small classifier fitted on half the samples is asked, on the other half, to find
   each sample's *first* deviation from the prior among the steps before it (AUC), from all the
   policy's observation features vs. from the time/budget features alone (and, with --first-block-probe, with a
   First-Block-Cache probe's features added). Later deviations are
   mostly consequences of the first (catching up on the budget), so the first is the one that says
   whether the observation tells "this sample should leave the schedule here".

Any pipeline, as `cachepilot fit` / `cachepilot bench` take one: the samples are the bench's conditions
(--prompts' evaluation split; the scenes pipeline's held-out prompts; the cache's evaluation split; every class
of a class-conditional pipeline) with training seeds, the prior is the cache's searched schedules and the
forecaster its learned head (the digits model: the shipped cache, 50 steps).

    python -m experiments.headroom --samples 128 --sweeps 3
    python -m experiments.headroom --pipeline checkpoints/scenes-flux --cache checkpoints/scenes-flux-cache \
        --samples 64 --sweeps 2 --out runs/headroom-scenes.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from experiments.first_block_probe import PROBE_FEATURES, first_block_probe_features
from cachepilot.bench.runner import evaluation_conditions
from cachepilot.cache_checkpoint import FALLBACK_PREDICTOR, CacheCheckpoint
from cachepilot.conditions import ConditionSet
from cachepilot.embedded.base import call_kwargs_for, embedded_for
from cachepilot.loading import load_pipeline
from cachepilot.driver import SamplingDriver, caching, unhooked_twin
from cachepilot.envs.caching_env import make_episodes
from cachepilot.envs.references import relative_distance
from cachepilot.errors import InvalidInputError
from cachepilot.policies.baselines import Schedule
from cachepilot.policies.features import FEATURES
from cachepilot.policies.prior import SchedulePrior
from cachepilot.predictors.spec import make_predictor
from cachepilot.core.actions import Action
from cachepilot.searched import SearchedSchedules
from cachepilot.seeds import POLICY_TRAINING
from cachepilot.train.oracle import follow_masks, oracle_masks
from experiments.options import add_pipeline_args


def fit_classifier(features: torch.Tensor, computes: torch.Tensor, epochs: int = 300) -> torch.nn.Module:
    """A 64x64 tanh MLP (the policy's actor shape) predicting 'compute now' by logistic regression."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(features.shape[1], 64), torch.nn.Tanh(), torch.nn.Linear(64, 64),
                              torch.nn.Tanh(), torch.nn.Linear(64, 1))
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(epochs):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(features).squeeze(1), computes.float())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return net


def deviation_examples(obs: torch.Tensor, computes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """From (T, N, F) observations along the oracle's masks and its (T, N) 'compute' decisions: the
    observations of every step up to each sample's first deviation from the prior, labelled True at
    the deviation (later deviations are mostly consequences of the first: catching up on the budget)."""
    prior = obs[..., FEATURES.index("prior_compute")] > 0.5
    rows, labels = [], []
    for i in range(obs.shape[1]):
        deviations = (computes[:, i] != prior[:, i]).nonzero().flatten()
        last = int(deviations[0]) if len(deviations) else obs.shape[0] - 1
        rows.append(obs[1:last + 1, i])
        labels.append(torch.arange(1, last + 1) == last if len(deviations) else torch.zeros(last, dtype=torch.bool))
    return torch.cat(rows), torch.cat(labels)


def auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Probability that a positive scores above a negative (ties count half)."""
    pos, neg = scores[labels][:, None], scores[~labels][None, :]
    return ((pos > neg).float() + 0.5 * (pos == neg).float()).mean().item()


def deviation_auc(obs: torch.Tensor, computes: torch.Tensor, features: list[str],
                  names: tuple[str, ...] = FEATURES) -> float:
    """Fit on the first half of the samples, AUC of finding first deviations on the second half. `names`: the
    columns of `obs` (the policy's features first, as `deviation_examples` reads the prior from them)."""
    half = obs.shape[1] // 2
    columns = [names.index(f) for f in features]
    x_fit, y_fit = deviation_examples(obs[:, :half], computes[:, :half])
    x_test, y_test = deviation_examples(obs[:, half:], computes[:, half:])
    net = fit_classifier(x_fit[:, columns], y_fit)
    with torch.no_grad():
        return auc(net(x_test[:, columns]).squeeze(1), y_test)


@contextmanager
def mixed_noise(pipe, weight: float, seed: int = 1):
    """Within the block, the pipeline's initial noise x becomes sqrt(1 - weight^2) x + weight z, z drawn from a
    fixed `seed`: diffusers pipelines draw their initial latents with `randn_tensor` of their own module (or of
    a parent class's), which is wrapped here, so the mix is in the raw noise's layout, before any scaling or
    packing, on any family."""
    modules = {m.__name__: m for m in (sys.modules.get(c.__module__) for c in type(pipe).__mro__)
               if m is not None and callable(getattr(m, "randn_tensor", None))}
    if not modules:
        raise InvalidInputError(f"{type(pipe).__name__} does not draw its noise with diffusers' randn_tensor: "
                                "cannot perturb it")
    originals = {name: module.randn_tensor for name, module in modules.items()}

    def wrap(original):
        def randn_tensor(shape, *args, generator=None, **kwargs):
            noise = original(shape, *args, generator=generator, **kwargs)
            other = original(shape, *args, generator=torch.Generator().manual_seed(seed), **kwargs)
            return (1 - weight ** 2) ** 0.5 * noise + weight * other
        return randn_tensor

    for name, module in modules.items():
        module.randn_tensor = wrap(originals[name])
    try:
        yield
    finally:
        for name, module in modules.items():
            module.randn_tensor = originals[name]


@torch.no_grad()
def image_gain(driver: SamplingDriver, conditions: list[dict], seeds: list[int], masks: torch.Tensor,
               baseline: torch.Tensor, predictor, reference: torch.Tensor) -> torch.Tensor:
    """Per sample, dB by which `masks` beat `baseline` masks (relative image distance to `reference`, the
    full-compute images of the same noise). One call holds every sample, so mask rows stay with their samples."""
    def images(rows: torch.Tensor) -> torch.Tensor:
        with caching(driver.pipe, Schedule(rows), predictor):
            return driver.sample(conditions, seeds).images

    return 20 * torch.log10(relative_distance(images(baseline), reference)
                            / relative_distance(images(masks), reference))


def perturbed_image_gain(driver: SamplingDriver, conditions: list[dict], seeds: list[int], masks: torch.Tensor,
                         baseline: torch.Tensor, predictor, weight: float) -> torch.Tensor:
    """`image_gain` with `weight` of fresh noise mixed into every sample's noise (references drawn alike)."""
    with mixed_noise(driver.pipe, weight):
        reference = driver.sample(conditions, seeds).images
        return image_gain(driver, conditions, seeds, masks, baseline, predictor, reference)


def condition_headroom(pipe, conditions: list[dict], seeds: list[int], fresh_seeds: list[int], targets: list[float],
                       prior: SchedulePrior, predictor: str, steps: int, call_kwargs: dict | None = None,
                       sweeps: int = 3, progress: bool = True) -> dict:
    """How much of the headroom does the condition alone carry (what a policy that sees only the prompt, e.g. its
    embedding, could at best take)? One mask per distinct (condition, target), improved by the oracle on all its
    `seeds` together, then scored on `fresh_seeds` (one per row, never seen by the oracle) against the prior."""
    keys = [json.dumps([c, t], sort_keys=True, default=str) for c, t in zip(conditions, targets)]
    groups = torch.tensor([sorted(set(keys)).index(k) for k in keys])
    episodes, _ = make_episodes(pipe, steps, predictor, None, None, prior,
                                ConditionSet(tuple(conditions), "headroom samples"), call_kwargs)
    prior_masks = episodes.prior.masks(targets, steps)
    prior_distance = follow_masks(episodes, seeds, conditions, targets, prior_masks)
    masks = oracle_masks(episodes, seeds, conditions, targets, sweeps=sweeps, shifts=(-1, 1), progress=progress,
                         groups=groups)
    fitted_gain = 20 * torch.log10(prior_distance / follow_masks(episodes, seeds, conditions, targets, masks))
    driver = SamplingDriver(unhooked_twin(episodes.pipe), steps, episodes.driver.call_kwargs, batch_size=len(seeds))
    episodes.close()
    reference = driver.sample(conditions, fresh_seeds).images
    fresh_gain = image_gain(driver, conditions, fresh_seeds, masks, prior_masks, make_predictor(predictor), reference)
    return {
        "conditions": len(set(keys)), "seeds_per_condition": len(seeds) / len(set(keys)),
        "condition_mask_gain_db_fitted_seeds": fitted_gain.mean().item(),
        "condition_mask_gain_db_fresh_seeds": fresh_gain.mean().item(),
        "condition_mask_decisions_differing_from_prior": (masks != prior_masks).float().mean().item(),
    }


def shuffle_within_budgets(masks: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Index permutation giving each sample another sample's mask with the same number of computes."""
    budgets = masks.sum(1)
    perm = torch.arange(len(masks))
    generator = torch.Generator().manual_seed(seed)
    for budget in budgets.unique():
        idx = (budgets == budget).nonzero().flatten()
        perm[idx] = idx[torch.randperm(len(idx), generator=generator)]
    return perm


TIME_AND_BUDGET = ["step_fraction", "since_compute", "budget_left", "target", "computes_used", "prior_compute",
                   "prior_budget_left"]


def headroom(pipe, conditions: list[dict], seeds: list[int], targets: list[float], prior: SchedulePrior,
             predictor: str, steps: int, call_kwargs: dict | None = None, sweeps: int = 3,
             perturb: tuple[float, ...] = (0.1, 1.0), probe: bool = False, progress: bool = True) -> dict:
    """The figures (see the module doc) for sample i = (conditions[i], seeds[i], targets[i]) on `pipe` at `steps`
    steps, the oracle starting from `prior`, every skipped step forecast with `predictor` (a spec). `perturb`: the
    fresh-noise weights the own masks are also scored under (1.0: the same condition on wholly new noise). `probe`:
    also the AUCs with a first-block probe's features (`bench.first_block_probe`)."""
    samples = len(seeds)
    episodes, _ = make_episodes(pipe, steps, predictor, None, None, prior,
                                ConditionSet(tuple(conditions), "headroom samples"), call_kwargs)
    prior_masks = episodes.prior.masks(targets, steps)
    prior_distance = follow_masks(episodes, seeds, conditions, targets, prior_masks)
    masks = oracle_masks(episodes, seeds, conditions, targets, sweeps=sweeps, shifts=(-1, 1), progress=progress)
    oracle_distance, obs, actions, _ = follow_masks(episodes, seeds, conditions, targets, masks, record=True)
    gain = 20 * torch.log10(prior_distance / oracle_distance)
    computes = actions == Action.COMPUTE

    # images through the same call, on a full-compute twin (the episodes' own pipe is driven by their agent)
    driver = SamplingDriver(unhooked_twin(episodes.pipe), steps, episodes.driver.call_kwargs, batch_size=samples)
    forecaster = make_predictor(predictor)
    perm = shuffle_within_budgets(masks)
    moved = perm != torch.arange(samples)
    reference = driver.sample(conditions, seeds).images
    perturbed_gain = {weight: perturbed_image_gain(driver, conditions, seeds, masks, prior_masks, forecaster, weight)
                      for weight in perturb}
    episodes.close()
    probed = {}
    if probe:  # the same trajectories, with what a first-block probe would have observed at each step
        names = FEATURES + PROBE_FEATURES
        observed = torch.cat([obs, first_block_probe_features(driver, conditions, seeds, masks, forecaster)], 2)
        probed = {"first_deviation_auc_with_first_block_probe":
                  deviation_auc(observed, computes, list(names), names),
                  "first_deviation_auc_time_budget_and_first_block_probe":
                  deviation_auc(observed, computes, TIME_AND_BUDGET + list(PROBE_FEATURES), names)}
    return {
        "samples": samples, "sweeps": sweeps,
        "oracle_gain_db": gain.mean().item(),
        "decisions_differing_from_prior": (computes != prior_masks.T).float().mean().item(),
        "own_mask_gain_db":
            image_gain(driver, conditions, seeds, masks, prior_masks, forecaster, reference)[moved].mean().item(),
        "other_samples_mask_gain_db":
            image_gain(driver, conditions, seeds, masks[perm], prior_masks, forecaster, reference)[moved].mean().item(),
        **{f"own_mask_gain_db_noise_perturbed_{w:g}": gain.mean().item() for w, gain in perturbed_gain.items()},
        "first_deviation_auc_all_features": deviation_auc(obs, computes, list(FEATURES)),
        "first_deviation_auc_time_and_budget_only": deviation_auc(obs, computes, TIME_AND_BUDGET),
        **probed,
    }


def _prior_and_predictor(pipe, cache: Path | None, prior: Path | None, predictor: str | None) -> tuple[Path, str]:
    """The searched schedules (--prior, else the cache's) and the forecaster (--predictor, else the cache's, by
    `CacheCheckpoint.predictor_spec`); an embedded pipeline's cache is its shipped one."""
    model = embedded_for(pipe)
    if cache is None and model is not None:
        cache = model.cache_dir
    checkpoint = CacheCheckpoint.from_pretrained(cache) if cache is not None else None
    if prior is None:
        if checkpoint is None:
            raise InvalidInputError(f"{type(pipe).__name__}: pass --cache DIR (a `cachepilot fit` directory) or "
                                    "--prior FILE (a searched_schedules.json): the oracle starts from it")
        prior = checkpoint.schedules_path()
    if predictor is None:
        predictor = checkpoint.predictor_spec() if checkpoint is not None else FALLBACK_PREDICTOR
    return Path(prior), predictor


def load_setup(args: argparse.Namespace) -> tuple:
    """What the headroom tools sample with, from their common options: (pipe, prior path, prior, predictor spec,
    steps, call kwargs, condition pool, its source). The conditions are the bench's (`evaluation_conditions`):
    --prompts' evaluation split, an embedded pipeline's held-out prompts, the cache's evaluation split, or every
    class of a class-conditional pipeline."""
    pipe = load_pipeline(args.pipeline, device=args.device, dtype=args.dtype)
    prior_path, predictor = _prior_and_predictor(pipe, args.cache, args.prior, args.predictor)
    steps = args.steps or SearchedSchedules.read(prior_path).num_steps
    call_kwargs = dict(args.call_kwargs or call_kwargs_for(pipe))
    pool, source = evaluation_conditions(pipe, args.prompts, args.cache)
    return pipe, prior_path, SchedulePrior.from_file(prior_path), predictor, steps, call_kwargs, pool, source


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--sweeps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None,
                        help="denoising steps (default: the searched schedules' own, 50 for the digits model)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="a `cachepilot fit` directory: its searched_schedules.json is the prior, its learned "
                             "forecaster the predictor (default for the digits model: the shipped cache)")
    parser.add_argument("--prior", type=Path, default=None, help="searched_schedules.json (default: the cache's)")
    parser.add_argument("--predictor", default=None, help="forecaster spec (default: the cache's learned head)")
    parser.add_argument("--perturb", type=float, nargs="+", default=[0.1, 1.0],
                        help="weights of fresh noise mixed into the seeds' noise (0..1; 1: wholly new noise, same "
                             "condition) under which the own masks are scored too")
    parser.add_argument("--first-block-probe", action="store_true",
                        help="also the AUCs with a First-Block-Cache probe's features (the first block run at every "
                             "step of the oracle's trajectories)")
    parser.add_argument("--seeds-per-condition", type=int, default=1,
                        help="K >= 2 adds the per-condition figures: --samples / K conditions, each with K seeds "
                             "sharing one oracle mask, scored on K fresh seeds (what the condition alone carries)")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    add_pipeline_args(parser)
    args = parser.parse_args(argv)
    if args.samples < 4 or args.sweeps < 1:
        raise InvalidInputError(f"--samples must be >= 4 and --sweeps >= 1, got {args.samples}, {args.sweeps}")
    if not all(0 <= w <= 1 for w in args.perturb):
        raise InvalidInputError(f"--perturb weights must be in [0, 1], got {args.perturb}")
    if args.seeds_per_condition < 1 or args.samples // args.seeds_per_condition < 2:
        raise InvalidInputError(f"--seeds-per-condition must be >= 1 and leave two conditions or more of --samples "
                                f"{args.samples}, got {args.seeds_per_condition}")

    tic = time.perf_counter()
    pipe, prior_path, prior, predictor, steps, call_kwargs, pool, source = load_setup(args)
    rng = np.random.default_rng(0)
    seeds = rng.integers(*POLICY_TRAINING, args.samples).tolist()  # training seeds, as the policy's
    conditions = [pool[i] for i in rng.integers(0, len(pool), args.samples).tolist()]
    targets = rng.uniform(0.15, 0.55, args.samples).tolist()
    figures = headroom(pipe, conditions, seeds, targets, prior, predictor, steps, call_kwargs, args.sweeps,
                       tuple(args.perturb), args.first_block_probe)
    if args.seeds_per_condition > 1:  # the first samples // K draws, each with K training seeds and K fresh ones
        k, n = args.seeds_per_condition, args.samples // args.seeds_per_condition
        rows = [i for i in range(n) for _ in range(k)]
        more_seeds = rng.integers(*POLICY_TRAINING, 2 * len(rows)).tolist()
        figures["per_condition"] = condition_headroom(
            pipe, [conditions[i] for i in rows], more_seeds[:len(rows)], more_seeds[len(rows):],
            [targets[i] for i in rows], prior, predictor, steps, call_kwargs, args.sweeps)
    figures.update(pipeline=str(getattr(pipe, "name_or_path", None) or type(pipe).__name__),
                   pipeline_class=type(pipe).__name__, conditions=source, steps=steps, call_kwargs=call_kwargs,
                   prior=str(prior_path), predictor=predictor, threads=torch.get_num_threads(),
                   wall_s=round(time.perf_counter() - tic, 1))
    print(json.dumps(figures, indent=2))
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
