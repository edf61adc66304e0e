"""The digits cache's policy prior: the new masks at 50 / 75 steps, the earlier ones kept at 20 / 25 / 100 as the
policy saw them, then the masks chosen per (step count, target) at 20 / 25 / 75. Rewriting it from the shipped files
is a fixed point, and keeping no count changes 20 and 100 steps."""

import json
import shutil

from cachepilot.checkpoints import DEFAULT_CACHE
from cachepilot.policies.prior import SchedulePrior
from experiments.prior_per_count import DIGITS_CHOSEN, prior_per_count


def test_the_shipped_prior_is_what_the_tool_writes(tmp_path):
    policy = tmp_path / "policy"
    shutil.copytree(DEFAULT_CACHE / "policy", policy)
    shipped = json.loads((policy / "config.json").read_text())["prior"]
    schedules = DEFAULT_CACHE / "searched_schedules.json"
    prior = prior_per_count(policy, schedules, keep=[20, 25, 100], counts=[20, 25, 75, 100], masks=DIGITS_CHOSEN)
    assert prior.searched_steps() == [20, 25, 50, 75, 100]
    assert json.loads((policy / "config.json").read_text())["prior"] == shipped
    masks = json.loads(schedules.read_text())["schedules"]
    assert all(prior.by_steps[50][float(t)] == entry["mask"] for t, entry in masks.items())

    before = SchedulePrior(shipped).by_steps
    moved = prior_per_count(policy, schedules, keep=[], counts=[20, 25, 75, 100])  # the new masks at 20, 100 too
    assert moved.by_steps[20] != before[20] and moved.by_steps[100] != before[100]
    assert all(moved.by_steps[75][t] == before[75][t] for t in (0.3, 0.4))  # 0.2 / 0.5: chosen per target since
    assert moved.by_steps[75][0.2] != before[75][0.2]
