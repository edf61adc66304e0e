"""FoCa: forecast, then calibrate, treating the cached feature as the solution of an ODE over the steps.

FoCa (Zheng et al., "Forecast then Calibrate: Feature Caching as ODE for Efficient Diffusion
Transformers", 2025; cache-dit ships it as a calibrator) pairs a BDF2 predictor with a Heun corrector:
the predictor extrapolates the feature to the target step, the corrector integrates from the last
compute with the trapezoid rule, averaging the reliable derivative at that compute and the derivative
at the predicted point. cache-dit runs it recursively over the cached steps; our forecasters are
stateless (the engine keeps only computed residuals), so both derivatives come from the computes:

    predictor  P(t): the quadratic through the last three computes (BDF2's interpolant), at t
    corrector  F(t) = F(s0) + (t - s0) / 2 * (backward slope at s0 + P'(t))

The backward slope (F(s0) - F(s1)) / (s0 - s1) is the first-order derivative cache-dit anchors on.
On a linear trajectory this is exact; on a quadratic with leading coefficient c it is the quadratic
extrapolation less c (s0 - s1)(t - s0) / 2, between Taylor 1 and Taylor 2. Fewer computes: Taylor 1,
then reuse. Past `horizon` steps (cache-dit: 3) the forecast is damped toward the last compute, as
cache-dit's calibrator does; 0 disables the damping.
"""

from __future__ import annotations

import torch

from cachepilot.core.history import ResidualHistory
from cachepilot.core.predictor import ForecastContext, Predictor
from cachepilot.errors import InvalidInputError
from cachepilot.predictors.newton import divided_differences, history_rows, row_view


class FoCa(Predictor):
    history_size = 3

    def __init__(self, horizon: int = 0):
        if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 0:
            raise InvalidInputError(f"FoCa: horizon must be an integer >= 0 (0: no damping), got {horizon!r}")
        self.horizon = horizon

    def predict(
        self, history: ResidualHistory, step: int, rows: torch.Tensor | None = None,
        context: ForecastContext | None = None,
    ) -> torch.Tensor:
        r, s, count = history_rows(history, rows)
        view = row_view(r)
        c0, c1, c2 = divided_differences(r, s, count, 2)  # c2 is zero where a row has < 3 computes
        elapsed = step - s[0]
        if self.horizon:
            damped = elapsed.clamp(max=float(self.horizon))
            weight = (damped / elapsed.clamp(min=1e-6)).view(view)  # 1 within the horizon
            elapsed = damped
        u = elapsed.view(view)
        slope_at_target = c1 + c2 * (2 * u + (s[0] - s[1]).view(view))  # P'(t), P the Newton quadratic
        forecast = c0 + 0.5 * u * (c1 + slope_at_target)
        if self.horizon:
            forecast = c0 + weight * (forecast - c0)
        return forecast

    def spec(self) -> str:
        return f"foca:{self.horizon}" if self.horizon else "foca"
