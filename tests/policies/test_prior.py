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
    # a searched mask within the budget (a training-free start that won): kept as it is, not filled up
    within = "1000100010001000100010000"  # 7 computes where 0.3 of 25 allows 8
    assert budget_computes(0.3, 25) == 8 and _string(SchedulePrior({0.3: within}).mask(0.3, 25)) == within


def test_a_list_of_targets_meets_the_searched_mask_exactly():
    # 0.3 of 75 steps is 22.5 computes: the searched mask has 22; 0.3 through float32 (0.30000001) rounds to 23
    searched = "111101000100010001000100010001000100010001000100010001000100010001000100010"
    assert searched.count("1") == budget_computes(0.3, 75) == 22
    for targets in ([0.3, 0.3], torch.tensor([0.3, 0.3])):  # a float32 tensor too (the env's targets)
        masks = SchedulePrior({0.3: searched}).masks(targets, 75)
        assert all(_string(row) == searched for row in masks)


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
    with pytest.raises(CheckpointError, match="the first step one of them"):
        SchedulePrior({0.2: "0110"})
    path = tmp_path / "s.json"
    path.write_text("{}")
    with pytest.raises(CheckpointError, match="searched_schedules"):
        SchedulePrior.from_file(path)


SEARCHED_10 = {0.2: "1000000001", 0.4: "1100010001"}  # the same targets searched at 10 steps


def test_masks_searched_at_several_step_counts_serve_the_nearest_count(tmp_path):
    import json

    both = SchedulePrior({t: [SEARCHED[t], SEARCHED_10[t]] for t in SEARCHED})
    assert both.searched_steps() == [10, 25]
    for target in SEARCHED:
        assert _string(both.mask(target, 25)) == SEARCHED[target]
        assert _string(both.mask(target, 10)) == SEARCHED_10[target]
    for steps in (12, 30, 50):  # nearest searched count: 10 for 12, 25 for 30 and 50
        nearest = SchedulePrior(SEARCHED_10 if steps == 12 else SEARCHED)
        assert both.mask(0.3, steps) == nearest.mask(0.3, steps)
    assert SchedulePrior(both.to_dict()).by_steps == both.by_steps  # the JSON form round-trips
    assert SchedulePrior(SEARCHED).to_dict() == {"0.2": SEARCHED[0.2], "0.4": SEARCHED[0.4]}  # one count: as before
    files = []
    for name, masks in (("a", SEARCHED), ("b", SEARCHED_10)):
        files.append(tmp_path / f"{name}.json")
        files[-1].write_text(json.dumps({"num_steps": len(masks[0.2]),
                                         "schedules": {f"{t:g}": {"mask": m} for t, m in masks.items()}}))
    assert SchedulePrior.from_files(files).by_steps == both.by_steps


def test_a_count_searched_without_a_target_serves_that_target_from_the_nearest_count_that_has_it():
    # searched at 10 steps for 0.2 and 0.4, at 25 for 0.4 only (the search left 0.2 out there: the policy's own
    # decisions were better): 0.2 at 25 steps is warped from the 10-step masks, 0.4 keeps its 25-step mask
    prior = SchedulePrior({0.2: SEARCHED_10[0.2], 0.4: [SEARCHED_10[0.4], SEARCHED[0.4]]})
    assert prior.nearest_steps(25, 0.2) == 10 and prior.nearest_steps(25, 0.4) == 25
    assert prior.nearest_steps(25, 0.30000001) == 25  # a target searched nowhere: the nearest count, as before
    assert prior.nearest_steps(25) == 25
    assert _string(prior.mask(0.4, 25)) == SEARCHED[0.4]
    assert prior.mask(0.2, 25) == SchedulePrior(SEARCHED_10).mask(0.2, 25)


def test_masks_that_forecast_the_last_step_are_kept_and_warped_without_it():
    open_end = {0.3: "1110001000100010001000100"}  # TaylorSeer-shaped: the last compute 2 steps before the end
    prior = SchedulePrior(open_end)
    assert "".join("1" if m else "0" for m in prior.mask(0.3, 25)) == open_end[0.3]  # as searched
    warped = prior.mask(0.3, 50)
    assert sum(warped) == 15 and warped[0] and not warped[-1]
    assert max(s for s, m in enumerate(warped) if m) == round(22 / 24 * 49)  # the same place in normalised time


@pytest.mark.parametrize("counts, steps, expected", [((20, 50), 33, 50), ((50, 100), 72, 100), ((20, 50), 31, 20),
                                                     ((50, 100), 70, 50), ((25, 100), 50, 100)])
def test_the_prior_and_the_gate_pick_the_same_nearest_count(counts, steps, expected):
    """One rule (log-ratio, the larger count on a tie): at 33 and 72 steps the absolute difference picked 20 and 50
    for the prior while the gate's ratio picked 50 and 100."""
    from cachepilot.predictors.gated import Gated
    from cachepilot.predictors.learned import Learned, ResidualForecaster
    from cachepilot.step_counts import nearest_count

    masks = {20: "10001000100010001001", 25: "1000100010001000100010001", 50: "1" + "0001" * 12 + "1",
             100: "1" + "00001" * 19 + "0001"}
    prior = SchedulePrior({0.3: [masks[n] for n in counts]})
    gate = Gated(Learned(ResidualForecaster(4, history=3, rank=2, width=8)),
                 {n: [f"taylor:{1 + (n == expected)}"] for n in counts})
    assert nearest_count(counts, steps) == expected
    assert prior.nearest_steps(steps) == expected and prior.nearest_steps(steps, 0.3) == expected
    assert gate.choices(steps) == ["taylor:2"]
