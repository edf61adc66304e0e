import torch

from cachepilot.bench.headroom import auc, deviation_examples, shuffle_within_budgets
from cachepilot.policies.features import FEATURES, NUM_FEATURES


def test_auc():
    labels = torch.tensor([True, False, False, True])
    assert auc(torch.tensor([0.9, 0.1, 0.2, 0.8]), labels) == 1.0
    assert auc(torch.tensor([0.1, 0.9, 0.8, 0.2]), labels) == 0.0
    assert auc(torch.zeros(4), labels) == 0.5


def test_deviation_examples_stop_at_the_first_deviation():
    steps, samples = 6, 2
    obs = torch.zeros(steps, samples, NUM_FEATURES)
    prior = torch.tensor([1, 0, 0, 1, 0, 1], dtype=torch.bool)
    obs[:, :, FEATURES.index("prior_compute")] = prior[:, None].float()
    computes = prior[:, None].repeat(1, samples)
    computes[2, 0], computes[3, 0] = True, False  # sample 0 computes one step early; sample 1 follows
    x, y = deviation_examples(obs, computes)
    assert len(x) == 2 + 5 and y.tolist() == [False, True] + [False] * 5


def test_shuffle_within_budgets_pairs_equal_budgets():
    masks = torch.tensor([[1, 0, 1], [1, 1, 1], [1, 0, 1], [1, 1, 1], [1, 0, 1]], dtype=torch.bool)
    perm = shuffle_within_budgets(masks)
    assert sorted(perm.tolist()) == list(range(5)) and torch.equal(masks[perm].sum(1), masks.sum(1))
