"""Incremental scoring: a move forked from the incumbent's recorded run scores exactly what sampling it in full
scores, spends only the evaluations from its first changed step on, and the search finds the same mask with it."""

import pytest
import torch

from cachepilot.bench.counting import StackCounter
from cachepilot.driver import SamplingDriver
from cachepilot.embedded.scenes.model import SCENES, SCENES_DIR
from cachepilot.loading import load_pipeline
from cachepilot.predictors.spec import make_predictor
from cachepilot.predictors.taylor import Taylor
from cachepilot.train.incremental import MaskScorer, fork_step
from cachepilot.train.plan import _search
from cachepilot.train.schedule_search import search_schedule

STEPS = 12


def _moves(incumbent: list[bool], shifts=(-2, -1, 1, 2)) -> list[list[bool]]:
    moves = []
    for step in [s for s, on in enumerate(incumbent) if on and s > 0]:
        for shift in shifts:
            new = step + shift
            if 0 < new < len(incumbent) and not incumbent[new]:
                mask = list(incumbent)
                mask[step], mask[new] = False, True
                moves.append(mask)
    return moves


def _forked_cost(incumbent: list[bool], moves: list[list[bool]]) -> int:
    """Sample-steps computed: the incumbent once, each move from its fork step on."""
    return sum(incumbent) + sum(sum(m[fork_step(incumbent, m):]) for m in moves)


@pytest.mark.parametrize("forecaster", ["taylor:1", "dmd:1", "hermite:2"])
def test_forked_moves_score_what_full_runs_score_for_fewer_evaluations(pipe, forecaster):
    driver = SamplingDriver(pipe, STEPS)
    scorer = MaskScorer(driver, [{"class_labels": c} for c in range(3)], 0, 3, 7)
    incumbent = [s % 3 == 0 for s in range(STEPS)]
    moves = _moves(incumbent)
    predictor = make_predictor(forecaster)
    full = [scorer.score(m, predictor) for m in moves]
    assert len(set(full)) > 3  # the moves score apart: a replay of the wrong steps would show
    with StackCounter(pipe.transformer) as counter:
        forks = scorer.forks(incumbent, predictor, moves)
        forked = [forks.score(m) for m in moves]
    assert forked == full  # bit for bit
    assert forks.incumbent_score == scorer.score(incumbent, predictor)
    assert counter.evaluations == 3 * _forked_cost(incumbent, moves) < 3 * sum(sum(m) for m in moves)


def test_samples_over_several_pipeline_calls_fork_call_by_call(pipe):
    driver = SamplingDriver(pipe, STEPS, batch_size=2)  # 5 samples: pipeline calls of 2, 2 and 1
    scorer = MaskScorer(driver, [{"class_labels": c} for c in range(5)], 0, 5, 11)
    incumbent = [s % 4 == 0 for s in range(STEPS)]
    moves = _moves(incumbent)
    forks = scorer.forks(incumbent, Taylor(2), moves)
    assert sorted({call for call, _ in forks.recording.snapshots}) == [0, 1, 2]
    assert [forks.score(m) for m in moves] == [scorer.score(m, Taylor(2)) for m in moves]


def test_true_guidance_contexts_fork_together():
    """The scenes pipeline runs its "cond" and "uncond" contexts one after the other every step (true CFG): both
    engine states come back at the fork."""
    scenes = load_pipeline(SCENES_DIR)
    driver = SamplingDriver(scenes, 10, SCENES.call_kwargs())
    scorer = MaskScorer(driver, SCENES.conditions(2), 0, 2, 3)
    incumbent = [s % 2 == 0 for s in range(10)]
    moves = _moves(incumbent, shifts=(1,))
    full = [scorer.score(m, Taylor(1)) for m in moves]
    with StackCounter(scenes.transformer) as counter:
        forks = scorer.forks(incumbent, Taylor(1), moves)
        assert [forks.score(m) for m in moves] == full
    assert counter.evaluations == 2 * 2 * _forked_cost(incumbent, moves)


def test_a_forecaster_that_reads_the_whole_schedule_is_scored_in_full(pipe):
    class Whole(Taylor):
        causal = False

    driver = SamplingDriver(pipe, STEPS)
    scorer = MaskScorer(driver, [{"class_labels": 1}], 0, 1, 7)
    incumbent = [s % 3 == 0 for s in range(STEPS)]
    moves = _moves(incumbent)[:3]
    with StackCounter(pipe.transformer) as counter:
        forks = scorer.forks(incumbent, Whole(1), moves)
        scores = [forks.score(m) for m in moves]
    assert forks.recording is None and scores == [scorer.score(m, Taylor(1)) for m in moves]
    assert counter.evaluations == sum(sum(m) for m in moves)
    assert scorer.forks(incumbent, "taylor:1", moves[:1]).recording is not None  # a spec: its predictor's causality


def test_the_search_finds_the_same_mask_for_fewer_evaluations_within_its_plan(pipe):
    driver = SamplingDriver(pipe, STEPS)
    conditions = [{"class_labels": c} for c in range(2)]
    found, spent = {}, {}
    for incremental in (False, True):
        with StackCounter(pipe.transformer) as counter:
            found[incremental] = search_schedule(driver, conditions, 0.4, samples=2, predictor="taylor:1",
                                                 max_sweeps=2, progress=False, incremental=incremental)
        spent[incremental] = counter.evaluations
    assert found[True] == found[False]
    assert spent[True] < spent[False]

    class Config:
        targets, search_samples, select_samples = [0.4], 2, 0
    assert spent[True] <= _search(Config, STEPS)
