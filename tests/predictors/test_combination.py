import json

import pytest
import torch

from cachepilot import CheckpointError, InvalidInputError
from cachepilot.core.predictor import ForecastContext
from cachepilot.predictors.combination import CONFIG_FILE, Combination
from cachepilot.predictors.spec import make_predictor
from cachepilot.predictors.taylor import Reuse, Taylor

from .trajectories import engine_outputs, fill_history, polynomial


def _context(num_steps: int, policy: str) -> ForecastContext:
    like = torch.zeros(2, 16, 4)
    return ForecastContext(num_steps, like, like, policy)


def test_forecast_is_the_steps_weighted_sum_of_its_bases():
    weights = torch.zeros(10, 3)
    weights[7] = torch.tensor([0.25, -0.5, 1.25])
    weights[8] = torch.tensor([0.0, 1.0, 0.0])  # a zero weight: the base is not run
    combo = Combination(["reuse", "taylor:1", "taylor:2"], {(10, "fixed:3"): weights})
    history = fill_history(combo, [[0, 3, 6], [0, 2, 5]], polynomial(3))
    parts = [p.predict(history, 7) for p in (Reuse(), Taylor(1), Taylor(2))]
    expected = 0.25 * parts[0] - 0.5 * parts[1] + 1.25 * parts[2]
    torch.testing.assert_close(combo.predict(history, 7, None, _context(10, "fixed:3")), expected)
    torch.testing.assert_close(combo.predict(history, 8, None, _context(10, "fixed:3")), Taylor(1).predict(history, 8))
    rows = torch.tensor([1])
    torch.testing.assert_close(combo.predict(history, 7, rows, _context(10, "fixed:3")), expected[1:])
    assert combo.history_size == 3


def test_unfitted_count_or_policy_is_one_line_error():
    combo = Combination(["reuse", "taylor:1"], {(10, "fixed:2"): torch.zeros(10, 2)})
    history = fill_history(combo, [[0, 2], [0, 2]], polynomial(1))
    with pytest.raises(InvalidInputError, match="no weights for fixed:2 at 20 steps; fitted: fixed:2 at 10 steps"):
        combo.predict(history, 3, None, _context(20, "fixed:2"))
    with pytest.raises(InvalidInputError, match="no weights for fixed:3 at 10 steps"):
        combo.check(10, "fixed:3")
    combo.check(10, "fixed:2")
    with pytest.raises(InvalidInputError, match="ForecastContext"):
        combo.predict(history, 3)


def test_save_load_round_trip_and_bad_files(tmp_path):
    tables = {(10, "fixed:2"): torch.randn(10, 2), (20, "schedule:" + "10" * 10): torch.randn(20, 2)}
    Combination(["reuse", "taylor:1"], tables).save_pretrained(tmp_path, {"ridge": 0.001})
    loaded = make_predictor(f"combo:{tmp_path}")
    assert isinstance(loaded, Combination) and loaded.spec() == f"combo:{tmp_path}"
    assert set(loaded.tables) == set(tables)
    for key, table in tables.items():
        assert torch.equal(loaded.tables[key], table)
    assert json.loads((tmp_path / CONFIG_FILE).read_text())["ridge"] == 0.001
    with pytest.raises(CheckpointError, match="no combination forecaster"):
        make_predictor(f"combo:{tmp_path / 'missing'}")
    (tmp_path / CONFIG_FILE).write_text('{"bases": ["reuse", "taylor:1"], "tables": [{"name": "nope"}]}')
    with pytest.raises(CheckpointError, match="unreadable"):
        make_predictor(f"combo:{tmp_path}")
    with pytest.raises(InvalidInputError):
        make_predictor("combo")
    with pytest.raises(InvalidInputError, match="finite"):
        Combination(["reuse"], {(4, "fixed:2"): torch.full((4, 1), float("nan"))})
    with pytest.raises(InvalidInputError, match="finite"):
        Combination(["reuse"], {(4, "fixed:2"): torch.zeros(5, 1)})


def test_engine_run():
    steps = 8
    weights = torch.zeros(steps, 2)
    weights[:, 0], weights[:, 1] = 0.5, 0.5  # halfway between reuse and Taylor 1
    ours, reuse = engine_outputs(Combination(["reuse", "taylor:1"], {(steps, "fixed:2"): weights}), steps, 2)
    assert torch.isfinite(ours).all() and not torch.allclose(ours, reuse)


def test_uniform_bench_methods_and_table():
    from cachepilot.bench.forecasters import FRACTIONS, combination_method, uniform_methods, uniform_table
    from cachepilot.train.combination import uniform_schedule

    names = [m.name for m in uniform_methods(20)]
    assert "uniform+taylor1" in names and "uniform+dmd2" in names and len(set(names)) == len(names)
    combo = Combination(["reuse"], {(20, uniform_schedule(0.5, 20)): torch.ones(20, 1)})
    method = combination_method(20, combo)
    assert method.name == "uniform+combo" and list(method.knobs) == list(FRACTIONS)
    with pytest.raises(InvalidInputError, match="no weights for schedule:"):
        method.apply(object(), 0.2)  # refused before the pipeline is touched
    psnr = {"uniform+reuse": [30, 20], "uniform+taylor1": [34, 22], "uniform+combo": [36, 21]}
    rows = [{"method": "full", "knob": None, "psnr": 100, "compute_fraction": 1.0}] + [
        {"method": m, "knob": f, "psnr": v[i], "compute_fraction": f} for m, v in psnr.items()
        for i, f in enumerate((0.2, 0.5))]
    lines = uniform_table(rows).splitlines()
    assert lines[0] == "| method | 0.2 (0.20) | 0.5 (0.50) | mean Δ vs best training-free |"
    assert lines[-2] == "| uniform+combo | 36.00 | 21.00 | +0.50 |"  # best training-free: 34 then 22
    assert lines[-1] == "| best training-free | taylor1 | taylor1 | |"


def test_cost_script_runs_small(monkeypatch):
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2]))  # experiments/ is outside the package
    from experiments.combination_cost import main

    result = main(["--tokens", "16", "--dim", "64", "--rounds", "1", "--calls", "1"])
    assert "combo" in result["forecast"] and result["forecast"]["combo"]["ms"] > 0
