import pytest
import torch

from cachepilot import InvalidInputError
from cachepilot.policies.baselines import FixedInterval, Schedule, Threshold
from cachepilot.policies.spec import make_policy
from cachepilot.core.actions import Action
from cachepilot.core.observation import Observation


def _obs(step, num_steps=10, accumulated=(0.0, 0.2, 0.5)):
    n = len(accumulated)
    acc = torch.tensor(accumulated)
    return Observation(step, num_steps, acc, acc, torch.ones(n, dtype=torch.long), torch.ones(n, dtype=torch.long),
                       torch.ones(n, dtype=torch.bool))


def test_fixed_interval_computes_every_nth_step():
    policy = FixedInterval(3)
    computes = [bool((policy.decide(_obs(s)) == Action.COMPUTE).all()) for s in range(10)]
    assert computes == [s % 3 == 0 for s in range(10)]


def test_threshold_is_per_sample():
    decided = Threshold(0.3).decide(_obs(4))
    assert decided.tolist() == [Action.FORECAST, Action.FORECAST, Action.COMPUTE]
    assert (Threshold(0).decide(_obs(4)) == Action.COMPUTE).all()


def test_schedule_follows_its_mask_and_checks_length():
    policy = Schedule([1, 0, 0, 1])
    policy.reset(4, 3)
    assert [int(policy.decide(_obs(s, 4))[0]) for s in range(4)] == [0, 2, 2, 0]
    assert policy.compute_fraction == 0.5
    with pytest.raises(InvalidInputError, match="4 steps but the call runs 5"):
        policy.reset(5, 1)


@pytest.mark.parametrize("spec", ["always", "fixed:3", "threshold:0.1", "schedule:1001"])
def test_specs_round_trip(spec):
    assert make_policy(spec).spec() == spec


@pytest.mark.parametrize("spec, match", [
    ("fixed:0", "interval must be"), ("fixed:-2", "interval must be"), ("fixed:x", "bad policy spec"),
    ("threshold:-0.1", "delta must be"), ("threshold:nan", "delta must be"), ("schedule:", "unknown policy"),
    ("schedule:10a", "unknown policy"), ("sometimes", "unknown policy"), ("fixed", "unknown policy"),
])
def test_bad_policy_specs(spec, match):
    with pytest.raises(InvalidInputError, match=match):
        make_policy(spec)
