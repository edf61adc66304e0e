"""The lean fit: its search keeps the best (forecaster, mask) it scored, spends exactly the evaluations its plan
says, and writes a checkpoint of searched schedules alone that `enable`, the bench and the CLI load."""

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch

import cachepilot
from cachepilot.bench.counting import StackCounter
from cachepilot.cache_checkpoint import CacheCheckpoint, SearchedSchedulePolicy
from cachepilot.driver import SamplingDriver
from cachepilot.errors import CheckpointError, InvalidInputError
from cachepilot.loading import load_pipeline
from cachepilot.policies.budget import budget_computes
from cachepilot.predictors.spec import make_predictor
from cachepilot.seeds import SEARCH
from cachepilot.train.fit import CONFIG_FILE, FitConfig, fit
from cachepilot.train.lean import LEAN_FORECASTERS, choose_forecaster, lean_evaluations, lean_search, lean_starts
from cachepilot.train.incremental import MaskScorer

from ..tiny_pipelines import build_tiny_pipeline, call_kwargs

STEPS = 8


@pytest.fixture(scope="module")
def dit(tmp_path_factory):
    """A tiny DiT (batched classifier-free guidance: 2 evaluations per sample-step), its weights perturbed so that
    forecasters and masks score apart."""
    pipe = load_pipeline(build_tiny_pipeline("dit", tmp_path_factory.mktemp("dit") / "pipe"))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in pipe.transformer.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return pipe


def _kwargs() -> dict:
    return {k: v for k, v in call_kwargs("dit").items() if k != "num_inference_steps"}


def test_the_search_keeps_the_best_it_scored_and_spends_what_it_counts(dit):
    driver = SamplingDriver(dit, STEPS, _kwargs(), batch_size=8)
    conditions = [{"class_labels": c} for c in range(4)]
    targets = [0.3, 0.5]
    with StackCounter(dit.transformer) as counter:
        found = lean_search(driver, conditions, targets, samples=3)  # 3: a median apart from the mean
    # 2 guidance copies; references, every start, every other forecaster on each chosen mask (the first's score of
    # it is the mask search's): within the plan's bound
    chosen = sum(sum(found.schedules[t][0]) for t in targets)
    starts = sum(sum(sum(m) for m in lean_starts(STEPS, t)) for t in targets)
    assert counter.evaluations == 2 * 3 * (STEPS + starts + (len(LEAN_FORECASTERS) - 1) * chosen)
    assert counter.evaluations <= 2 * lean_evaluations(STEPS, targets, 3)
    # scored again, independently: each target's mask is the best of its starts with Taylor-1 (median), its
    # forecaster Taylor-1 unless another gains beyond its standard error; the checkpoint-wide one has the best mean
    scorer = MaskScorer(driver, conditions, 0, 3, SEARCH)
    assert set(found.forecaster_scores) == set(LEAN_FORECASTERS) and LEAN_FORECASTERS[0] == "taylor:1"
    means = {f: sum(by.values()) / len(by) for f, by in found.forecaster_scores.items()}
    assert found.forecaster == max(means, key=means.get)
    for target in targets:
        mask, best = found.schedules[target]
        starts = lean_starts(STEPS, target)
        assert mask in starts and sum(mask) <= budget_computes(target, STEPS)
        by_mask = [float(np.median(scorer.per_sample(m, "taylor:1"))) for m in starts]
        assert by_mask.index(max(by_mask)) == starts.index(mask)
        on_mask = np.array([scorer.per_sample(mask, f) for f in LEAN_FORECASTERS])
        chosen = LEAN_FORECASTERS.index(found.forecasters[target])
        assert chosen == choose_forecaster(on_mask)
        assert best == pytest.approx(on_mask[chosen].mean(), abs=1e-4)
        assert found.forecaster_scores[found.forecasters[target]][target] == pytest.approx(best)


