import pytest
import torch

from cachepilot import InvalidInputError
from cachepilot.core.history import ResidualHistory
from cachepilot.core.predictor import ForecastContext
from cachepilot.predictors.taylor import Reuse, Taylor
from cachepilot.train.combination import fit_combination, fit_on_pipeline, schedule_mask, uniform_schedule

MASK = "1110101010"  # computes 0, 1, 2, 4, 6, 8; forecasts 3, 5, 7, 9 with three computes in the history
SHAPE = (3, 5, 4)  # rows, tokens, channels


def _exact_trajectory(weights: dict[int, tuple[float, float]], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random residuals at the computed steps; at each forecast step t exactly a_t * reuse + b_t * Taylor 1 of
    the history the schedule leaves, so the fit must recover (a_t, b_t, 0) and forecast without error."""
    g = torch.Generator().manual_seed(seed)
    history = ResidualHistory(3)
    history.allocate(torch.zeros(SHAPE))
    rows = torch.arange(SHAPE[0])
    residuals = []
    for step, compute in enumerate(MASK):
        if compute == "1":
            residual = torch.randn(SHAPE, generator=g)
            history.update(rows, step, residual)
        else:
            a, b = weights[step]
            residual = a * Reuse().predict(history, step) + b * Taylor(1).predict(history, step)
        residuals.append(residual)
    return torch.arange(len(MASK)), torch.stack(residuals)


@pytest.mark.parametrize("affine", [True, False])
def test_fit_recovers_exact_weights_and_forecasts_exactly(affine):
    # weights summing to 1 (what the affine fit allows), or, free, any
    true = {3: (0.3, 0.7), 5: (-0.2, 1.2), 7: (1.0, 0.0), 9: (0.75, 0.25) if affine else (0.5, 0.25)}
    trajectories = {len(MASK): [_exact_trajectory(true, 0), _exact_trajectory(true, 1)]}
    combo, report = fit_combination(trajectories, [f"schedule:{MASK}"], ["reuse", "taylor:1", "taylor:2"], ridge=0,
                                    affine=affine)
    weights = combo.tables[(len(MASK), f"schedule:{MASK}")]
    for step, (a, b) in true.items():
        torch.testing.assert_close(weights[step], torch.tensor([a, b, 0.0]), atol=1e-4, rtol=0)
    entry = report[f"{len(MASK)}|schedule:{MASK}"]
    assert entry["relative_error"] < 1e-8 and min(entry["base_relative_error"].values()) > 1e-3
    # run as the engine runs it: the forecasts equal the recorded residuals
    steps, residuals = _exact_trajectory(true, 2)
    history = combo.new_history()
    history.allocate(residuals[0])
    context = ForecastContext(len(MASK), residuals[0], residuals[0], f"schedule:{MASK}")
    for step, compute in enumerate(MASK):
        if compute == "1":
            history.update(torch.arange(SHAPE[0]), step, residuals[step])
        else:
            torch.testing.assert_close(combo.predict(history, step, None, context), residuals[step],
                                       atol=1e-4, rtol=1e-4)


def test_affine_fit_sums_to_one_where_the_free_one_shrinks():
    true = {3: (0.3, 0.5), 5: (-0.2, 0.9), 7: (1.0, 0.0), 9: (0.5, 0.25)}  # the truth shrinks the forecast
    trajectories = {len(MASK): [_exact_trajectory(true, 0)]}
    affine, _ = fit_combination(trajectories, [f"schedule:{MASK}"], ["reuse", "taylor:1"], ridge=0)
    free, _ = fit_combination(trajectories, [f"schedule:{MASK}"], ["reuse", "taylor:1"], ridge=0, affine=False)
    key = (len(MASK), f"schedule:{MASK}")
    torch.testing.assert_close(affine.tables[key].sum(1), torch.ones(len(MASK)))
    torch.testing.assert_close(free.tables[key][9], torch.tensor([0.5, 0.25]), atol=1e-4, rtol=0)


def test_final_objective_recovers_exact_weights_and_weighs_accumulated_error():
    true = {3: (0.3, 0.7), 5: (-0.2, 1.2), 7: (1.0, 0.0), 9: (0.75, 0.25)}
    response = torch.linspace(1.0, 0.1, len(MASK), dtype=torch.float64)
    combo, report = fit_combination({len(MASK): [_exact_trajectory(true, 0)]}, [f"schedule:{MASK}"],
                                    ["reuse", "taylor:1", "taylor:2"], ridge=0, responses={len(MASK): response})
    weights = combo.tables[(len(MASK), f"schedule:{MASK}")]
    for step, (a, b) in true.items():
        torch.testing.assert_close(weights[step], torch.tensor([a, b, 0.0]), atol=1e-4, rtol=0)
    entry = report[f"{len(MASK)}|schedule:{MASK}"]
    assert entry["final_relative_error"] < 1e-8 and min(entry["base_final_relative_error"].values()) > 1e-3


def test_scheduler_response_of_the_digits_ddim(pipe):
    from cachepilot.driver import SamplingDriver
    from cachepilot.train.combination import scheduler_response

    SamplingDriver(pipe, 6, {}, batch_size=1).sample([{"class_labels": 0}], [0])
    response = scheduler_response(pipe, 6)
    assert response.shape == (6,) and torch.isfinite(response).all() and response.abs().min() > 0
    assert scheduler_response(pipe, 7) is None  # the scheduler holds another count's timesteps


def test_ridge_pulls_collinear_bases_to_the_best_single_one():
    true = {3: (0.3, 0.7), 5: (-0.2, 1.2), 7: (1.0, 0.0), 9: (0.75, 0.25)}
    # Taylor 1.5 is the mean of Taylor 1 and 2: the least-squares solution is not unique, the ridge picks one
    combo, report = fit_combination({len(MASK): [_exact_trajectory(true, 0)]}, [f"schedule:{MASK}"],
                                    ["reuse", "taylor:1", "taylor:2", "taylor:1.5"], ridge=1e-6)
    weights = combo.tables[(len(MASK), f"schedule:{MASK}")]
    assert torch.isfinite(weights).all()
    assert report[f"{len(MASK)}|schedule:{MASK}"]["relative_error"] < 1e-6
    assert weights[0].tolist() in ([1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1])  # computed: the prior


def test_schedules():
    assert schedule_mask("fixed:3", 7) == ("fixed:3", [True, False, False, True, False, False, True])
    spec, mask = schedule_mask("uniform:0.4", 10)
    assert spec == uniform_schedule(0.4, 10) and sum(mask) == 4 and mask[0] and mask[-1]
    assert schedule_mask(spec, 10) == (spec, mask)
    with pytest.raises(InvalidInputError, match="per sample"):
        schedule_mask("threshold:0.1", 10)
    with pytest.raises(InvalidInputError, match="not 12"):
        schedule_mask("schedule:1010", 12)
    with pytest.raises(InvalidInputError, match="first step"):
        fit_combination({4: [(torch.arange(4), torch.zeros(4, 1, 2, 2))]}, ["schedule:0101"], ["reuse"])


def test_fit_on_the_digits_pipeline(pipe):
    combo, record = fit_on_pipeline(pipe, [6], ["fixed:2", "uniform:0.5"], [{"class_labels": c} for c in range(10)],
                                    samples=2, bases=["reuse", "taylor:1"])
    assert record["stack_evaluations"] == 2 * 6  # no guidance given: one row per sample and step
    assert set(combo.tables) == {(6, "fixed:2"), (6, uniform_schedule(0.5, 6))}
    entry = record["fit"]["6|fixed:2"]
    assert entry["relative_error"] <= min(entry["base_relative_error"].values()) + 1e-6
    combo.check(6, "fixed:2")


def test_fit_along_the_cached_trajectory(pipe):
    conditions = [{"class_labels": c} for c in range(10)]
    full, _ = fit_on_pipeline(pipe, [6], ["fixed:2"], conditions, samples=2, bases=["reuse", "taylor:1"])
    cached, record = fit_on_pipeline(pipe, [6], ["fixed:2"], conditions, samples=2, bases=["reuse", "taylor:1"],
                                     trajectory="cached", rounds=2)
    # the full recording (2 rows x 6 steps), then per round the stack at every step and at the 3 computes
    assert record["stack_evaluations"] == 2 * 6 + 2 * 2 * (6 + 3) and record["rounds"] == 2
    entry = record["fit"]["6|fixed:2"]["cached"]
    assert entry["relative_error"] <= min(entry["base_relative_error"].values()) + 1e-6
    # the cached states differ from the full-compute ones: so do the weights
    assert not torch.allclose(full.tables[(6, "fixed:2")], cached.tables[(6, "fixed:2")])
    with pytest.raises(InvalidInputError, match="trajectory"):
        fit_on_pipeline(pipe, [6], ["fixed:2"], conditions, trajectory="teacher")


def test_cli_fits_and_writes_a_loadable_forecaster(tmp_path, capsys):
    from cachepilot.cli import main
    from cachepilot.predictors.spec import make_predictor

    out = tmp_path / "combo"
    assert main(["fit-combination", "--steps", "6", "--policy", "fixed:2", "--classes", "1", "2", "--samples", "2",
                 "--bases", "reuse", "taylor:1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "6 steps, fixed:2: relative error" in printed and "12 stack evaluations" in printed
    combo = make_predictor(f"combo:{out}")
    assert combo.bases == ["reuse", "taylor:1"] and set(combo.tables) == {(6, "fixed:2")}


@pytest.mark.parametrize("argv, message", [
    (["--policy", "threshold:0.1"], "decides per sample"),
    (["--steps", "10", "--schedule", "1010"], "has 4 steps, not 10"),
    (["--bases", "nope"], "unknown predictor spec"),
    (["--steps", "1"], "--steps must be >= 2"),
    (["--ridge", "-1"], "--ridge and --beta must be >= 0"),
])
def test_cli_bad_input_is_one_line_before_loading(tmp_path, capsys, argv, message):
    from cachepilot.cli import main

    assert main(["fit-combination", "--pipeline", str(tmp_path / "no-such-pipeline"), "--out", str(tmp_path / "o"),
                 *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
