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

    python -m cachepilot.bench.headroom --samples 128 --sweeps 3
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

import cachepilot
from cachepilot.checkpoints import DEFAULT_CACHE
from cachepilot.driver import unhooked_twin
from cachepilot.envs.caching_env import make_episodes
from cachepilot.envs.references import relative_distance
from cachepilot.embedded.digits.loading import load_pipeline
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


@torch.no_grad()
def image_gain(pipe, labels: list[int], latents: torch.Tensor, masks: torch.Tensor, baseline: torch.Tensor,
               predictor) -> torch.Tensor:
    """Per sample, dB by which `masks` beat `baseline` masks (relative image distance to full compute)."""
    def images(policy=None):
        if policy is not None:
            cachepilot.enable(pipe, policy, predictor)
        try:
            return pipe(labels, num_inference_steps=masks.shape[1], latents=latents, output_type="pt").images
        finally:
            if policy is not None:
                cachepilot.disable(pipe)

    reference = images()
    return 20 * torch.log10(relative_distance(images(Schedule(baseline)), reference)
                            / relative_distance(images(Schedule(masks)), reference))


def shuffle_within_budgets(masks: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Index permutation giving each sample another sample's mask with the same number of computes."""
    budgets = masks.sum(1)
    perm = torch.arange(len(masks))
    generator = torch.Generator().manual_seed(seed)
    for budget in budgets.unique():
        idx = (budgets == budget).nonzero().flatten()
        perm[idx] = idx[torch.randperm(len(idx), generator=generator)]
    return perm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--sweeps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--prior", type=Path, default=DEFAULT_CACHE / "searched_schedules.json")
    parser.add_argument("--perturb", type=float, default=0.1, help="noise mixed into the seeds' noise (0..1)")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()

    episodes, _ = make_episodes(load_pipeline(), args.steps, "learned", None, None,
                                SchedulePrior.from_file(args.prior), None, None)
    rng = np.random.default_rng(0)
    seeds = rng.integers(200_000, 300_000, args.samples).tolist()  # training seeds, as the policy's
    labels = rng.integers(0, 10, args.samples).tolist()
    conditions = [{"class_labels": label} for label in labels]
    targets = rng.uniform(0.15, 0.55, args.samples).tolist()
    prior = episodes.prior.masks(targets, args.steps)
    prior_distance = follow_masks(episodes, seeds, conditions, targets, prior)
    masks = oracle_masks(episodes, seeds, conditions, targets, sweeps=args.sweeps, shifts=(-1, 1))
    oracle_distance, obs, actions, _ = follow_masks(episodes, seeds, conditions, targets, masks, record=True)
    gain = 20 * torch.log10(prior_distance / oracle_distance)

    computes = actions == Action.COMPUTE
    pipe = unhooked_twin(episodes.pipe)  # the episodes' own pipe is driven by their agent
    config = pipe.transformer.config
    shape = (1, config.in_channels, config.sample_size, config.sample_size)
    noise = torch.cat([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds])  # as start()
    predictor = make_predictor("learned")
    perm = shuffle_within_budgets(masks)
    moved = perm != torch.arange(args.samples)
    other = torch.randn(noise.shape, generator=torch.Generator().manual_seed(1))
    perturbed = (1 - args.perturb ** 2) ** 0.5 * noise + args.perturb * other
    time_budget = ["step_fraction", "since_compute", "budget_left", "target", "computes_used", "prior_compute",
                   "prior_budget_left"]
    figures = {
        "samples": args.samples, "sweeps": args.sweeps,
        "oracle_gain_db": gain.mean().item(),
        "decisions_differing_from_prior": (computes != prior.T).float().mean().item(),
        "own_mask_gain_db": image_gain(pipe, labels, noise, masks, prior, predictor)[moved].mean().item(),
        "other_samples_mask_gain_db":
            image_gain(pipe, labels, noise, masks[perm], prior, predictor)[moved].mean().item(),
        f"own_mask_gain_db_noise_perturbed_{args.perturb:g}":
            image_gain(pipe, labels, perturbed, masks, prior, predictor).mean().item(),
        "first_deviation_auc_all_features": deviation_auc(obs, computes, list(FEATURES)),
        "first_deviation_auc_time_and_budget_only": deviation_auc(obs, computes, time_budget),
    }
    print(json.dumps(figures, indent=2))
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
