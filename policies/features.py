"""The observation vector a learned policy sees: a handful of floats, normalised so that one
policy serves many step counts and budgets. Shared by the gym env and the inference policy."""

from __future__ import annotations

import torch

from cachepilot.core.observation import Observation

FEATURES = ("step_fraction", "since_compute", "budget_left", "target", "change", "accumulated", "computes_used",
            "prior_compute", "prior_budget_left", "drift", "staleness")
NUM_FEATURES = len(FEATURES)
CLIP = 10.0


class FeatureBuilder:
    """`observation_features` for one generation call: what does not change between its steps (the budget,
    the prior's computes left at each step, the target column) is computed once at the call's start, so a
    step costs a dozen tensor ops (the policy runs at every step of every call)."""

    def __init__(self, target: torch.Tensor, computes_allowed: torch.Tensor, prior: torch.Tensor):
        self.allowed = computes_allowed.float()
        self.allowed_clamped = self.allowed.clamp(min=1)
        self.prior = prior.float()
        self.prior_left = self.prior.flip(1).cumsum(1).flip(1)  # [:, s] = the prior's computes at steps >= s
        self.target = target.float().expand_as(self.allowed)

    def _to(self, device: torch.device) -> None:
        for name in ("allowed", "allowed_clamped", "prior", "prior_left", "target"):
            setattr(self, name, getattr(self, name).to(device))

    def __call__(self, obs: Observation) -> torch.Tensor:
        if self.allowed.device != obs.change.device:  # built on the host, observed on the model's device
            self._to(obs.change.device)
        steps = float(max(obs.num_steps - 1, 1))
        steps_left = float(obs.num_steps - obs.step)
        since, computes = obs.since_compute.float(), obs.computes.float()
        drift = obs.drift.float() if obs.drift is not None else torch.zeros_like(obs.change)
        columns = [
            torch.full_like(obs.change, obs.step / steps),
            since / obs.num_steps,
            (self.allowed - computes) / steps_left,
            self.target,
            obs.change.float(),
            obs.accumulated.float(),
            computes / self.allowed_clamped,
            self.prior[:, obs.step],
            self.prior_left[:, obs.step] / steps_left,
            10.0 * drift,
            drift * since,
        ]
        return torch.stack(columns, dim=1).clamp_(0.0, CLIP)


def observation_features(obs: Observation, target: torch.Tensor, computes_allowed: torch.Tensor,
                         prior: torch.Tensor) -> torch.Tensor:
    """(batch, NUM_FEATURES) float32: step / (T-1), steps since compute / T, computes left / steps left,
    target compute fraction, probe change since compute, accumulated change, computes used / allowed,
    whether the prior schedule (`policies.prior`, a (batch, T) mask) computes at this step, and the
    prior's computes left / steps left (compare with budget_left: the policy's lead on the prior), the
    residual drift per step between the last two computes (x 10) and drift x steps since compute
    (the expected relative error of the cached residual now)."""
    return FeatureBuilder(target, computes_allowed, prior)(obs)
