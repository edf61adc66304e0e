"""Where every noise seed the project draws comes from, in one place, so the ranges stay disjoint.

A sample depends only on its seed and condition (`driver.noise_generators`), so keeping the ranges apart is
what keeps a figure honest: the bench and `evaluate` never score a seed that training, the schedule search or
the forecaster calibration saw. Each name is the first seed of its range; a run uses `start + i`.
"""

from __future__ import annotations

GENERATE = 0                  # `generate`'s default: the demo images
EVALUATE = 10_000             # `evaluate`: quality of the sampler, apart from every fitted stage
BENCH = 20_000                # `bench` and fit reports: held-out seeds no fitted stage saw
SENSITIVITY = 90_000          # step sensitivity (which steps matter)
COLLECT = 100_000             # trajectories for the forecaster heads
POLICY_TRAINING = (200_000, 300_000)  # the range PPO episodes (and the research tools' training draws) come from
SEARCH = 300_000              # schedule search and forecaster calibration (training seeds)
SEARCH_SELECT_OFFSET = 50_000  # the schedule search re-scores its finalists on SEARCH + this + i
POLICY_EVALUATION = 400_000   # the policy's held-out evaluation during training

__all__ = ["BENCH", "COLLECT", "EVALUATE", "GENERATE", "POLICY_EVALUATION", "POLICY_TRAINING", "SEARCH",
           "SEARCH_SELECT_OFFSET", "SENSITIVITY"]
