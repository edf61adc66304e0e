"""The predictor interface: forecast a skipped step's residual from the cache history."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from cachepilot.core.history import ResidualHistory


@dataclass(frozen=True)
class ForecastContext:
    """What the engine knows at a FORECAST besides the history, for the forecast rows:
    the current stack input, the stack input at the row's last compute, the step count, and the deciding
    policy's spec (the gated forecaster keeps a choice per calibrated schedule)."""

    num_steps: int
    hidden: torch.Tensor
    hidden_at_compute: torch.Tensor
    policy: str = ""


class Predictor(ABC):
    """Stateless: the engine owns one `ResidualHistory` per generation call and context.

    `history_size` is how many computed residuals per row `predict` needs.
    """

    history_size: int = 1
    # The forecast at a step depends on the history and the step alone, not on the rest of the schedule: runs of
    # two schedules that agree up to a step agree up to it (`train.incremental` forks the one from the other).
    causal: bool = True

    def new_history(self) -> ResidualHistory:
        return ResidualHistory(self.history_size)

    @abstractmethod
    def predict(
        self, history: ResidualHistory, step: int, rows: torch.Tensor | None = None,
        context: ForecastContext | None = None,
    ) -> torch.Tensor:
        """The residual at `step` for `rows` (all rows if None)."""

    def bind(self, transformer: torch.nn.Module) -> None:
        """Called by `apply_cache`: check the predictor fits the model (learned heads do)."""

    def spec(self) -> str:
        return type(self).__name__.lower()
