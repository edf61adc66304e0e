"""The observation vector a learned policy sees: a handful of floats, normalised so that one
policy serves many step counts and budgets. Shared by the gym env and the inference policy."""

from __future__ import annotations

import torch

from cachepilot.runtime.observation import Observation

FEATURES = ("step_fraction", "since_compute", "budget_left", "target", "change", "accumulated", "computes_used")
NUM_FEATURES = len(FEATURES)
CLIP = 10.0


def observation_features(obs: Observation, target: torch.Tensor, computes_allowed: torch.Tensor) -> torch.Tensor:
    """(batch, NUM_FEATURES) float32: step / (T-1), steps since compute / T, computes left / steps left,
    target compute fraction, probe change since compute, accumulated change, computes used / allowed."""
    steps = float(max(obs.num_steps - 1, 1))
    steps_left = float(obs.num_steps - obs.step)
    allowed = computes_allowed.float()
    columns = [
        torch.full_like(obs.change, obs.step / steps),
        obs.since_compute.float() / obs.num_steps,
        (allowed - obs.computes.float()) / steps_left,
        target.float().expand_as(obs.change),
        obs.change.float(),
        obs.accumulated.float(),
        obs.computes.float() / allowed.clamp(min=1),
    ]
    return torch.stack(columns, dim=1).clamp(0.0, CLIP)
