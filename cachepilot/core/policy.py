"""The policy interface: every decision maker, baseline or learned, is driven the same way."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from cachepilot.core.actions import Action
from cachepilot.core.observation import Observation


class CachePolicy(ABC):
    """`reset` once per generation call, `decide` once per step -> (batch,) long tensor of `Action`s.

    The engine forces COMPUTE for samples with nothing cached, whatever the policy says.
    `observes_probe = False` (schedules fixed in advance) spares the engine the probe's reductions: the
    observation's `change`, `accumulated` and `drift` are then zeros. `observes_drift = False` (a policy
    that reads the probe's change only) spares it the residual's: one more reduction over the stream at
    every compute, and `drift` stays zeros.
    """

    observes_probe: bool = True
    observes_drift: bool = True

    def reset(self, num_steps: int, batch_size: int) -> None:
        """Called at the first step of every generation call."""

    def bind(self, transformer: torch.nn.Module) -> None:
        """Called by `apply_cache`: check the policy fits the model (learned ones do)."""

    @abstractmethod
    def decide(self, obs: Observation) -> torch.Tensor: ...

    def spec(self) -> str:
        """The spec string that builds this policy (see `policies.spec.make_policy`)."""
        return type(self).__name__


def compute_where(condition: torch.Tensor, skip: Action = Action.FORECAST) -> torch.Tensor:
    """COMPUTE where `condition`, else `skip` (FORECAST: the engine's predictor fills the step)."""
    return torch.where(condition, int(Action.COMPUTE), int(skip)).long()
