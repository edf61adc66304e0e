"""The predictor interface: forecast a skipped step's residual from the cache history."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from cachepilot.predictors.history import ResidualHistory


class Predictor(ABC):
    """Stateless: the engine owns one `ResidualHistory` per generation call and context.

    `history_size` is how many computed residuals per row `predict` needs.
    """

    history_size: int = 1

    def new_history(self) -> ResidualHistory:
        return ResidualHistory(self.history_size)

    @abstractmethod
    def predict(self, history: ResidualHistory, step: int, rows: torch.Tensor | None = None) -> torch.Tensor:
        """The residual at `step` for `rows` (all rows if None)."""

    def spec(self) -> str:
        return type(self).__name__.lower()
