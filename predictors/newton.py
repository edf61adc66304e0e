"""The polynomial through a row's last computed residuals, in the form the polynomial forecasters need.

Rows compute at different steps, so every coefficient is a per-row tensor. Newton's divided differences
interpolate the newest computes at their own (possibly uneven) steps; a row with fewer computes than the
order asks for gets the lower-order interpolant (its higher coefficients are zero). Everything is tensor
ops over all rows at once; the loops run over the order (at most a few terms), never over rows.
"""

from __future__ import annotations

import torch

from cachepilot.core.history import ResidualHistory


def history_rows(history: ResidualHistory, rows: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(residuals (K, rows, *feature), steps (K, rows), count (rows,)) of the forecast rows (all if None)."""
    r, s, count = history.residuals, history.steps, history.count
    if rows is not None:
        r, s, count = r.index_select(1, rows), s.index_select(1, rows), count.index_select(0, rows)
    return r, s, count


def row_view(r: torch.Tensor) -> tuple[int, ...]:
    """The shape that broadcasts a per-row (rows,) tensor against a residual (rows, *feature)."""
    return (-1,) + (1,) * (r.ndim - 2)


def divided_differences(r: torch.Tensor, s: torch.Tensor, count: torch.Tensor, order: int) -> list[torch.Tensor]:
    """Newton coefficients c_0..c_order at the nodes s[0] (newest), s[1], ...: the interpolant is
    sum_j c_j prod_{i<j} (t - s_i). c_j is zero on rows with at most j computes."""
    view = row_view(r)
    table = [r[i] for i in range(order + 1)]
    coefficients = [r[0]]
    for level in range(1, order + 1):
        table = [(table[i] - table[i + 1]) / (s[i] - s[i + level]).clamp(min=1e-6).view(view)
                 for i in range(order + 1 - level)]
        # where, not a product: an empty entry's difference may overflow, and inf * 0 is nan
        coefficients.append(torch.where((count > level).view(view), table[0], torch.zeros_like(table[0])))
    return coefficients


def local_monomials(r: torch.Tensor, s: torch.Tensor, count: torch.Tensor, order: int) -> list[torch.Tensor]:
    """m_0..m_order with interpolant(s[0] + u) = sum_k m_k u^k: k! m_k is its k-th derivative at the newest
    compute, what the derivative-based forecasters (Taylor-style, Hermite) expand."""
    view = row_view(r)
    c = divided_differences(r, s, count, order)
    monomials = list(c)
    basis = [torch.ones_like(s[0])]  # coefficients in u of prod_{i<j} (u + a_i), a_i = s0 - s_i, per row
    for j in range(1, order + 1):
        a = s[0] - s[j - 1]
        basis = [(basis[k - 1] if k else 0) + (a * basis[k] if k < len(basis) else 0) for k in range(j + 1)]
        for k in range(j):  # the top power's coefficient is 1: c_j itself, already in place
            if k:
                monomials[k] = monomials[k] + c[j] * basis[k].view(view)
    return monomials


def newton_forecast(r: torch.Tensor, s: torch.Tensor, count: torch.Tensor, order: int, step: float) -> torch.Tensor:
    """The interpolant through the newest order+1 computes, evaluated at `step`."""
    view = row_view(r)
    c = divided_differences(r, s, count, order)
    forecast, product = c[0], torch.ones_like(s[0])
    for j in range(1, order + 1):
        product = product * (step - s[j - 1])
        forecast = forecast + c[j] * product.view(view)
    return forecast
