from cachepilot.driver import SamplingDriver, unhooked_twin
import pytest
import torch

from cachepilot.envs.episodes import CachingEpisodes
from cachepilot.policies.prior import SchedulePrior
from cachepilot.train.oracle import follow_masks, move_compute, oracle_masks


def test_move_compute_moves_one_interior_compute_per_row_where_it_can():
    masks = torch.tensor([[1, 0, 1, 0, 0, 1], [1, 1, 0, 0, 0, 1]], dtype=torch.bool)
    moved = move_compute(masks, 1, 1)
    assert moved[0].tolist() == [1, 0, 0, 1, 0, 1] and moved[1].tolist() == [1, 0, 1, 0, 0, 1]
    assert torch.equal(move_compute(masks, 1, -1)[1], masks[1])  # would land on the first step: unchanged
    crowded = torch.tensor([[1, 0, 1, 1, 0, 1]], dtype=torch.bool)
    assert torch.equal(move_compute(crowded, 1, 1), crowded)      # would land on a compute: unchanged
    assert torch.equal(move_compute(masks, 2, 1), masks)         # k = last compute: never moved
    assert (move_compute(masks, 1, 2).sum(1) == masks.sum(1)).all()
    free = move_compute(masks, 2, -1, compute_last=False)           # the last step free: its compute moves too
    assert free[0].tolist() == [1, 0, 1, 0, 1, 0] and free[1].tolist() == [1, 1, 0, 0, 1, 0]
    open_end = torch.tensor([[1, 0, 1, 0, 0, 0]], dtype=torch.bool)
    assert move_compute(open_end, 1, 3, compute_last=False)[0].tolist() == [1, 0, 0, 0, 0, 1]  # onto the last step


def test_oracle_keeps_budgets_and_never_does_worse_than_the_prior(pipe):
    episodes = CachingEpisodes(SamplingDriver(unhooked_twin(pipe), 10), "taylor:1", prior=SchedulePrior())
    seeds, targets = [1, 2, 3, 4], [0.3, 0.3, 0.5, 0.5]
    conditions = [{"class_labels": c} for c in (0, 3, 7, 9)]
    prior = episodes.prior.masks(targets, 10)
    masks = oracle_masks(episodes, seeds, conditions, targets, sweeps=1, shifts=(-1, 1), progress=False)
    assert torch.equal(masks.sum(1), prior.sum(1)) and masks[:, 0].all() and masks[:, -1].all()
    before = follow_masks(episodes, seeds, conditions, targets, prior)
    after, obs, actions, rewards = follow_masks(episodes, seeds, conditions, targets, masks, record=True)
    assert (after <= before + 1e-6).all()
    assert obs.shape[:2] == (10, 4) and torch.equal(actions == 0, masks.T)


def test_grouped_oracle_gives_a_group_one_mask_and_never_raises_its_mean(pipe):
    episodes = CachingEpisodes(SamplingDriver(unhooked_twin(pipe), 10), "taylor:1", prior=SchedulePrior())
    seeds, targets, groups = [1, 2, 3, 4], [0.3, 0.3, 0.3, 0.3], torch.tensor([5, 5, 9, 9])
    conditions = [{"class_labels": c} for c in (3, 3, 7, 7)]
    prior = episodes.prior.masks(targets, 10)
    masks = oracle_masks(episodes, seeds, conditions, targets, sweeps=2, shifts=(-1, 1), progress=False,
                         groups=groups)
    assert torch.equal(masks[0], masks[1]) and torch.equal(masks[2], masks[3])
    before = follow_masks(episodes, seeds, conditions, targets, prior).log()
    after = follow_masks(episodes, seeds, conditions, targets, masks).log()
    assert after[:2].mean() <= before[:2].mean() + 1e-6 and after[2:].mean() <= before[2:].mean() + 1e-6
    with pytest.raises(ValueError, match="one target"):
        oracle_masks(episodes, seeds, conditions, [0.3, 0.5, 0.3, 0.3], sweeps=1, progress=False, groups=groups)
