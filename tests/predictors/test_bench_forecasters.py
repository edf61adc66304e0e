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


def test_psnr_table_compares_with_the_best_taylor_and_reuse():
    from cachepilot.bench.forecasters import psnr_table

    psnr = {"fixed+reuse": [30, 20], "fixed+taylor1": [34, 22], "fixed+taylor2": [35, 21], "fixed+foca": [36, 23]}
    rows = [{"method": "full", "knob": None, "psnr": 100, "compute_fraction": 1.0}] + [
        {"method": m, "knob": k, "psnr": v[i], "compute_fraction": 1 / k} for m, v in psnr.items()
        for i, k in enumerate((2, 3))]
    lines = psnr_table(rows).splitlines()
    assert lines[0].startswith("| method | fixed:2 (0.50) | fixed:3 (0.33) |")
    assert lines[-1] == "| fixed+foca | 36.00 | 23.00 | +1.00 | +4.50 |"  # best Taylor: 35 then 22
