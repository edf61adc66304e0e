"""The per-row history of computed residuals a predictor extrapolates from.

A ring of the last K residuals per batch row (newest first) with the step index each was computed
at. Rows compute at different steps (decisions are per sample), so steps are kept per row; all
updates are tensor ops on the computing rows, no per-row Python loop.
"""

from __future__ import annotations

import torch

from cachepilot.core.layout import zeros_stacked_like


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
            for older in range(self.size - 1, 0, -1):  # oldest first: each entry copied once, no temporary
                self.residuals[older].copy_(self.residuals[older - 1])
                self.steps[older].copy_(self.steps[older - 1])
            self.residuals[0].copy_(residual)
            self.steps[0].fill_(float(step))
            self.count.add_(1).clamp_(max=self.size)
            return
        # index_select / index_copy_: advanced indexing costs several times more on CPU
        if self.size > 1:
            self.residuals[1:].index_copy_(1, rows, self.residuals[:-1].index_select(1, rows))
            self.steps[1:].index_copy_(1, rows, self.steps[:-1].index_select(1, rows))
        self.residuals[0].index_copy_(0, rows, residual.to(self.residuals.dtype))
        self.steps[0].index_fill_(0, rows, float(step))
        self.count.index_copy_(0, rows, (self.count.index_select(0, rows) + 1).clamp(max=self.size))

    def allocate(self, like: torch.Tensor) -> None:
        """Size the buffers after the first residual's shape (rows, *feature)."""
        self.residuals = zeros_stacked_like(like, self.size)  # laid out as the residuals: plain copies in
        self.steps = torch.zeros((self.size, like.shape[0]), device=like.device)
        self.count = torch.zeros(like.shape[0], dtype=torch.long, device=like.device)

    @property
    def allocated(self) -> bool:
        return self.residuals is not None
