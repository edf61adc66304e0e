"""`cachepilot fit --budget`: sizes scaled until the plan fits, refused below the minimum, malformed budgets and a
resumed fit with another budget refused in one line."""

import json

import pytest

from cachepilot import InvalidInputError
from cachepilot.train.budget import parse_budget, scaled, size_to_budget
from cachepilot.train.fit import CONFIG_FILE, Fit, FitConfig
from cachepilot.train.plan import Probe, plan_fit

PROBE = Probe(evaluations=4.0, seconds=0.04)  # 0.01 s per evaluation, one copy per sample-step


def _cost(config) -> float:
    return plan_fit(config, probe=PROBE, num_conditions=10).evaluations


@pytest.mark.parametrize("text, parsed", [("200000", ("evaluations", 200_000.0)), ("2e5", ("evaluations", 2e5)),
                                          ("1h", ("seconds", 3600.0)), ("90m", ("seconds", 5400.0)),
                                          ("30s", ("seconds", 30.0)), ("1h30m", ("seconds", 5400.0))])
def test_budgets_parse(text, parsed):
    assert parse_budget(text) == parsed


@pytest.mark.parametrize("text", ["1x", "h", "90 minutes", "1h 30m", "-5", "0", "0s", "", "nan"])
def test_a_malformed_budget_is_one_line(text):
    with pytest.raises(InvalidInputError) as err:
        FitConfig(budget=text).check()
    assert "budget" in str(err.value) and "\n" not in str(err.value)


def test_the_sizes_scale_down_until_the_plan_fits():
    config = FitConfig(steps=20, gate_steps=[20])
    whole = _cost(config)
    sized = size_to_budget(config, whole / 3, _cost)
    assert _cost(sized) <= whole / 3 < _cost(scaled(config, 1.0))
    assert sized.collect_samples < config.collect_samples and sized.policy_timesteps < config.policy_timesteps
    assert (sized.steps, sized.targets, sized.collect_policies) == (config.steps, config.targets,
                                                                    config.collect_policies)
    assert size_to_budget(config, whole * 2, _cost) is config  # a budget the fit fits whole changes nothing


def test_a_budget_below_the_minimum_is_refused_with_the_minimum():
    config = FitConfig(steps=20, gate_steps=[20])
    least = _cost(scaled(config, 0.0))
    with pytest.raises(InvalidInputError, match=f"below this fit's minimum of {least:,.0f}.*collect_samples 4"):
        size_to_budget(config, least - 1, _cost)
    assert _cost(size_to_budget(config, least, _cost)) <= least


def test_a_lean_fit_scales_its_search_and_bench_and_names_only_them():
    config = FitConfig.lean(steps=50)
    cost = lambda c: plan_fit(c, seconds_per_evaluation=0.28, copies=2, num_conditions=512).evaluations  # noqa: E731
    sized = size_to_budget(config, 8000, cost)
    assert cost(sized) <= 8000 and sized.search_samples < config.search_samples and sized.recipe == "lean"
    least = cost(scaled(config, 0.0))
    with pytest.raises(InvalidInputError, match=r"minimum of .*\(its sizes at their least: search_samples 2, "
                                                r"bench_samples 2\)"):
        size_to_budget(config, least - 1, cost)


def test_a_duration_budget_and_a_resumed_fit_with_another_budget(pipe, tmp_path):
    out = tmp_path / "cache"
    fit = Fit(pipe, out, None, FitConfig.for_smoke(budget="1000h"), progress=False)
    stored = json.loads((out / CONFIG_FILE).read_text())
    assert stored["budget"] == "1000h" and stored["plan"]["seconds_per_evaluation"] > 0
    assert fit.plan.seconds() <= 3600 * 1000
    Fit(pipe, out, None, FitConfig.for_smoke(budget="1000h"), progress=False)  # the same budget resumes
    with pytest.raises(InvalidInputError, match="another budget"):
        Fit(pipe, out, None, FitConfig.for_smoke(budget="2000h"), progress=False)
    with pytest.raises(InvalidInputError, match="budget 0.01s = .* below this fit's minimum"):
        Fit(pipe, tmp_path / "small", None, FitConfig.for_smoke(budget="0.01s"), progress=False)
