"""Do per-sample caching decisions have headroom, and can a policy see it? The figures that answer it.

1. Headroom: each training sample's own greedily improved mask (`train.oracle`, which sees the
   full-compute reference) vs. the prior (searched) schedule, in dB of final distance; the same masks
   given to *other* samples of the same budget (is it per-sample, or just a better common schedule?);
   and the own masks on perturbed noise (fresh references: is it a stable property of the sample, or
   selection on chance?).
2. Visibility: a small classifier fitted on half the samples is asked, on the other half, to find
   each sample's *first* deviation from the prior among the steps before it (AUC), from all the
   policy's observation features vs. from the time/budget features alone. Later deviations are
   mostly consequences of the first (catching up on the budget), so the first is the one that says
   whether the observation tells "this sample should leave the schedule here".

Any pipeline, as `cachepilot fit` / `cachepilot bench` take one: the samples are the bench's conditions
(--prompts' evaluation split; the scenes pipeline's held-out prompts; the cache's evaluation split; every class
of a class-conditional pipeline) with training seeds, the prior is the cache's searched schedules and the
forecaster its learned head (the digits model: the shipped cache, 50 steps).

    python -m cachepilot.bench.headroom --samples 128 --sweeps 3
    python -m cachepilot.bench.headroom --pipeline checkpoints/scenes-flux --cache checkpoints/scenes-flux-cache \
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

from cachepilot.checkpoints import DEFAULT_CACHE
from cachepilot.conditions import ConditionSet
from cachepilot.driver import SamplingDriver, caching, unhooked_twin
from cachepilot.envs.caching_env import make_episodes
from cachepilot.envs.references import relative_distance
from cachepilot.errors import InvalidInputError
from cachepilot.policies.baselines import Schedule
from cachepilot.policies.features import FEATURES
from cachepilot.policies.prior import SchedulePrior
from cachepilot.predictors.spec import make_predictor
from cachepilot.runtime.actions import Action
from cachepilot.train.oracle import follow_masks, oracle_masks


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


def deviation_auc(obs: torch.Tensor, computes: torch.Tensor, features: list[str]) -> float:
    """Fit on the first half of the samples, AUC of finding first deviations on the second half."""
    half = obs.shape[1] // 2
    columns = [FEATURES.index(f) for f in features]
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
             predictor: str, steps: int, call_kwargs: dict | None = None, sweeps: int = 3, perturb: float = 0.1,
             progress: bool = True) -> dict:
    """The figures (see the module doc) for sample i = (conditions[i], seeds[i], targets[i]) on `pipe` at `steps`
    steps, the oracle starting from `prior`, every skipped step forecast with `predictor` (a spec)."""
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
    with mixed_noise(driver.pipe, perturb):
        perturbed_reference = driver.sample(conditions, seeds).images
        perturbed_gain = image_gain(driver, conditions, seeds, masks, prior_masks, forecaster, perturbed_reference)
    episodes.close()
    return {
        "samples": samples, "sweeps": sweeps,
        "oracle_gain_db": gain.mean().item(),
        "decisions_differing_from_prior": (computes != prior_masks.T).float().mean().item(),
        "own_mask_gain_db":
            image_gain(driver, conditions, seeds, masks, prior_masks, forecaster, reference)[moved].mean().item(),
        "other_samples_mask_gain_db":
            image_gain(driver, conditions, seeds, masks[perm], prior_masks, forecaster, reference)[moved].mean().item(),
        f"own_mask_gain_db_noise_perturbed_{perturb:g}": perturbed_gain.mean().item(),
        "first_deviation_auc_all_features": deviation_auc(obs, computes, list(FEATURES)),
        "first_deviation_auc_time_and_budget_only": deviation_auc(obs, computes, TIME_AND_BUDGET),
    }


def _prior_and_predictor(pipe, cache: Path | None, prior: Path | None, predictor: str | None) -> tuple[Path, str]:
    """The searched schedules (--prior, else the cache's) and the forecaster (--predictor, else the cache's
    learned head, else taylor:1); the digits pipeline's cache is the shipped one."""
    from cachepilot.embedded.digits.pipeline import DigitsDiTPipeline

    if cache is None and isinstance(pipe, DigitsDiTPipeline):
        cache = DEFAULT_CACHE
    if prior is None:
        if cache is None:
            raise InvalidInputError(f"{type(pipe).__name__}: pass --cache DIR (a `cachepilot fit` directory) or "
                                    "--prior FILE (a searched_schedules.json): the oracle starts from it")
        prior = Path(cache) / "searched_schedules.json"
    if predictor is None:
        head = Path(cache) / "predictors" if cache is not None else None
        predictor = f"learned:{head}" if head is not None and (head / "config.json").is_file() else "taylor:1"
    return Path(prior), predictor


def main(argv: list[str] | None = None) -> dict:
    from cachepilot.cli import _add_pipeline_args
    from cachepilot.commands import bench_conditions
    from cachepilot.embedded.quality import default_call_kwargs
    from cachepilot.loading import load_pipeline

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
    parser.add_argument("--perturb", type=float, default=0.1, help="noise mixed into the seeds' noise (0..1)")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    _add_pipeline_args(parser)
    args = parser.parse_args(argv)
    if args.samples < 4 or args.sweeps < 1:
        raise InvalidInputError(f"--samples must be >= 4 and --sweeps >= 1, got {args.samples}, {args.sweeps}")

    tic = time.perf_counter()
    pipe = load_pipeline(args.pipeline, device=args.device, dtype=args.dtype)
    prior_path, predictor = _prior_and_predictor(pipe, args.cache, args.prior, args.predictor)
    prior = SchedulePrior.from_file(prior_path)
    steps = args.steps or int(json.loads(prior_path.read_text()).get("num_steps", 50))
    call_kwargs = dict(args.call_kwargs or default_call_kwargs(pipe))
    # the bench's conditions: --prompts' evaluation split, the scenes pipeline's held-out prompts, the cache's
    # evaluation split, or every class of a class-conditional pipeline
    pool, source = bench_conditions(pipe, args.prompts, args.cache)
    rng = np.random.default_rng(0)
    seeds = rng.integers(200_000, 300_000, args.samples).tolist()  # training seeds, as the policy's
    conditions = [pool[i] for i in rng.integers(0, len(pool), args.samples).tolist()]
    targets = rng.uniform(0.15, 0.55, args.samples).tolist()
    figures = headroom(pipe, conditions, seeds, targets, prior, predictor, steps, call_kwargs, args.sweeps,
                       args.perturb)
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
