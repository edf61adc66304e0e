import itertools
import json
import math

import numpy as np
import pytest

from experiments.budget_pool import allocate, check_args, pooled_headroom


def _brute_force(values, costs, total):
    best, best_picks = -math.inf, None
    for picks in itertools.product(range(len(costs)), repeat=len(values)):
        if sum(costs[j] for j in picks) <= total:
            value = sum(values[i][j] for i, j in enumerate(picks))
            if value > best:
                best, best_picks = value, picks
    return best


@pytest.mark.parametrize("seed", range(5))
def test_allocate_is_the_exact_best_split(seed):
    rng = np.random.default_rng(seed)
    values, costs = rng.normal(size=(4, 3)) * 10, np.array([1, 3, 4])
    total = 3 * 4
    picks = allocate(values, costs, total)
    assert costs[picks].sum() <= total
    assert values[np.arange(4), picks].sum() == pytest.approx(_brute_force(values.tolist(), costs.tolist(), total))


def test_allocate_keeps_the_uniform_split_for_identical_concave_curves():
    curve = np.array([30.0, 40.0, 45.0, 47.0])  # diminishing returns: moving a compute between samples loses
    picks = allocate(np.tile(curve, (6, 1)), np.array([2, 3, 4, 5]), 6 * 3)
    assert picks.tolist() == [1] * 6


def test_allocate_moves_computes_to_the_sample_that_gains_from_them():
    values = np.array([[40.0, 41.0, 42.0], [20.0, 35.0, 50.0]])  # the second sample gains 15 dB per step up
    picks = allocate(values, np.array([1, 2, 3]), 4)
    assert picks.tolist() == [0, 2]
    with pytest.raises(ValueError, match="cheapest"):
        allocate(values, np.array([1, 2, 3]), 1)


def test_pooled_headroom_separates_what_the_condition_carries_from_the_noise():
    costs = np.array([2, 3, 4])
    steep, flat = [20.0, 30.0, 40.0], [40.0, 41.0, 42.0]
    # two conditions x 2 seeds: condition 0 is flat on every seed, condition 1 steep on every seed
    fit = np.array([flat, flat, steep, steep])
    figures = pooled_headroom(fit, fit.copy(), costs, column=1, seeds_per_condition=2)
    assert figures["computes_per_sample"] == 3
    assert figures["oracle_split_gain_db"] == pytest.approx(figures["condition_split_gain_db_fresh_seeds"])
    assert figures["oracle_split_gain_db"] == pytest.approx((-1 - 1 + 10 + 10) / 4)
    assert figures["condition_over_mixture_db_fresh_seeds"] >= 0
    # the same curves but which seed is steep is the noise's: fresh seeds swap them, the condition's split is level
    noisy_fit = np.array([flat, steep, flat, steep])
    noisy_fresh = np.array([steep, flat, steep, flat])
    figures = pooled_headroom(noisy_fit, noisy_fresh, costs, column=1, seeds_per_condition=2)
    assert figures["oracle_split_gain_db"] > 4
    assert figures["condition_split_gain_db_fresh_seeds"] == pytest.approx(0.0)
    assert figures["psnr_correlation_across_seeds"] == pytest.approx(-1.0)


def test_a_blind_mixture_takes_what_every_sample_shares():
    """One curve for every sample, better mixed than at the target (a strong mask a step either side): the blind
    mixture takes the gain, and the condition split adds nothing over it."""
    curve = [30.0, 35.0, 50.0, 52.0]
    fit = np.tile(curve, (4, 1))
    figures = pooled_headroom(fit, fit.copy(), np.array([2, 3, 4, 5]), column=1, seeds_per_condition=2)
    assert figures["mixture_split_gain_db_fresh_seeds"] == pytest.approx(5.0)  # half at 30 dB, half at 50
    assert figures["mixture_split_computes"] == [2, 4]
    assert figures["condition_split_gain_db_fresh_seeds"] == pytest.approx(5.0)
    assert figures["condition_over_mixture_db_fresh_seeds"] == pytest.approx(0.0)


@pytest.mark.parametrize("grid, targets, conditions, k, match", [
    ([0.2, 0.4], [0.3], 8, 1, "--targets"), ([0.0, 0.4], [0.4], 8, 1, "--grid"),
    ([0.2, 0.4], [0.4], 1, 1, "--conditions"), ([0.2, 0.4], [0.4], 4, 0, "--seeds-per-condition")])
def test_check_args_refuses_before_any_work(grid, targets, conditions, k, match):
    from cachepilot.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match=match):
        check_args(grid, targets, conditions, k)


def test_budget_pool_on_a_text_to_image_pipeline(tmp_path):
    """The command on a user's pipeline: --pipeline, --prompts, --call-kwargs (true CFG), --cache (its searched
    schedules)."""
    from experiments.budget_pool import main

    from .test_headroom import tiny_flux_user_setup

    path, kwargs, prompts, cache = tiny_flux_user_setup(tmp_path)
    out = tmp_path / "pool.json"
    figures = main(["--pipeline", str(path), "--prompts", str(prompts), "--call-kwargs", json.dumps(kwargs),
                    "--cache", str(cache), "--conditions", "2", "--seeds-per-condition", "2",
                    "--grid", "0.25", "0.5", "0.75", "--targets", "0.5", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(figures))
    assert figures["steps"] == 8 and figures["grid"] == [0.25, 0.5, 0.75] and figures["distinct_conditions"] == 2
    assert figures["computes"] == sorted(figures["computes"]) and figures["computes"][1] == 5  # the searched 0.5 mask
    at = figures["0.5"]
    assert at["computes_per_sample"] == 5 and at["oracle_split_gain_db"] >= -1e-9  # the uniform split is a choice
    assert at["condition_split_gain_db_fitting_seeds"] >= -1e-9
    for key in ("condition_split_gain_db_fresh_seeds", "uniform_psnr_fresh_seeds", "psnr_correlation_across_seeds",
                "mixture_split_gain_db_fresh_seeds", "condition_over_mixture_db_fresh_seeds"):
        assert math.isfinite(at[key]), key
    assert len(figures["curves"]["fitting"]) == len(figures["curves"]["fresh"]) == 4  # 2 conditions x 2 seeds
    again = main(["--from", str(out), "--targets", "0.25", "0.5"])  # the stored curves, other budgets, no sampling
    assert again["0.5"].pop("mixture_split_computes") == at.pop("mixture_split_computes")
    assert again["0.5"] == pytest.approx(at) and again["0.25"]["computes_per_sample"] == 2
    assert again["curves"] == figures["curves"]


def test_from_refuses_a_file_without_curves(tmp_path):
    from experiments.budget_pool import main
    from cachepilot.errors import InvalidInputError

    stale = tmp_path / "old.json"
    stale.write_text(json.dumps({"grid": [0.2, 0.4], "computes": [2, 4]}))
    with pytest.raises(InvalidInputError, match="curves"):
        main(["--from", str(stale), "--targets", "0.2"])
