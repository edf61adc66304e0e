from pathlib import Path

import torch

from cachepilot.bench.forecasters import FORECASTERS, forecaster_methods
from cachepilot.predictors.spec import make_predictor


def test_every_forecaster_method_is_a_fixed_schedule_with_a_parsed_spec():
    methods = forecaster_methods(20)
    names = [m.name for m in methods]
    assert len(set(names)) == len(names) and "fixed+hyca" in names
    assert all(name.startswith("fixed+") for name in names)
    for name, spec in FORECASTERS.items():
        assert make_predictor(spec).spec() == spec, name


def test_bench_registers_them():
    from cachepilot.bench.methods import all_methods

    names = {m.name for m in all_methods(20, None)}
    assert {f"fixed+{name}" for name in FORECASTERS} <= names and "fixed+taylor2" in names


def test_cost_script_runs_small(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2]))  # experiments/ is outside the package
    from experiments.forecaster_cost import main

    result = main(["--tokens", "16", "--dim", "64", "--rounds", "1", "--calls", "1", "--specs", "taylor:2", "dmd:2",
                   "hyca"])
    assert result["stack_ms"] > 0 and set(result["forecast"]) == {"taylor:2", "dmd:2", "hyca"}
    assert all(torch.isfinite(torch.tensor(v["of_stack"])) for v in result["forecast"].values())
