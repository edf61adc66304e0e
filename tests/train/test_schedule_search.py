import numpy as np
import pytest

from cachepilot import InvalidInputError
from cachepilot.policies.baselines import taylorseer_mask
from cachepilot.driver import SamplingDriver
from cachepilot.envs.references import uniform_mask
from cachepilot.train.schedule_search import (search_schedule, start_masks, training_free_masks,
                                              uniform_to_penultimate, warmup_mask)


@pytest.mark.parametrize("steps,computes", [(50, 10), (50, 15), (20, 6), (100, 40), (8, 3)])
def test_every_start_spends_exactly_the_budget_and_keeps_first_and_last(steps, computes):
    starts = start_masks(steps, computes)
    assert starts[0] == uniform_mask(steps, computes)
    assert len({tuple(m) for m in starts}) == len(starts)
    for mask in starts:
        assert len(mask) == steps and sum(mask) == computes and mask[0] and mask[-1]


def test_a_warmup_start_computes_its_first_steps_then_spreads_the_rest():
    mask = warmup_mask(50, 15, 3)
    assert mask[:3] == [True, True, True] and sum(mask) == 15 and mask[-1]
    gaps = [b - a for a, b in zip(*[[s for s, on in enumerate(mask) if on][i:] for i in (0, 1)])][2:]
    assert max(gaps) - min(gaps) <= 1  # evenly spaced after the warm-up


def test_the_search_starts_from_the_best_start(pipe):
    driver = SamplingDriver(pipe, 10)
    conditions = [{"class_labels": c} for c in range(2)]
    mask, score = search_schedule(driver, conditions, 0.4, samples=2, predictor="taylor:1", max_sweeps=0,
                                  progress=False)
    assert mask in start_masks(10, 4, compute_last=False) and score > 0
    improved, better = search_schedule(driver, conditions, 0.4, samples=2, predictor="taylor:1", max_sweeps=1,
                                       progress=False)
    assert better >= score and sum(improved) == 4
    kept, _ = search_schedule(driver, conditions, 0.4, samples=2, predictor="taylor:1", max_sweeps=1,
                              progress=False, compute_last=True)
    assert kept[0] and kept[-1] and sum(kept) == 4


def test_an_earlier_mask_is_one_more_start_and_a_wrong_one_is_refused(pipe):
    driver = SamplingDriver(pipe, 10)
    conditions = [{"class_labels": c} for c in range(2)]
    earlier = [True, False, False, False, True, True, False, False, False, True]  # not among the built-in starts
    assert earlier not in start_masks(10, 4, compute_last=False)
    only, _ = search_schedule(driver, conditions, 0.4, samples=2, predictor="taylor:1", max_sweeps=0,
                              progress=False, extra_starts=[earlier])
    assert only in start_masks(10, 4, compute_last=False) + [earlier]
    for bad in ([True] * 5 + [False] * 5, [True, True, True, True] + [False] * 6):  # 5 computes; 4 but last not kept
        with pytest.raises(InvalidInputError, match="computes"):
            search_schedule(driver, conditions, 0.4, samples=2, predictor="taylor:1", max_sweeps=0, progress=False,
                            extra_starts=[bad], compute_last=True)


@pytest.mark.parametrize("steps,computes", [(50, 10), (50, 15), (20, 10), (100, 40)])
def test_open_ended_starts_forecast_the_last_step_like_taylorseer(steps, computes):
    starts = start_masks(steps, computes, compute_last=False)
    assert starts[:len(start_masks(steps, computes))] == start_masks(steps, computes)  # the closed ones first
    open_ended = [m for m in starts if not m[-1]]
    assert open_ended and all(sum(m) <= computes and m[0] for m in open_ended)
    assert sum(sum(m) == computes for m in open_ended) >= 4  # the warm-ups of 1..4, the budget spent
    assert len({tuple(m) for m in starts}) == len(starts)


@pytest.mark.parametrize("steps,computes", [(50, 10), (50, 15), (20, 4), (100, 40)])
def test_a_start_computes_the_second_to_last_step_and_forecasts_the_last(steps, computes):
    mask = uniform_to_penultimate(steps, computes)
    assert mask in start_masks(steps, computes, compute_last=False)
    assert mask not in start_masks(steps, computes)  # its last step is forecast
    assert sum(mask) == computes and mask[0] and mask[-2] and not mask[-1]
    gaps = np.diff(np.flatnonzero(mask))
    assert gaps.max() - gaps.min() <= 1  # evenly spread


def test_training_free_schedules_within_the_budget_are_starts():
    # 75 steps, 22 computes: no TaylorSeer interval spends them exactly; interval 4 (21 computes) is the closest
    ts4 = [c == "1" for c in taylorseer_mask(4, 75)]
    assert sum(ts4) == 21 and ts4 in training_free_masks(75, 22) and ts4 in start_masks(75, 22, compute_last=False)
    assert [s % 4 == 0 for s in range(75)] in training_free_masks(75, 22)  # fixed interval 4: 19 computes
    assert all(sum(m) <= 22 for m in training_free_masks(75, 22))
    assert ts4 not in start_masks(75, 22)  # with the last step computed: only exact-budget shapes


def test_a_start_within_the_budget_is_searched_from(pipe):
    driver = SamplingDriver(pipe, 10)
    conditions = [{"class_labels": c} for c in range(3)]
    sparse = [True, False, False, True, False, False, False, False, False, False]  # 2 of the 4 computes allowed
    mask, score = search_schedule(driver, conditions, 0.4, samples=2, predictor="taylor:1", max_sweeps=0,
                                  progress=False, extra_starts=[sparse])
    assert sum(mask) <= 4 and score > 0


def test_the_open_ended_warmup_of_three_is_taylorseers_own_schedule():
    assert "".join("1" if m else "0" for m in warmup_mask(50, 15, 3, open_end=True)) == taylorseer_mask(4, 50)
    assert warmup_mask(20, 10, 1, open_end=True) == [s % 2 == 0 for s in range(20)]  # fixed interval 2
    assert [s % 5 == 0 for s in range(100)] in start_masks(100, 20, compute_last=False)  # fixed interval 5
    assert [s % 5 == 0 for s in range(100)] not in start_masks(100, 20)  # its last step is forecast


def test_selection_on_other_samples_returns_a_start_or_a_sweeps_best(pipe):
    driver = SamplingDriver(pipe, 10)
    conditions = [{"class_labels": c} for c in range(3)]
    searched, _ = search_schedule(driver, conditions, 0.4, samples=2, predictor="taylor:1", max_sweeps=1,
                                  progress=False)
    chosen, score = search_schedule(driver, conditions, 0.4, samples=2, predictor="taylor:1", max_sweeps=1,
                                    progress=False, select_samples=3)
    assert sum(chosen) == 4 and chosen[0] and score > 0
    assert chosen == searched or chosen in start_masks(10, 4, compute_last=False)  # on the search's path


def test_a_tie_goes_to_the_first_mask_as_in_one_process():
    from cachepilot.train.schedule_search import _best

    masks = [[True, False, True], [True, True, False], [True, False, False]]
    scores = {0: 30.0, 1: 31.5, 2: 31.5}
    assert _best(lambda mask: scores[masks.index(mask)], masks) == (31.5, masks[1])
