import pytest
import torch

from cachepilot import CheckpointError
from cachepilot.policies.budget import budget_computes
from cachepilot.policies.prior import SchedulePrior

SEARCHED = {0.2: "1000100000100001000000001", 0.4: "1010011000100110001000011"}  # 5 and 10 computes of 25


def _string(mask) -> str:
    return "".join("1" if m else "0" for m in mask)


def test_searched_targets_give_the_searched_mask_exactly():
    prior = SchedulePrior(SEARCHED)
    for target, mask in SEARCHED.items():
        assert _string(prior.mask(target, 25)) == mask


@pytest.mark.parametrize("steps", [10, 25, 50, 100])
@pytest.mark.parametrize("target", [0.05, 0.2, 0.3, 0.45, 0.9, 1.0])
def test_any_budget_is_exact_and_computes_first_and_last(target, steps):
    mask = SchedulePrior(SEARCHED).mask(target, steps)
    assert len(mask) == steps and sum(mask) == budget_computes(target, steps)
    assert mask[0] and mask[-1]


def test_in_between_targets_interpolate_and_empty_prior_is_uniform():
    prior = SchedulePrior(SEARCHED)
    mid = torch.tensor(prior.mask(0.3, 25)).nonzero().flatten().float()
    assert mid[1] < 25 * 0.3  # the searched masks are front-loaded; so is the interpolation
    from cachepilot.envs.references import uniform_mask

    assert SchedulePrior().mask(0.2, 50) == uniform_mask(50, 10)
    rows = SchedulePrior(SEARCHED).masks(torch.tensor([0.2, 0.4, 0.2]), 25)
    assert rows.shape == (3, 25) and torch.equal(rows[0], rows[2])


def test_bad_prior_files_and_masks(tmp_path):
    with pytest.raises(CheckpointError, match="first and last"):
        SchedulePrior({0.2: "0110"})
    path = tmp_path / "s.json"
    path.write_text("{}")
    with pytest.raises(CheckpointError, match="searched_schedules"):
        SchedulePrior.from_file(path)
