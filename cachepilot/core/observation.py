"""What a policy sees before deciding a step: cheap, per sample, computed by the engine."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Observation:
    """Per-sample tensors have shape (batch,), on the model's device.

    change: relative L1 change of the probe (the stack input) since the sample's last compute.
    accumulated: sum of the step-to-step relative probe changes since the last compute (TeaCache).
    since_compute: steps since the last compute (0 before the first).
    computes: how many times the sample has computed so far in this call.
    has_cache: whether a residual is cached (False before the first compute: COMPUTE is forced).
    drift: relative change of the stack residual between the sample's last two computes, per step
        (how fast its cache goes stale; 0 until it has computed twice; None from older callers).
    """

    step: int
    num_steps: int
    change: torch.Tensor
    accumulated: torch.Tensor
    since_compute: torch.Tensor
    computes: torch.Tensor
    has_cache: torch.Tensor
    drift: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return int(self.change.shape[0])
