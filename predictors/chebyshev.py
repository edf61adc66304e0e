"""Spectrum-style forecaster: a global least-squares Chebyshev fit over the computed steps.

Spectrum (Han et al., 2026, "spectral diffusion feature forecaster") replaces local recurrences
(Taylor's finite differences from the last compute) with a least-squares fit of Chebyshev polynomials
of the normalised denoising time to all the computed features in a window, evaluated at the target
step. A fit over more points than its degree averages the computes instead of differencing the newest
ones, so the forecast error does not compound with the skip length the way a high-order Taylor
expansion's does; the Chebyshev basis keeps the fit well conditioned on [-1, 1].

The fit is linear in the residuals, so it is computed once per row as weights over the window (a
(degree+1)-square ridge solve per row) and applied as one weighted sum of the stored residuals. Rows
with fewer computes than degree + 1 fit the degree they can (one compute: reuse).
"""

from __future__ import annotations

import torch

from cachepilot.core.history import ResidualHistory
from cachepilot.core.predictor import ForecastContext, Predictor
from cachepilot.errors import InvalidInputError
from cachepilot.predictors.newton import history_rows, row_view

RIDGE = 1e-10  # keeps the solve finite on coincident steps; negligible next to the O(1) Chebyshev normal matrix


def chebyshev_basis(x: torch.Tensor, degree: int) -> torch.Tensor:
    """(*x.shape, degree + 1): T_0(x)..T_degree(x), T_{n+1} = 2x T_n - T_{n-1}."""
    values = [torch.ones_like(x), x]
    for n in range(1, degree):
        values.append(2 * x * values[n] - values[n - 1])
    return torch.stack(values[: degree + 1], -1)


class Chebyshev(Predictor):
    """Degree 1..4 over a window of the last `window` computes (default degree + 2, >= degree + 1)."""

    def __init__(self, degree: int = 2, window: int | None = None):
        if isinstance(degree, bool) or not isinstance(degree, int) or not 1 <= degree <= 4:
            raise InvalidInputError(f"Chebyshev: degree must be an integer in 1..4, got {degree!r}")
        window = degree + 2 if window is None else window
        if isinstance(window, bool) or not isinstance(window, int) or not degree + 1 <= window <= 12:
            raise InvalidInputError(f"Chebyshev: window must be an integer in {degree + 1}..12, got {window!r}")
        self.degree = degree
        self.window = window
        self.history_size = window

    def weights(self, s: torch.Tensor, count: torch.Tensor, step: int, num_steps: int | None) -> torch.Tensor:
        """(window, rows): the forecast at `step` is sum_w weights[w] * residual[w]."""
        span = float(max(num_steps or 0, step + 1, 2) - 1)
        to_unit = lambda t: 2 * t / span - 1  # noqa: E731 - the denoising time on [-1, 1]
        valid = (torch.arange(self.window, device=s.device)[:, None] < count[None, :]).to(torch.float64)  # (W, rows)
        used = (torch.arange(self.degree + 1, device=s.device)[None, :] < count[:, None]).to(torch.float64)
        design = chebyshev_basis(to_unit(s.to(torch.float64)), self.degree).transpose(0, 1)  # (rows, W, D+1)
        design = design * valid.t()[..., None] * used[:, None, :]
        normal = design.transpose(1, 2) @ design
        normal = normal + torch.diag_embed(RIDGE + (1 - used))  # unused degrees: coefficient 0
        target = chebyshev_basis(torch.full_like(s[0], to_unit(float(step)), dtype=torch.float64), self.degree)
        solution, _ = torch.linalg.solve_ex(normal, (target * used)[..., None], check_errors=False)
        return (design @ solution)[..., 0].t()  # (W, rows)

    def predict(
        self, history: ResidualHistory, step: int, rows: torch.Tensor | None = None,
        context: ForecastContext | None = None,
    ) -> torch.Tensor:
        r, s, count = history_rows(history, rows)
        w = self.weights(s, count, step, context.num_steps if context is not None else None).to(r.dtype)
        view = row_view(r)
        forecast = r[0] * w[0].view(view)
        for k in range(1, self.window):
            forecast = forecast + r[k] * w[k].view(view)
        return forecast

    def spec(self) -> str:
        suffix = "" if self.window == self.degree + 2 else f":{self.window}"
        return f"chebyshev:{self.degree}{suffix}"
