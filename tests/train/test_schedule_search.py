import pytest

from cachepilot.driver import SamplingDriver
from cachepilot.envs.references import uniform_mask
from cachepilot.train.schedule_search import search_schedule, start_masks, warmup_mask


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
    assert mask in start_masks(10, 4) and score > 0
    improved, better = search_schedule(driver, conditions, 0.4, samples=2, predictor="taylor:1", max_sweeps=1,
                                       progress=False)
    assert better >= score and sum(improved) == 4
