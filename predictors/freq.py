"""FreqCa-style frequency split: reuse the low spatial frequencies, forecast the high ones.

FreqCa (Liu et al., "FreqCa: Accelerating Diffusion Models via Frequency-Aware Caching", 2025)
observes that the low-frequency band of a DiT feature (the image's layout) is similar from step to
step but not smooth, while the high band (details) changes a lot but smoothly. It therefore reuses the
low band of the last compute and forecasts the high band (a second-order interpolator), and it caches
the cumulative residual of the whole stack, as this engine does.

The split is a Fourier low-pass over the token grid: a (rows, tokens, channels) residual whose token
count is a square is read as a square patch grid (2-D FFT), otherwise as a token line (1-D FFT); a
(rows, channels, height, width) residual uses its last two axes. A frequency is "low" when its radius,
as a fraction of the Nyquist frequency along an axis, is at most `cutoff`. Since the split is linear,

    forecast = R_last + highpass(P - R_last) = P - lowpass(P - R_last),

with P the Newton polynomial forecast of order `order` (Taylor's): one FFT pair per forecast.
"""

from __future__ import annotations

import math

import torch

from cachepilot.core.history import ResidualHistory
from cachepilot.core.predictor import ForecastContext, Predictor
from cachepilot.errors import InvalidInputError
from cachepilot.predictors.newton import history_rows, newton_forecast

DEFAULT_ORDER = 2  # FreqCa's second-order forecast of the high band


def spatial_dims(shape: torch.Size) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(the dims to transform, the grid shape they are viewed as) for a residual of `shape` (rows first)."""
    if len(shape) >= 4:
        return (len(shape) - 2, len(shape) - 1), tuple(shape[-2:])
    if len(shape) == 3:
        side = math.isqrt(shape[1])
        return ((1, 2), (side, side)) if side * side == shape[1] and side > 1 else ((1,), (shape[1],))
    return (len(shape) - 1,), (shape[-1],)


def low_mask(grid: tuple[int, ...], cutoff: float, device: torch.device) -> torch.Tensor:
    """Boolean mask over the rfft grid of `grid`: True where the radius / Nyquist <= cutoff."""
    freqs = [torch.fft.fftfreq(n, device=device) for n in grid[:-1]] + [torch.fft.rfftfreq(grid[-1], device=device)]
    mesh = torch.meshgrid(*freqs, indexing="ij")
    radius = torch.sqrt(sum((2 * f) ** 2 for f in mesh))
    return radius <= cutoff + 1e-9


def lowpass(x: torch.Tensor, cutoff: float, mask_cache: dict) -> torch.Tensor:
    """The low band of `x` (rows, ...) over its token grid."""
    dims, grid = spatial_dims(x.shape)
    key = (tuple(x.shape), x.device, cutoff)
    if key not in mask_cache:
        mask_cache[key] = low_mask(grid, cutoff, x.device)
    mask = mask_cache[key]
    if len(x.shape) == 3 and len(dims) == 2:  # (rows, tokens, channels): tokens as a (side, side) grid
        grid_x = x.reshape(x.shape[0], *grid, x.shape[2])
        spectrum = torch.fft.rfftn(grid_x.float(), dim=(1, 2)) * mask[None, :, :, None]
        return torch.fft.irfftn(spectrum, s=grid, dim=(1, 2)).reshape(x.shape).to(x.dtype)
    shape = (1,) * dims[0] + tuple(mask.shape) + (1,) * (x.ndim - 1 - dims[-1])
    spectrum = torch.fft.rfftn(x.float(), dim=dims) * mask.view(shape)
    return torch.fft.irfftn(spectrum, s=grid, dim=dims).to(x.dtype)


class FrequencySplit(Predictor):
    """Low band (radius <= cutoff x Nyquist) reused from the last compute, high band forecast with Taylor `order`."""

    def __init__(self, cutoff: float = 0.25, order: int = DEFAULT_ORDER):
        if isinstance(cutoff, bool) or not isinstance(cutoff, (int, float)) or not 0 < cutoff <= 1:
            raise InvalidInputError(f"frequency split: cutoff must be in (0, 1] (a fraction of Nyquist), got {cutoff!r}")
        if isinstance(order, bool) or order not in (1, 2):
            raise InvalidInputError(f"frequency split: order must be 1 or 2, got {order!r}")
        self.cutoff = float(cutoff)
        self.order = order
        self.history_size = order + 1
        self._masks: dict = {}

    def predict(
        self, history: ResidualHistory, step: int, rows: torch.Tensor | None = None,
        context: ForecastContext | None = None,
    ) -> torch.Tensor:
        r, s, count = history_rows(history, rows)
        forecast = newton_forecast(r, s, count, self.order, step)
        return forecast - lowpass(forecast - r[0], self.cutoff, self._masks)

    def spec(self) -> str:
        suffix = "" if self.order == DEFAULT_ORDER else f":{self.order}"
        return f"freq:{self.cutoff:g}{suffix}"
