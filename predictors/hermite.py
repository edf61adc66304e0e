"""HiCache's forecaster: the Taylor expansion's monomials replaced by scaled Hermite polynomials.

HiCache (Feng et al., "HiCache: Training-free Acceleration of Diffusion Models via Hermite
Polynomial-based Feature Caching", 2025) keeps TaylorSeer's derivative estimates at the last compute
and expands them in physicists' Hermite polynomials of the contracted elapsed time, each term scaled
once more by the contraction (its "dual scaling"):

    F(s0 + u) = F(s0) + sum_k D_k / k! * sigma^k * H_k(sigma * u)

sigma < 1 keeps the growing high-order terms of long skips in check. sigma = 1/sqrt(2) makes the
first-order term u * D_1 (Taylor's); even-order terms also shift the forecast at u = 0 (H_2(0) = -2),
as the paper's formula does. The derivatives D_k are those of the same Newton interpolant the Taylor
forecaster extrapolates (exact at uneven compute gaps).
"""

from __future__ import annotations

import math

import torch

from cachepilot.core.history import ResidualHistory
from cachepilot.core.predictor import ForecastContext, Predictor
from cachepilot.errors import InvalidInputError
from cachepilot.predictors.newton import history_rows, local_monomials, row_view

DEFAULT_SCALE = 0.5  # the contraction of HiCache's reference code


def hermite_values(x: torch.Tensor, order: int) -> list[torch.Tensor]:
    """H_0(x)..H_order(x), physicists' Hermite polynomials: H_{n+1} = 2x H_n - 2n H_{n-1}."""
    values = [torch.ones_like(x), 2 * x]
    for n in range(1, order):
        values.append(2 * x * values[n] - 2 * n * values[n - 1])
    return values[: order + 1]


class Hermite(Predictor):
    """Order 1..3 Hermite expansion with contraction `scale` in (0, 1]."""

    ORDERS = (1, 2, 3)

    def __init__(self, order: int = 2, scale: float = DEFAULT_SCALE):
        if isinstance(order, bool) or order not in self.ORDERS:
            raise InvalidInputError(f"Hermite: order must be 1, 2 or 3, got {order!r}")
        if not (isinstance(scale, (int, float)) and 0 < scale <= 1):
            raise InvalidInputError(f"Hermite: scale must be in (0, 1], got {scale!r}")
        self.order = int(order)
        self.scale = float(scale)
        self.history_size = self.order + 1

    def predict(
        self, history: ResidualHistory, step: int, rows: torch.Tensor | None = None,
        context: ForecastContext | None = None,
    ) -> torch.Tensor:
        r, s, count = history_rows(history, rows)
        monomials = local_monomials(r, s, count, self.order)  # m_k = D_k / k!
        hermite = hermite_values(self.scale * (step - s[0]), self.order)  # per row
        view = row_view(r)
        forecast = monomials[0]
        for k in range(1, self.order + 1):
            forecast = forecast + monomials[k] * (self.scale ** k * hermite[k]).view(view)
        return forecast

    def spec(self) -> str:
        suffix = "" if math.isclose(self.scale, DEFAULT_SCALE) else f":{self.scale:g}"
        return f"hermite:{self.order}{suffix}"
