import json

import pytest
import torch

from cachepilot import CheckpointError, InvalidInputError
from cachepilot.predictors.hyca import CONFIG_FILE, HyCa, fit_hyca
from cachepilot.predictors.spec import make_predictor
from cachepilot.predictors.taylor import Taylor

from .trajectories import engine_outputs, fill_history, polynomial

CANDIDATES = ["reuse", "taylor:1", "taylor:2"]


def _trajectory(seed: int, steps: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """(steps, residuals (steps, rows=2, tokens=3, channels=3)): channel 0 oscillates fast around a constant
    (extrapolating it overshoots), channel 1 is linear in the step, channel 2 quadratic."""
    g = torch.Generator().manual_seed(seed)
    a, b, c = (torch.randn(2, 3, generator=g) for _ in range(3))
    s = torch.arange(steps, dtype=torch.float32)[:, None, None]
    oscillating = a + 0.3 * torch.sin(2.5 * s) * b.abs()
    linear = a + 0.5 * s * b
    quadratic = a + 0.2 * s * b + 0.05 * s ** 2 * (c.abs() + 0.5)
    return torch.arange(steps), torch.stack([oscillating, linear, quadratic], -1)


def test_fit_picks_the_best_forecaster_per_channel_and_round_trips(tmp_path):
    hyca, errors = fit_hyca([_trajectory(0), _trajectory(1)], CANDIDATES, intervals=(2, 3))
    assert errors.shape == (3, 3) and torch.equal(hyca.choice, errors.argmin(0))
    assert hyca.choice[0] == 0 and hyca.choice[1] in (1, 2) and hyca.choice[2] == 2
    # until a schedule has 2 (3) computes Taylor 1 (2) falls back, so only the order of the errors is exact
    assert errors[2, 2] < errors[1, 2] < errors[0, 2] and errors[1, 1] < errors[0, 1]
    hyca.save_pretrained(tmp_path, {"intervals": [2, 3]})
    loaded = make_predictor(f"hyca:{tmp_path}")
    assert torch.equal(loaded.choice, hyca.choice) and loaded.spec() == f"hyca:{tmp_path}"
    assert json.loads((tmp_path / CONFIG_FILE).read_text())["candidates"] == CANDIDATES


def test_each_channel_takes_its_candidates_forecast():
    fn = polynomial(2)
    hyca = HyCa(["taylor:1", "taylor:2"], torch.tensor([0, 1, 1, 0]))
    history = fill_history(hyca, [[0, 1, 3], [0, 2, 5]], fn)
    forecast, t1, t2 = hyca.predict(history, 7), Taylor(1).predict(history, 7), Taylor(2).predict(history, 7)
    torch.testing.assert_close(forecast[..., [0, 3]], t1[..., [0, 3]])
    torch.testing.assert_close(forecast[..., [1, 2]], t2[..., [1, 2]])
    with pytest.raises(InvalidInputError, match="channels"):
        HyCa(["reuse"], torch.zeros(5, dtype=torch.long)).predict(history, 7)


def test_bad_tables_and_specs(tmp_path):
    with pytest.raises(InvalidInputError):
        HyCa(["reuse", "taylor:1"], torch.tensor([0, 2]))
    with pytest.raises(InvalidInputError):
        HyCa(["reuse", "magic"], torch.tensor([0, 1]))
    with pytest.raises(InvalidInputError):
        make_predictor("hyca")
    with pytest.raises(CheckpointError):
        make_predictor(f"hyca:{tmp_path / 'missing'}")


def test_engine_run(tmp_path):
    channels = 16  # the tiny DiT's hidden size
    HyCa(["reuse", "taylor:2"], torch.arange(channels) % 2).save_pretrained(tmp_path)
    ours, reuse = engine_outputs(make_predictor(f"hyca:{tmp_path}"))
    assert torch.isfinite(ours).all() and not torch.allclose(ours, reuse)
