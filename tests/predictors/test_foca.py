import pytest
import torch

from cachepilot import InvalidInputError
from cachepilot.predictors.foca import FoCa
from cachepilot.predictors.spec import make_predictor
from cachepilot.predictors.taylor import Taylor

from .trajectories import engine_outputs, fill_history, polynomial

STEPS = [[0, 1, 3, 6], [0, 2, 3, 7]]


def test_exact_on_a_linear_trajectory_with_uneven_gaps():
    fn = polynomial(1)
    history = fill_history(FoCa(), STEPS, fn)
    torch.testing.assert_close(FoCa().predict(history, 10), torch.stack([fn(10, r) for r in range(2)]),
                               rtol=1e-4, atol=1e-4)


def test_on_a_quadratic_the_heun_corrector_gives_back_half_the_gap_term():
    """On q(t) = c t^2 + ...: the quadratic extrapolation (Taylor 2) is exact, FoCa's trapezoid with the
    backward slope at the anchor falls short by c (s0 - s1)(t - s0) / 2."""
    fn = polynomial(2)
    history = fill_history(FoCa(), STEPS, fn)
    forecast = FoCa().predict(history, 10)
    for row, steps in enumerate(STEPS):
        c = (fn(2, row) - 2 * fn(1, row) + fn(0, row)) / 2  # leading coefficient per unit step
        s0, s1 = steps[-1], steps[-2]
        torch.testing.assert_close(forecast[row], fn(10, row) - c * (s0 - s1) * (10 - s0) / 2, rtol=1e-4, atol=1e-3)
    exact = Taylor(2).predict(history, 10)
    assert not torch.allclose(forecast, exact, atol=1e-2)


def test_short_history_and_horizon_damping():
    fn = polynomial(1)
    history = fill_history(FoCa(), [[5], [0, 2]], fn)
    forecast = FoCa().predict(history, 8)
    torch.testing.assert_close(forecast[0], fn(5, 0))  # one compute: reuse
    torch.testing.assert_close(forecast[1], fn(8, 1), rtol=1e-4, atol=1e-4)  # two: linear, exact here
    damped = FoCa(horizon=3).predict(history, 8)  # 6 steps past the compute: half of the 3-step forecast's change
    torch.testing.assert_close(damped[1], fn(2, 1) + 0.5 * (fn(5, 1) - fn(2, 1)), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(FoCa(horizon=3).predict(history, 4)[1], fn(4, 1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("spec", ["foca:-1", "foca:1.5", "foca:x", "foca:1:2"])
def test_bad_specs(spec):
    with pytest.raises(InvalidInputError):
        make_predictor(spec)


def test_specs_round_trip_and_engine_run():
    assert make_predictor("foca").spec() == "foca" and make_predictor("foca:3").spec() == "foca:3"
    ours, reuse = engine_outputs(make_predictor("foca"))
    assert torch.isfinite(ours).all() and not torch.allclose(ours, reuse)
