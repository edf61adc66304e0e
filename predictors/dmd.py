"""DMD / Prony forecaster: fit a small linear recurrence to the computed residuals and follow its exponentials.

cache-dit's DMD calibrator (Dynamic Mode Decomposition, Schmid 2010; Prony's method in one variable)
models the cached feature as a sum of damped / oscillating exponentials, the solution class of a linear
ODE, which a polynomial forecast only truncates: it fits the propagator between uniformly spaced
snapshots and advances its eigenvalues to the fractional horizon (elapsed steps / spacing).

Here each row fits the order-`rank` recurrence y_n = a_1 y_{n-1} + ... + a_rank y_{n-rank} shared by all
its features (least squares over the window, from the window's Gram matrix: a few dot products per
row), whose characteristic roots are the DMD eigenvalues. The forecast is the exponential sum through
the newest `rank` computes, evaluated at the fractional horizon: a weighted sum of those computes with
per-row weights from the roots (closed form for rank 1 and 2, so no eigendecomposition, no host sync).
A double root (a linear trajectory: both roots 1) takes its limit, linear extrapolation.
Rows without a full, evenly spaced window, or with a degenerate fit, fall back to Taylor 1.
"""

from __future__ import annotations

import torch

from cachepilot.core.history import ResidualHistory
from cachepilot.core.layout import memory_order
from cachepilot.core.predictor import ForecastContext, Predictor
from cachepilot.errors import InvalidInputError
from cachepilot.predictors.newton import history_rows, newton_forecast, row_view

MAX_WEIGHT = 1e3  # a fit that would scale a compute by more than this is degenerate: Taylor 1 instead


def gram(r: torch.Tensor) -> torch.Tensor:
    """(rows, K, K) float64 dot products between a row's K stored residuals (read in memory order)."""
    order = memory_order(r[0])
    flat = r.permute(1, 0, *(d + 1 for d in order)).flatten(2)  # (rows, K, features), a view when dense
    return (flat @ flat.transpose(1, 2)).to(torch.float64)


def _power(z: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """z ** k for complex z and real fractional k (principal branch)."""
    return torch.exp(k * torch.log(z))


class DMD(Predictor):
    """Rank 1 (one geometric mode) or 2 (two modes: a damped oscillation, or growth plus decay)."""

    def __init__(self, rank: int = 2):
        if isinstance(rank, bool) or rank not in (1, 2):
            raise InvalidInputError(f"DMD: rank must be 1 or 2, got {rank!r}")
        self.rank = rank
        self.history_size = rank + 2  # rank + 1 snapshot pairs: an overdetermined fit

    def weights(self, g: torch.Tensor, s: torch.Tensor, count: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(weights (rank, rows) over the newest computes, ok (rows,) bool)."""
        size = self.history_size
        gaps = (s[:-1] - s[1:]).to(torch.float64)  # (K-1, rows), newest first
        spacing = gaps[0]
        ok = (count >= size) & ((gaps - spacing).abs() < 0.5).all(0) & (spacing > 0)
        k = ((step - s[0]).to(torch.float64) / spacing.clamp(min=1e-6)).to(torch.complex128)  # fractional horizon
        eps = 1e-12 * g.diagonal(dim1=1, dim2=2).sum(-1) + 1e-30
        if self.rank == 1:  # y_i = lam * y_{i+1} (newest first)
            num = sum(g[:, i, i + 1] for i in range(size - 1))
            den = sum(g[:, i + 1, i + 1] for i in range(size - 1)) + eps
            lam = (num / den).to(torch.complex128)
            w = _power(lam, k).real[None]
        else:  # y_i = a1 y_{i+1} + a2 y_{i+2}
            eqs = range(size - 2)
            m11 = sum(g[:, i + 1, i + 1] for i in eqs) + eps
            m12 = sum(g[:, i + 1, i + 2] for i in eqs)
            m22 = sum(g[:, i + 2, i + 2] for i in eqs) + eps
            b1 = sum(g[:, i, i + 1] for i in eqs)
            b2 = sum(g[:, i, i + 2] for i in eqs)
            det = m11 * m22 - m12 * m12
            ok = ok & (det.abs() > 1e-9 * (m11 * m22).abs())
            a1 = (b1 * m22 - b2 * m12) / det
            a2 = (m11 * b2 - m12 * b1) / det
            root = torch.sqrt((a1 * a1 + 4 * a2).to(torch.complex128))
            lam1, lam2 = (a1 + root) / 2, (a1 - root) / 2
            diff = lam2 - lam1
            distinct = diff.abs() > 1e-7 * (1 + lam1.abs())
            safe = torch.where(distinct, diff, torch.ones_like(diff))
            p1, p2 = _power(lam1, k), _power(lam2, k)
            w0 = torch.where(distinct, (lam2 * p2 - lam1 * p1) / safe, (k + 1) * p1)
            w1 = torch.where(distinct, lam1 * lam2 * (p1 - p2) / safe, -k * lam1 * p1)
            w = torch.stack([w0.real, w1.real])
        ok = ok & torch.isfinite(w).all(0) & (w.abs() < MAX_WEIGHT).all(0)
        return torch.where(ok[None], w, torch.zeros_like(w)), ok

    def predict(
        self, history: ResidualHistory, step: int, rows: torch.Tensor | None = None,
        context: ForecastContext | None = None,
    ) -> torch.Tensor:
        r, s, count = history_rows(history, rows)
        view = row_view(r)
        w, ok = self.weights(gram(r), s, count, step)
        w = w.to(r.dtype)
        forecast = r[0] * w[0].view(view)
        for j in range(1, self.rank):
            forecast = forecast + r[j] * w[j].view(view)
        return torch.where(ok.view(view), forecast, newton_forecast(r, s, count, 1, step))

    def spec(self) -> str:
        return f"dmd:{self.rank}"
