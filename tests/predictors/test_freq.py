import pytest
import torch

from cachepilot import InvalidInputError
from cachepilot.predictors.freq import FrequencySplit, lowpass
from cachepilot.predictors.spec import make_predictor
from cachepilot.predictors.taylor import Taylor

from .trajectories import engine_outputs, fill_history

G = torch.Generator().manual_seed(0)
ROWS, COLS = torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij")
FLAT = torch.ones(16, 1)                                          # the zero frequency: low band
CHECKER = ((-1.0) ** (ROWS + COLS)).reshape(16, 1)                 # Nyquist on both axes: high band
LOW_C, HIGH_A, HIGH_B, LOW_D = (torch.randn(1, 4, generator=G) for _ in range(4))


def _split(low_slope: float):
    """fn(step, row): a low band constant in the step (plus low_slope x a drift), a high band linear in it."""
    return lambda s, r: (r + 1) * (FLAT * (LOW_C + low_slope * s * LOW_D) + CHECKER * (HIGH_A + s * HIGH_B))


def test_bands_of_the_test_signal():
    torch.testing.assert_close(lowpass((FLAT * LOW_C + CHECKER * HIGH_A)[None], 0.5, {})[0], FLAT * LOW_C)


def test_exact_when_the_low_band_is_constant_and_the_high_band_linear():
    fn = _split(0.0)
    predictor = FrequencySplit(0.5, order=1)
    history = fill_history(predictor, [[0, 2], [1, 4]], fn)
    torch.testing.assert_close(predictor.predict(history, 7), torch.stack([fn(7, r) for r in range(2)]),
                               rtol=1e-4, atol=1e-4)


def test_a_drifting_low_band_is_held_at_its_last_compute():
    """Closed form: the error is the low band's drift since the last compute; Taylor 1 has none here."""
    fn = _split(0.3)
    predictor = FrequencySplit(0.5, order=1)
    history = fill_history(predictor, [[0, 2], [1, 4]], fn)
    forecast = predictor.predict(history, 7)
    for row, s0 in ((0, 2), (1, 4)):
        drift = (row + 1) * FLAT * 0.3 * (7 - s0) * LOW_D
        torch.testing.assert_close(forecast[row], fn(7, row) - drift, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(Taylor(1).predict(history, 7), torch.stack([fn(7, r) for r in range(2)]),
                               rtol=1e-4, atol=1e-4)


def test_image_layout_and_token_line():
    x = torch.randn(2, 3, 4, 6, generator=G)
    low = lowpass(x, 1e-3, {})  # only the zero frequency: the per-channel spatial mean
    torch.testing.assert_close(low, x.mean((2, 3), keepdim=True).expand_as(x), rtol=1e-5, atol=1e-5)
    line = torch.randn(2, 10, 3, generator=G)  # 10 tokens: not a square grid, a 1-D transform
    torch.testing.assert_close(lowpass(line, 1e-3, {}), line.mean(1, keepdim=True).expand_as(line),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spec", ["freq:0", "freq:1.5", "freq:x", "freq:0.5:3", "freq:0.5:1:1"])
def test_bad_specs(spec):
    with pytest.raises(InvalidInputError):
        make_predictor(spec)


def test_specs_round_trip_and_engine_run():
    assert make_predictor("freq:0.25").spec() == "freq:0.25" and make_predictor("freq:0.5:1").spec() == "freq:0.5:1"
    ours, reuse = engine_outputs(make_predictor("freq:0.25"))
    assert torch.isfinite(ours).all() and not torch.allclose(ours, reuse)
