"""The observation vector a learned policy sees: a handful of floats, normalised so that one
policy serves many step counts and budgets. Shared by the gym env and the inference policy."""

from __future__ import annotations

import torch

from cachepilot.runtime.observation import Observation

FEATURES = ("step_fraction", "since_compute", "budget_left", "target", "change", "accumulated", "computes_used",
            "prior_compute", "prior_budget_left", "drift", "staleness")
NUM_FEATURES = len(FEATURES)
CLIP = 10.0


def observation_features(obs: Observation, target: torch.Tensor, computes_allowed: torch.Tensor,
                         prior: torch.Tensor) -> torch.Tensor:
    """(batch, NUM_FEATURES) float32: step / (T-1), steps since compute / T, computes left / steps left,
    target compute fraction, probe change since compute, accumulated change, computes used / allowed,
    whether the prior schedule (`policies.prior`, a (batch, T) mask) computes at this step, and the
    prior's computes left / steps left (compare with budget_left: the policy's lead on the prior), the
    residual drift per step between the last two computes (x 10) and drift x steps since compute
    (the expected relative error of the cached residual now)."""
    steps = float(max(obs.num_steps - 1, 1))
    steps_left = float(obs.num_steps - obs.step)
    allowed = computes_allowed.float()
    prior = prior.to(obs.change.device)
    drift = obs.drift.float() if obs.drift is not None else torch.zeros_like(obs.change)
    columns = [
        torch.full_like(obs.change, obs.step / steps),
        obs.since_compute.float() / obs.num_steps,
        (allowed - obs.computes.float()) / steps_left,
        target.float().expand_as(obs.change),
        obs.change.float(),
        obs.accumulated.float(),
        obs.computes.float() / allowed.clamp(min=1),
        prior[:, obs.step].float(),
        prior[:, obs.step:].sum(1).float() / steps_left,
        10.0 * drift,
        drift * obs.since_compute.float(),
    ]
    return torch.stack(columns, dim=1).clamp(0.0, CLIP)
