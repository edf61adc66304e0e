"""Training-free decision makers the learned policy must beat.

Skipped steps are FORECAST: with the default `Reuse` predictor that is plain residual reuse
(FORA / First-Block-Cache); with `Taylor` it is TaylorSeer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from cachepilot.errors import InvalidInputError
from cachepilot.core.policy import CachePolicy, compute_where
from cachepilot.core.observation import Observation


class AlwaysCompute(CachePolicy):
    """Full compute: the reference every cached run is compared with."""

    observes_probe = False

    def decide(self, obs: Observation) -> torch.Tensor:
        return compute_where(torch.ones_like(obs.has_cache))

    def spec(self) -> str:
        return "always"


class FixedInterval(CachePolicy):
    """FORA / DeepCache: compute every `interval`-th step (0, n, 2n, ...)."""

    observes_probe = False

    def __init__(self, interval: int):
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise InvalidInputError(f"FixedInterval: interval must be an integer >= 1, got {interval!r}")
        self.interval = interval

    def decide(self, obs: Observation) -> torch.Tensor:
        return compute_where(torch.full_like(obs.has_cache, obs.step % self.interval == 0))

    def spec(self) -> str:
        return f"fixed:{self.interval}"


class Threshold(CachePolicy):
    """TeaCache-style: skip while the accumulated relative change of the probe stays below `delta`.

    The probe is the stack input (the patch embeddings of the current latents): it costs nothing
    and moves when the latents move. delta = 0 computes every step.
    """

    observes_drift = False  # the probe's change only

    def __init__(self, delta: float):
        if not isinstance(delta, (int, float)) or isinstance(delta, bool) or not delta >= 0 or delta == float("inf"):
            raise InvalidInputError(f"Threshold: delta must be a finite number >= 0, got {delta!r}")
        self.delta = float(delta)

    def decide(self, obs: Observation) -> torch.Tensor:
        return compute_where(obs.accumulated >= self.delta)

    def spec(self) -> str:
        return f"threshold:{self.delta:g}"


class Schedule(CachePolicy):
    """A fixed per-step mask (True = compute), as calibrated / searched schedules use; a (batch, steps)
    mask gives each sample its own schedule."""

    observes_probe = False

    def __init__(self, mask: Sequence[bool] | torch.Tensor):
        mask = torch.as_tensor(mask, dtype=torch.bool)
        if mask.ndim not in (1, 2) or mask.numel() == 0:
            raise InvalidInputError("Schedule: the mask must be a non-empty (steps,) or (batch, steps) sequence")
        self.mask = mask

    @property
    def num_steps(self) -> int:
        return int(self.mask.shape[-1])

    def reset(self, num_steps: int, batch_size: int) -> None:
        if num_steps != self.num_steps:
            raise InvalidInputError(f"Schedule: the mask has {self.num_steps} steps but the call runs {num_steps}")
        if self.mask.ndim == 2 and self.mask.shape[0] != batch_size:
            raise InvalidInputError(f"Schedule: the mask has {self.mask.shape[0]} rows for {batch_size} samples")

    def decide(self, obs: Observation) -> torch.Tensor:
        column = self.mask[..., obs.step].to(obs.has_cache.device)
        return compute_where(column.expand_as(obs.has_cache) if column.ndim == 0 else column)

    @property
    def compute_fraction(self) -> float:
        return self.mask.float().mean().item()

    def spec(self) -> str:
        if self.mask.ndim == 2:
            return "schedule:per-sample"
        return "schedule:" + "".join("1" if m else "0" for m in self.mask.tolist())


TAYLORSEER_WARMUP = 3  # diffusers' TaylorSeerCacheConfig default `disable_cache_before_step`


def taylorseer_mask(interval: int, steps: int, warmup: int = TAYLORSEER_WARMUP) -> str:
    """The steps diffusers' TaylorSeer computes: the first `warmup`, then every `interval`-th from
    warmup + 1 (its own rule); as a `schedule:` mask string, so our predictors run on the same schedule."""
    return "".join("1" if s < warmup or (s - warmup - 1) % interval == 0 else "0" for s in range(steps))
