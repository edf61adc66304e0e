"""`SchedulePrior`: where a good *fixed* schedule would compute, at any budget and step count.

The learned policy sees the prior's suggestion for the current step as part of its observation, so
it can follow the offline-searched schedule exactly and RL only has to learn where a sample should
deviate from it (a residual policy). The prior is made of the searched masks (`cachepilot
search-schedule`); for other budgets and step counts each mask is read as a quantile function
(k-th compute -> step fraction), interpolated linearly between the two nearest searched targets and
sampled at the new number of computes. At a searched target and step count it returns the searched
mask exactly; with no searched masks it is the uniform schedule.

Masks searched at several step counts can be held together (a list of masks per target): a request
uses the masks of the nearest searched count. Resampling across counts is a weak prior: on the scenes
model the 20-step searched masks resampled to 50 steps lost 0.8-6 dB to uniform schedules at 50 steps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cachepilot.errors import CheckpointError
from cachepilot.policies.budget import budget_computes
from cachepilot.searched import SearchedSchedules
from cachepilot.step_counts import nearest_count


def _quantiles(mask: str) -> tuple[np.ndarray, np.ndarray]:
    """(k / (C-1), step_k / (T-1)) for the C computes of a '1'/'0' mask over T steps."""
    steps = np.array([i for i, c in enumerate(mask) if c == "1"], dtype=np.float64)
    return np.linspace(0.0, 1.0, len(steps)), steps / (len(mask) - 1)


def _place(fractions: np.ndarray, num_steps: int) -> list[int]:
    """Distinct, increasing steps nearest to the fractions; the first step included (the last where the
    fractions end at 1, as masks that compute the last step do)."""
    steps = np.rint(fractions * (num_steps - 1)).astype(int)
    steps[0] = 0
    for i in range(1, len(steps)):  # push collisions forward, then back from the end
        steps[i] = max(steps[i], steps[i - 1] + 1)
    steps[-1] = min(steps[-1], num_steps - 1)
    for i in range(len(steps) - 2, -1, -1):
        steps[i] = min(steps[i], steps[i + 1] - 1)
    return steps.tolist()


class SchedulePrior:
    def __init__(self, schedules: dict[float, str | list[str]] | None = None):
        """schedules: target compute fraction -> mask as a '1'/'0' string (first step computed; the last one may
        be forecast), or a list of masks searched at different step counts (one per count)."""
        self.by_steps: dict[int, dict[float, str]] = {}
        for target, masks in sorted((schedules or {}).items()):
            for mask in [masks] if isinstance(masks, str) else list(masks):
                mask = str(mask)
                if set(mask) - {"0", "1"} or mask.count("1") < 2 or mask[0] != "1":
                    raise CheckpointError(f"prior schedule for target {float(target):g} is not a '1'/'0' mask with "
                                          f"two computes or more, the first step one of them: {mask!r}")
                self.by_steps.setdefault(len(mask), {})[float(target)] = mask
        self.schedules = self.by_steps[min(self.by_steps)] if self.by_steps else {}

    @classmethod
    def from_file(cls, path: str | Path) -> SchedulePrior:
        """Read a `cachepilot search-schedule` result (searched_schedules.json)."""
        return cls.from_files([path])

    @classmethod
    def from_files(cls, paths: list[str | Path]) -> SchedulePrior:
        """Searched schedules of one or several step counts (one searched_schedules.json each)."""
        merged: dict[float, list[str]] = {}
        for path in paths:
            for t, mask in SearchedSchedules.read(path).masks().items():
                merged.setdefault(t, []).append(mask)
        return cls(merged)

    def to_dict(self) -> dict[str, str | list[str]]:
        """JSON form: one mask per target when searched at one step count, else a list (one per count)."""
        targets = sorted({t for masks in self.by_steps.values() for t in masks})
        out: dict[str, str | list[str]] = {}
        for t in targets:
            masks = [self.by_steps[n][t] for n in sorted(self.by_steps) if t in self.by_steps[n]]
            out[f"{t:g}"] = masks[0] if len(self.by_steps) == 1 else masks
        return out

    def searched_steps(self) -> list[int]:
        return sorted(self.by_steps)

    def nearest_steps(self, num_steps: int, target: float | None = None) -> int | None:
        """The searched step count nearest `num_steps` (`step_counts.nearest_count`, the rule the forecaster gate
        uses too), whose masks a call of `num_steps` steps uses; None without searched masks. With `target`, among the counts searched at that target when there
        are any: a search may leave out a target where the policy's own decisions were better (30 steps, 0.2)."""
        counts = [n for n, masks in self.by_steps.items() if target is not None and round(float(target), 6) in masks]
        counts = counts or list(self.by_steps)
        if not counts:
            return None
        return nearest_count(counts, num_steps)

    def _schedules_for(self, num_steps: int, target: float | None = None) -> dict[float, str]:
        """The masks searched at the step count nearest `num_steps` (for `target`, see `nearest_steps`)."""
        nearest = self.nearest_steps(num_steps, target)
        return {} if nearest is None else self.by_steps[nearest]

    def computes_last(self, num_steps: int) -> bool:
        """Whether the masks for `num_steps` keep the last step computed (all uniform and earlier searched ones do).
        The budget rules follow it (`budget_masks(compute_last=)`), in training and at inference alike, so a
        policy trained on a prior that forecasts the last step may do so too, and one trained with it computed
        keeps doing so."""
        return all(mask[-1] == "1" for mask in self._schedules_for(num_steps).values())

    def mask(self, target: float, num_steps: int) -> list[bool]:
        """The prior's mask for one target: the searched mask at a searched target and count (it may compute less
        than the budget: a training-free start that won), else `budget_computes(target, num_steps)` computes."""
        target = round(float(target), 6)  # a float32 target (0.30000001) is the searched 0.3, with its budget
        searched = self.by_steps.get(num_steps, {}).get(target)
        if searched is not None:
            return [c == "1" for c in searched]
        computes = budget_computes(target, num_steps)
        if computes >= num_steps:
            return [True] * num_steps
        u = np.linspace(0.0, 1.0, computes)
        schedules = self._schedules_for(num_steps, target)
        if not schedules:
            fractions = u
        else:
            targets = list(schedules)
            curves = [np.interp(u, *_quantiles(schedules[t])) for t in targets]
            if target <= targets[0] or len(targets) == 1:
                fractions = curves[0]
            elif target >= targets[-1]:
                fractions = curves[-1]
            else:
                hi = int(np.searchsorted(targets, target))
                w = (target - targets[hi - 1]) / (targets[hi] - targets[hi - 1])
                fractions = (1 - w) * curves[hi - 1] + w * curves[hi]
        chosen = set(_place(fractions, num_steps))
        return [s in chosen for s in range(num_steps)]

    def masks(self, targets: torch.Tensor | list[float], num_steps: int) -> torch.Tensor:
        """(N, num_steps) bool: the prior mask of each sample's target. A float32 target is read at 6 decimals
        (`mask`): 0.3 as 0.30000001 missed the searched 75-step mask and rounded 22.5 computes up to 23, where the
        policy's budget (22) then cut the last compute."""
        values = targets.tolist() if isinstance(targets, torch.Tensor) else [float(t) for t in targets]
        cache: dict[float, list[bool]] = {}
        for target in values:
            if target not in cache:
                cache[target] = self.mask(target, num_steps)
        return torch.tensor([cache[t] for t in values], dtype=torch.bool)
