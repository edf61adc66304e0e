"""`SchedulePrior`: where a good *fixed* schedule would compute, at any budget and step count.

The learned policy sees the prior's suggestion for the current step as part of its observation, so
it can follow the offline-searched schedule exactly and RL only has to learn where a sample should
deviate from it (a residual policy). The prior is made of the searched masks (`cachepilot
search-schedule`); for other budgets and step counts each mask is read as a quantile function
(k-th compute -> step fraction), interpolated linearly between the two nearest searched targets and
sampled at the new number of computes. At a searched target and step count it returns the searched
mask exactly; with no searched masks it is the uniform schedule.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from cachepilot.errors import CheckpointError
from cachepilot.policies.budget import budget_computes


def _quantiles(mask: str) -> tuple[np.ndarray, np.ndarray]:
    """(k / (C-1), step_k / (T-1)) for the C computes of a '1'/'0' mask over T steps."""
    steps = np.array([i for i, c in enumerate(mask) if c == "1"], dtype=np.float64)
    return np.linspace(0.0, 1.0, len(steps)), steps / (len(mask) - 1)


def _place(fractions: np.ndarray, num_steps: int) -> list[int]:
    """Distinct, increasing steps nearest to the fractions; the first and last step included."""
    steps = np.rint(fractions * (num_steps - 1)).astype(int)
    steps[0], steps[-1] = 0, num_steps - 1
    for i in range(1, len(steps)):  # push collisions forward, then back from the end
        steps[i] = max(steps[i], steps[i - 1] + 1)
    steps[-1] = num_steps - 1
    for i in range(len(steps) - 2, -1, -1):
        steps[i] = min(steps[i], steps[i + 1] - 1)
    return steps.tolist()


class SchedulePrior:
    def __init__(self, schedules: dict[float, str] | None = None):
        """schedules: target compute fraction -> mask as a '1'/'0' string (first and last step computed)."""
        self.schedules = {float(t): str(m) for t, m in sorted((schedules or {}).items())}
        for target, mask in self.schedules.items():
            if set(mask) - {"0", "1"} or mask.count("1") < 2 or mask[0] != "1" or mask[-1] != "1":
                raise CheckpointError(f"prior schedule for target {target:g} is not a '1'/'0' mask that computes "
                                      f"the first and last step: {mask!r}")

    @classmethod
    def from_file(cls, path: str | Path) -> SchedulePrior:
        """Read a `cachepilot search-schedule` result (searched_schedules.json)."""
        try:
            found = json.loads(Path(path).read_text())
            return cls({float(t): entry["mask"] for t, entry in found["schedules"].items()})
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"{path} is not a searched_schedules.json ({err})") from None

    def to_dict(self) -> dict[str, str]:
        return {f"{t:g}": m for t, m in self.schedules.items()}

    def mask(self, target: float, num_steps: int) -> list[bool]:
        """The prior's mask for one target (exactly `budget_computes(target, num_steps)` computes)."""
        computes = budget_computes(target, num_steps)
        if computes >= num_steps:
            return [True] * num_steps
        u = np.linspace(0.0, 1.0, computes)
        if not self.schedules:
            fractions = u
        else:
            targets = list(self.schedules)
            curves = [np.interp(u, *_quantiles(self.schedules[t])) for t in targets]
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
        """(N, num_steps) bool: the prior mask of each sample's target."""
        cache: dict[float, list[bool]] = {}
        for target in torch.as_tensor(targets).tolist():
            if target not in cache:
                cache[target] = self.mask(target, num_steps)
        return torch.tensor([cache[t] for t in torch.as_tensor(targets).tolist()], dtype=torch.bool)
