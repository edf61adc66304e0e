"""The one rule that says which of several calibrated step counts serves a call of another count.

The prior's searched masks and the forecaster gate's tables are both kept per step count; a call at a count
that was not calibrated uses the nearest one, and both must pick the same (they disagreed at 32-34 and 71-74
steps when one measured the difference and the other the ratio). Distance is the log-ratio: a schedule
resampled from 25 to 50 steps is as far off as one from 100 to 50, and a tie goes to the larger count (the
finer schedule).
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def nearest_count(counts: Iterable[int], num_steps: int) -> int:
    """The count in `counts` nearest `num_steps` in ratio (the larger one on a tie); ValueError when empty."""
    candidates = [int(c) for c in counts]
    if not candidates:
        raise ValueError("no step count to choose from")
    steps = max(int(num_steps), 1)
    return min(candidates, key=lambda count: (round(abs(math.log(count / steps)), 12), -count))
