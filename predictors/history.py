"""The per-row history of computed residuals a predictor extrapolates from.

A ring of the last K residuals per batch row (newest first) with the step index each was computed
at. Rows compute at different steps (decisions are per sample), so steps are kept per row; all
updates are tensor ops on the computing rows, no per-row Python loop.
"""

from __future__ import annotations

import torch


class ResidualHistory:
    def __init__(self, size: int):
        if size < 1:
            raise ValueError("a residual history holds at least one residual")
        self.size = size
        self.residuals: torch.Tensor | None = None  # (K, rows, *feature)
        self.steps: torch.Tensor | None = None      # (K, rows) float
        self.count: torch.Tensor | None = None      # (rows,) long, how many entries are valid

    def update(self, rows: torch.Tensor, step: int, residual: torch.Tensor) -> None:
        """Push `residual` (len(rows), *feature) computed at `step` for the given batch rows (ascending, as the
        engine gives them)."""
        if self.residuals is None:
            raise RuntimeError("ResidualHistory.update before allocate()")
        if rows.numel() == self.residuals.shape[1]:  # every row computed (rows in order): plain copies, no gathers
            if self.size > 1:
                self.residuals[1:] = self.residuals[:-1].clone()
                self.steps[1:] = self.steps[:-1].clone()
            self.residuals[0].copy_(residual)
            self.steps[0].fill_(float(step))
            self.count.add_(1).clamp_(max=self.size)
            return
        if self.size > 1:
            self.residuals[1:, rows] = self.residuals[:-1, rows].clone()
            self.steps[1:, rows] = self.steps[:-1, rows].clone()
        self.residuals[0, rows] = residual.to(self.residuals.dtype)
        self.steps[0, rows] = float(step)
        self.count[rows] = (self.count[rows] + 1).clamp(max=self.size)

    def allocate(self, like: torch.Tensor) -> None:
        """Size the buffers after the first residual's shape (rows, *feature)."""
        self.residuals = like.new_zeros((self.size, *like.shape))
        self.steps = torch.zeros((self.size, like.shape[0]), device=like.device)
        self.count = torch.zeros(like.shape[0], dtype=torch.long, device=like.device)

    @property
    def allocated(self) -> bool:
        return self.residuals is not None
