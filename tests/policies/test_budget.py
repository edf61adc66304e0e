import pytest
import torch

from cachepilot import InvalidInputError
from cachepilot.policies.budget import apply_masks, budget_computes, budget_masks
import queue

from cachepilot.policies.external import SteppedActions
from cachepilot.core.actions import Action
from cachepilot.core.observation import Observation


def _obs(step, computes, steps=10, has_cache=True):
    n = len(computes)
    z = torch.zeros(n)
    return Observation(step, steps, z, z, torch.ones(n, dtype=torch.long), torch.tensor(computes),
                       torch.full((n,), has_cache))


def test_budget_computes_range():
    assert budget_computes(0.3, 50) == 15 and budget_computes(0.01, 50) == 2 and budget_computes(1.0, 7) == 7
    for bad in (0, -0.1, 1.5):
        with pytest.raises(InvalidInputError, match=r"\(0, 1\]"):
            budget_computes(bad, 50)


def test_masks_force_and_forbid():
    allowed = torch.tensor([4, 4, 4])
    m = budget_masks(_obs(0, [0, 0, 0], has_cache=False), allowed)
    assert m[:, Action.COMPUTE].all() and not m[:, Action.FORECAST].any()      # first step: compute
    m = budget_masks(_obs(7, [1, 3, 4]), allowed)                                # 3 steps left
    assert m[0].tolist() == [True, False, False]   # 3 computes left for 3 steps: forced
    assert m[1].tolist() == [False, True, True]    # 1 left: kept for the last step
    assert m[2].tolist() == [False, True, True]    # none left
    m = budget_masks(_obs(9, [3, 3, 3]), allowed)
    assert m[:, Action.COMPUTE].all() and not m[:, Action.REUSE].any()          # last step: compute


def test_masks_with_the_last_step_free():
    allowed = torch.tensor([4, 4, 4])
    m = budget_masks(_obs(7, [1, 3, 4]), allowed, compute_last=False)           # 3 steps left
    assert m[0].tolist() == [True, False, False]   # 3 computes left for 3 steps: still forced
    assert m[1].tolist() == [True, True, True]     # 1 left: free to spend now
    assert m[2].tolist() == [False, True, True]    # none left
    m = budget_masks(_obs(9, [3, 3, 4]), allowed, compute_last=False)
    assert m[0].tolist() == [True, False, False] and m[2].tolist() == [False, True, True]  # last step: as the budget says


def test_apply_masks_replaces_only_forbidden():
    masks = torch.tensor([[True, False, False], [False, True, True], [True, True, True]])
    out = apply_masks(torch.tensor([2, 0, 1]), masks)
    assert out.tolist() == [0, 2, 1]


def test_stepped_actions_hand_out_the_observation_and_reuse_the_step_for_a_second_context():
    policy, outbox = SteppedActions(), queue.Queue()
    policy.new_call(outbox)
    policy.inbox.put(torch.tensor([0, 2]))
    obs = _obs(1, [1, 1])
    assert policy.decide(obs).tolist() == [0, 2]
    assert outbox.get_nowait() == ("obs", obs)
    assert policy.decide(_obs(1, [1, 1])).tolist() == [0, 2]  # true CFG: same step, same decision
    assert outbox.empty()
    policy.inbox.put(torch.tensor([0]))
    with pytest.raises(RuntimeError, match=r"\(1,\) actions for 2 samples"):
        policy.decide(_obs(2, [1, 1]))
