import math

import numpy as np
import pytest
import torch

from cachepilot import InvalidInputError
from cachepilot.predictors.hermite import Hermite, hermite_values
from cachepilot.predictors.spec import make_predictor
from cachepilot.predictors.taylor import Taylor

from .trajectories import engine_outputs, fill_history, polynomial

STEPS = [[0, 1, 3, 6], [0, 2, 3, 7]]  # uneven computes, per row


def test_hermite_values_match_numpy():
    x = torch.linspace(-2, 2, 7, dtype=torch.float64)
    for n, values in enumerate(hermite_values(x, 3)):
        np.testing.assert_allclose(values.numpy(), np.polynomial.hermite.hermval(x.numpy(), [0] * n + [1]))


@pytest.mark.parametrize("order", [1, 2, 3])
def test_expands_the_exact_derivatives_in_scaled_hermite_polynomials(order):
    """On a polynomial of its order the derivative estimates are exact: the forecast is HiCache's formula
    F0 + sum_k D_k / k! sigma^k H_k(sigma u), checked against numpy's Hermite series."""
    fn = polynomial(order)
    scale, target = 0.6, 9
    predictor = Hermite(order, scale)
    forecast = predictor.predict(fill_history(predictor, STEPS, fn), target)
    for row, steps in enumerate(STEPS):
        s0, u = steps[-1], target - steps[-1]
        # derivatives at s0 of fn(., row) by numpy's polynomial fit (exact: order+1 points on a degree-order polynomial)
        grid = np.arange(order + 1, dtype=np.float64) + s0
        values = np.stack([fn(int(g), row).double().numpy() for g in grid])  # (order+1, 16, 4)
        fit = np.polynomial.polynomial.polyfit(grid - s0, values.reshape(order + 1, -1), order)  # monomials in u
        series = [np.zeros(fit.shape[1])] + [fit[k] * scale ** k for k in range(1, order + 1)]
        expected = fit[0] + np.polynomial.hermite.hermval(scale * u, np.stack(series))
        np.testing.assert_allclose(forecast[row].double().numpy().ravel(), expected, rtol=1e-3, atol=1e-3)


def test_scale_one_over_root_two_is_taylor_on_first_order():
    fn = polynomial(1)
    predictor = Hermite(1, 1 / math.sqrt(2))
    history = fill_history(predictor, STEPS, fn)
    torch.testing.assert_close(predictor.predict(history, 9), Taylor(1).predict(history, 9), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(predictor.predict(history, 9), torch.stack([fn(9, r) for r in range(2)]),
                               rtol=1e-4, atol=1e-4)


def test_contraction_damps_and_short_history_falls_back():
    fn = polynomial(1)
    predictor = Hermite(2, 0.5)
    history = fill_history(predictor, [[4], [0, 2]], fn)  # one compute: reuse; two: first order only
    forecast = predictor.predict(history, 6)
    torch.testing.assert_close(forecast[0], fn(4, 0))
    slope = (fn(2, 1) - fn(0, 1)) / 2
    torch.testing.assert_close(forecast[1], fn(2, 1) + 2 * 0.5 ** 2 * slope * 4, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(predictor.predict(history, 6, torch.tensor([1])), forecast[1:])


@pytest.mark.parametrize("spec", ["hermite:0", "hermite:4", "hermite:2:0", "hermite:2:1.5", "hermite:x",
                                  "hermite:1.5", "hermite:2:0.5:1"])
def test_bad_specs(spec):
    with pytest.raises(InvalidInputError):
        make_predictor(spec)


def test_specs_round_trip_and_engine_run():
    assert make_predictor("hermite").spec() == "hermite:2"
    assert make_predictor("hermite:3:0.7").spec() == "hermite:3:0.7"
    ours, reuse = engine_outputs(make_predictor("hermite:2"))
    assert torch.isfinite(ours).all() and not torch.allclose(ours, reuse)
    torch.testing.assert_close(ours[:3], reuse[:3])  # steps 0-2 agree: nothing to extrapolate from yet at step 1
