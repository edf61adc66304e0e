"""Per-call statistics of a cached generation (field names follow cache-dit's summary where they fit)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cachepilot.runtime.actions import Action


@dataclass(frozen=True)
class CacheStats:
    """decisions: (steps, samples) tensor of `Action` values, one row per denoising step."""

    decisions: torch.Tensor
    policy_seconds: float
    predictor_seconds: float
    stack_seconds: float

    @property
    def num_steps(self) -> int:
        return int(self.decisions.shape[0])

    @property
    def batch_size(self) -> int:
        return int(self.decisions.shape[1])

    @property
    def computes_per_sample(self) -> torch.Tensor:
        return (self.decisions == Action.COMPUTE).sum(0)

    @property
    def executed_steps(self) -> int:
        """Stack evaluations, summed over samples."""
        return int((self.decisions == Action.COMPUTE).sum())

    @property
    def cached_steps(self) -> int:
        """Steps filled from the cache (reuse or forecast), summed over samples."""
        return int(self.decisions.numel() - self.executed_steps)

    @property
    def forecast_steps(self) -> int:
        return int((self.decisions == Action.FORECAST).sum())

    @property
    def compute_fraction(self) -> float:
        return self.executed_steps / max(self.decisions.numel(), 1)

    def summary(self) -> dict:
        return {
            "num_steps": self.num_steps, "batch_size": self.batch_size,
            "executed_steps": self.executed_steps, "cached_steps": self.cached_steps,
            "forecast_steps": self.forecast_steps, "compute_fraction": self.compute_fraction,
            "computes_per_sample": self.computes_per_sample.tolist(),
            "policy_seconds": self.policy_seconds, "predictor_seconds": self.predictor_seconds,
            "stack_seconds": self.stack_seconds,
        }
