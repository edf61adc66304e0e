import pytest
import torch

from cachepilot import InvalidInputError
from cachepilot.predictors.dmd import DMD
from cachepilot.predictors.spec import make_predictor
from cachepilot.predictors.taylor import Taylor

from .trajectories import SHAPE, engine_outputs, fill_history, polynomial


def _modes(rates, seed=0):
    """fn(step, row) = sum_i u_i * rate_i ** (step / 2): geometric sequences over computes 2 steps apart."""
    g = torch.Generator().manual_seed(seed)
    amplitudes = [torch.randn(*SHAPE, generator=g, dtype=torch.float64) for _ in rates]
    return lambda s, r: sum(a * (rate ** (s / 2)) * (r + 1) for a, rate in zip(amplitudes, rates)).float()


STEPS = [[0, 2, 4, 6], [2, 4, 6, 8]]  # evenly spaced, per row


@pytest.mark.parametrize("rank,rates", [(1, [0.7]), (1, [1.3]), (2, [0.9, 0.5]), (2, [1.1, -0.6])])
def test_exact_on_a_sum_of_exponentials_of_its_rank(rank, rates):
    fn = _modes(rates)
    predictor = DMD(rank)
    history = fill_history(predictor, STEPS, fn)
    for target in (9, 10, 12):  # integer and fractional horizons (in units of the compute spacing)
        if rates[-1] < 0 and target % 2:
            continue  # a negative rate has no real value between computes
        expected = torch.stack([fn(target, r) for r in range(2)])
        torch.testing.assert_close(predictor.predict(history, target), expected, rtol=1e-3, atol=1e-3)
    assert not torch.allclose(Taylor(1).predict(history, 12), torch.stack([fn(12, r) for r in range(2)]), atol=1e-2)


def test_rank_two_is_exact_on_a_linear_trajectory_the_double_root():
    fn = polynomial(1)
    history = fill_history(DMD(2), STEPS, fn)
    torch.testing.assert_close(DMD(2).predict(history, 11), torch.stack([fn(11, r) for r in range(2)]),
                               rtol=1e-3, atol=1e-3)


def test_uneven_or_short_windows_fall_back_to_taylor_one():
    fn = _modes([0.8])
    history = fill_history(DMD(1), [[0, 1, 3], [4, 6], [2, 4, 6]], fn)  # uneven, short, fine
    forecast = DMD(1).predict(history, 7)
    taylor = Taylor(1).predict(history, 7)
    torch.testing.assert_close(forecast[:2], taylor[:2])
    torch.testing.assert_close(forecast[2], fn(7, 2), rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(DMD(1).predict(history, 7, torch.tensor([2, 0])), forecast[[2, 0]])


@pytest.mark.parametrize("spec", ["dmd:0", "dmd:3", "dmd:1.5", "dmd:x", "dmd:1:2"])
def test_bad_specs(spec):
    with pytest.raises(InvalidInputError):
        make_predictor(spec)


def test_specs_round_trip_and_engine_run():
    assert make_predictor("dmd").spec() == "dmd:2" and make_predictor("dmd:1").spec() == "dmd:1"
    ours, reuse = engine_outputs(make_predictor("dmd:2"))
    assert torch.isfinite(ours).all() and not torch.allclose(ours, reuse)
