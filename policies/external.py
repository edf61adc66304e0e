"""A policy whose actions are set from outside before each step: how the gym env's agent acts
through the very engine the runtime uses."""

from __future__ import annotations

import torch

from cachepilot.policies.base import CachePolicy
from cachepilot.runtime.observation import Observation


class ExternalActions(CachePolicy):
    def __init__(self) -> None:
        self.actions: torch.Tensor | None = None

    def set(self, actions: torch.Tensor) -> None:
        self.actions = actions.long()

    def decide(self, obs: Observation) -> torch.Tensor:
        if self.actions is None or self.actions.shape != (obs.batch_size,):
            raise RuntimeError(f"ExternalActions: set {obs.batch_size} actions before the step")
        actions, self.actions = self.actions, None  # one use: a stale action is a driver bug
        return actions

    def spec(self) -> str:
        return "external"