def test_another_forecaster_replaces_the_first_only_for_a_gain_beyond_its_standard_error():
    first = np.array([40.0, 30.0, 35.0, 45.0])
    steady = first + np.array([1.0, 1.2, 0.8, 1.0])  # +1 dB on every sample: SE 0.08
    lucky = first + np.array([6.0, -2.0, -1.5, -1.0])  # +0.375 dB mean, all of it one sample's
    assert choose_forecaster(np.stack([first, lucky])) == 0
    assert choose_forecaster(np.stack([first, lucky, steady])) == 2
    bigger = first + np.array([9.0, 1.0, 1.0, 1.0])  # +3 dB mean, SE 2: eligible, the largest gain
    assert choose_forecaster(np.stack([first, steady, bigger])) == 2
    assert choose_forecaster(np.stack([first, first - 1.0])) == 0  # a loss never replaces it
    assert choose_forecaster(np.stack([first[:1], steady[:1]])) == 0  # one sample: no spread to judge by


def test_lean_fit_writes_searched_schedules_that_enable_runs(dit, tmp_path):
    out = tmp_path / "cache"
    config = FitConfig.lean(steps=STEPS, call_kwargs=_kwargs(), targets=[0.3, 0.5], search_samples=2,
                            bench_samples=2, batch_size=8)
    record = fit(dit, out, None, config, progress=False)
    assert set(record["stage_seconds"]) == {"schedules", "bench"}
    assert not (out / "policy").exists() and not (out / "predictors").exists()
    stored = json.loads((out / CONFIG_FILE).read_text())
    cost, planned = stored["cost"], stored["plan"]["stages"]
    assert set(cost) == {"check", "schedules", "bench"}
    assert 0 < cost["schedules"]["evaluations"] <= planned["schedules"]["evaluations"] == 2 * lean_evaluations(
        STEPS, [0.3, 0.5], 2)
    assert 0 < cost["bench"]["evaluations"] <= planned["bench"]["evaluations"]
    assert cost["check"]["evaluations"] == planned["check"]["evaluations"]

    cache = CacheCheckpoint(out)
    searched = cache.schedules()
    assert cache.searched_only and cache.ships_searched
    assert searched.predictor in LEAN_FORECASTERS and cache.predictor_spec() == searched.predictor
    for target, entry in searched.schedules.items():  # each target's own forecaster, the nearest one between
        assert entry["predictor"] in LEAN_FORECASTERS and cache.predictor_spec(float(target)) == entry["predictor"]
    assert cache.predictor_spec(0.35) == searched.schedules["0.3"]["predictor"]
    policy = cache.policy(0.5)
    assert isinstance(policy, SearchedSchedulePolicy)
    assert "".join("1" if on else "0" for on in policy.mask.tolist()) == searched.masks()[0.5]
    with pytest.raises(CheckpointError, match="no learned policy"):
        cache.policy(0.5, actor=True)
    readme = (out / "README.md").read_text()
    assert "ships the searched schedules" in readme and "lean recipe" in readme
    rows = json.loads((out / "bench" / "results.json").read_text())
    assert {r["method"] for r in rows} >= {"full", "searched-schedule", "fixed+taylor2", "fewer-steps"}
    assert all(r["paired"] is False for r in rows)

    # enable loads the searched mask and the target's forecaster: the computes are the mask's
    engine = cachepilot.enable(dit, checkpoint=out, speed=0.5)
    try:
        assert engine.predictor.spec() == make_predictor(searched.schedules["0.5"]["predictor"]).spec()
        SamplingDriver(dit, STEPS, _kwargs()).sample([{"class_labels": 1}], [0])
        stats = cachepilot.last_stats(dit)
        assert stats.compute_fraction == pytest.approx(searched.masks()[0.5].count("1") / STEPS)
    finally:
        cachepilot.disable(dit)


def test_recipe_is_checked_and_the_default_config_is_a_record():
    assert FitConfig().smoke is False and FitConfig().stages[0] == "collect"
    json.dumps(asdict(FitConfig()))  # the record every fit writes first
    assert FitConfig.lean().stages == ("schedules", "bench")
    with pytest.raises(InvalidInputError, match="recipe"):
        FitConfig(recipe="fast").check()
