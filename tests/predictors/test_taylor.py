import pytest
import torch

from cachepilot import InvalidInputError
from cachepilot.predictors.spec import make_predictor
from cachepilot.predictors.taylor import Reuse, Taylor


def _history(predictor, steps_per_row, fn):
    """Fill a history: row r computed at steps_per_row[r] with residual fn(step, row)."""
    history = predictor.new_history()
    rows = len(steps_per_row)
    history.allocate(torch.zeros(rows, 3, 4))
    for k in range(max(len(s) for s in steps_per_row)):
        for r, steps in enumerate(steps_per_row):
            if k < len(steps):
                history.update(torch.tensor([r]), steps[k], fn(steps[k], r)[None])
    return history


def _poly(coeffs):
    base = torch.randn(len(coeffs), 3, 4, generator=torch.Generator().manual_seed(0))
    return lambda s, r: sum(base[k] * (s ** k) * (r + 1) for k in range(len(coeffs)))


@pytest.mark.parametrize("order", [1, 2])
def test_exact_on_polynomials_of_its_order_with_uneven_gaps(order):
    fn = _poly(range(order + 1))
    steps = [[0, 1, 3, 6], [0, 2, 3, 7]]  # computes at uneven steps, per row
    predictor = Taylor(order)
    history = _history(predictor, steps, fn)
    forecast = predictor.predict(history, 9)
    expected = torch.stack([fn(9, r) for r in range(2)])
    torch.testing.assert_close(forecast, expected, rtol=1e-4, atol=1e-3)
    if order == 2:  # order 1 is not exact on a quadratic
        assert not torch.allclose(Taylor(1).predict(history, 9), expected, atol=1e-2)


def test_falls_back_to_lower_order_with_short_history():
    fn = _poly([0, 1])
    predictor = Taylor(2)
    history = _history(predictor, [[0], [0, 2]], fn)  # row 0: one compute (reuse), row 1: two (linear)
    forecast = predictor.predict(history, 3)
    torch.testing.assert_close(forecast[0], fn(0, 0))
    torch.testing.assert_close(forecast[1], fn(3, 1), rtol=1e-4, atol=1e-4)


def test_reuse_returns_last_residual_and_rows_select():
    fn = _poly([0, 1])
    history = _history(Reuse(), [[0, 1, 2], [0, 4]], fn)
    torch.testing.assert_close(Reuse().predict(history, 5), torch.stack([fn(2, 0), fn(4, 1)]))
    torch.testing.assert_close(Reuse().predict(history, 5, torch.tensor([1])), fn(4, 1)[None])


@pytest.mark.parametrize("spec", ["taylor:3", "taylor:-1", "taylor:x", "taylor:0.5", "taylor:nan", "magic", "reuse:2"])
def test_bad_predictor_specs(spec):
    with pytest.raises(InvalidInputError):
        make_predictor(spec)


def test_specs_round_trip():
    for spec in ["reuse", "taylor:1", "taylor:2", "taylor:1.5"]:
        assert make_predictor(spec).spec() == spec
    assert make_predictor("taylor:2.0").spec() == "taylor:2"


def test_order_one_and_a_half_is_the_mean_of_orders_one_and_two():
    fn = _poly([1, 2, 3])
    predictor = Taylor(1.5)
    assert predictor.history_size == 3
    history = _history(predictor, [[0, 1, 3, 6], [0, 2], [4]], fn)  # full, two computes, one
    both = (Taylor(1).predict(history, 9) + Taylor(2).predict(history, 9)) / 2
    torch.testing.assert_close(predictor.predict(history, 9), both)
    torch.testing.assert_close(predictor.predict(history, 9, torch.tensor([0, 2])), both[[0, 2]])
