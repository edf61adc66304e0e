import pytest
import torch

from cachepilot import InvalidInputError
from cachepilot.core.predictor import ForecastContext
from cachepilot.predictors.chebyshev import Chebyshev, chebyshev_basis
from cachepilot.predictors.spec import make_predictor
from cachepilot.predictors.taylor import Taylor

from .trajectories import engine_outputs, fill_history, polynomial

STEPS = [[0, 1, 3, 6, 8], [0, 2, 3, 7, 9]]


def test_basis_is_cos_n_arccos():
    x = torch.linspace(-1, 1, 9, dtype=torch.float64)
    expected = torch.stack([torch.cos(n * torch.arccos(x)) for n in range(5)], -1)
    torch.testing.assert_close(chebyshev_basis(x, 4), expected)


@pytest.mark.parametrize("degree", [1, 2, 3])
def test_exact_on_a_polynomial_of_its_degree_at_any_skip(degree):
    fn = polynomial(degree)
    predictor = Chebyshev(degree, window=degree + 2)
    history = fill_history(predictor, STEPS, fn)
    for target in (10, 13, 19):  # the fit is global: no error growth with the skip length
        context = ForecastContext(20, torch.zeros(2, 16, 4), torch.zeros(2, 16, 4))
        expected = torch.stack([fn(target, r) for r in range(2)])
        torch.testing.assert_close(predictor.predict(history, target, None, context), expected, rtol=1e-3, atol=1e-3)


def test_least_squares_differs_from_interpolation_off_the_polynomial():
    """On a cubic, degree 2 over 5 computes is the least-squares quadratic: not Taylor 2's interpolant of the
    newest three; its weights reproduce constants and lines exactly (they sum to 1)."""
    fn = polynomial(3)
    predictor = Chebyshev(2, window=5)
    history = fill_history(predictor, STEPS, fn)
    assert not torch.allclose(predictor.predict(history, 12), Taylor(2).predict(history, 12), atol=1e-2)
    weights = predictor.weights(history.steps, history.count, 12, 20)
    torch.testing.assert_close(weights.sum(0), torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close((weights * history.steps.double()).sum(0), torch.full((2,), 12.0, dtype=torch.float64))


def test_short_history_fits_the_degree_it_can():
    fn = polynomial(1)
    predictor = Chebyshev(3)
    history = fill_history(predictor, [[4], [0, 2]], fn)
    forecast = predictor.predict(history, 6)
    torch.testing.assert_close(forecast[0], fn(4, 0))
    torch.testing.assert_close(forecast[1], fn(6, 1), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(predictor.predict(history, 6, torch.tensor([1])), forecast[1:])


@pytest.mark.parametrize("spec", ["chebyshev:0", "chebyshev:5", "chebyshev:2:2", "chebyshev:2.5", "chebyshev:2:x",
                                  "chebyshev:2:13"])
def test_bad_specs(spec):
    with pytest.raises(InvalidInputError):
        make_predictor(spec)


def test_specs_round_trip_and_engine_run():
    assert make_predictor("chebyshev").spec() == "chebyshev:2"
    assert make_predictor("chebyshev:2:6").spec() == "chebyshev:2:6"
    ours, reuse = engine_outputs(make_predictor("chebyshev:1:3"))
    assert torch.isfinite(ours).all() and not torch.allclose(ours, reuse)
