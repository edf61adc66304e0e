"""Structures in the bench: compared at equal block-evaluation compute, not at equal interval."""

from cachepilot.bench.structures import best_at_budget, budget_table, structure_methods


def _row(method, knob, compute, psnr):
    return {"method": method, "knob": knob, "compute_fraction": compute, "psnr": psnr}


def test_best_at_budget_groups_by_family_and_respects_the_budget():
    rows = [_row("full", None, 1.0, 99.0), _row("fixed+taylor2", 3, 0.35, 30.0), _row("fixed+reuse", 5, 0.2, 20.0),
            _row("F1B0+fixed+taylor2", 3, 0.44, 40.0), _row("F1B0+fixed+reuse", 6, 0.31, 28.0),
            _row("fewer-steps", 0.3, 0.3, 25.0), _row("diffusers-fbcache", 0.1, 0.29, 27.0),
            _row("learned-policy", 0.3, 0.3, 50.0)]
    best = best_at_budget(rows, [0.3, 0.4])
    assert best["whole stack"][0.3]["psnr"] == 20.0 and best["whole stack"][0.4]["psnr"] == 30.0
    assert best["F1B0"][0.3]["psnr"] == 28.0 and 0.4 in best["F1B0"] and best["F1B0"][0.4]["psnr"] == 28.0
    assert best["fewer-steps"][0.3]["psnr"] == 25.0 and best["peers"][0.3]["psnr"] == 27.0
    assert "learned-policy" not in {r["method"] for family in best.values() for r in family.values()}
    assert "F1B0" in budget_table(rows, [0.3, 0.4])


def test_every_structure_method_names_its_structure_policy_and_predictor():
    names = {m.name for m in structure_methods()}
    assert {"F1B0+fixed+taylor2", "F1B1+fixed+reuse", "F1B0+threshold+reuse"} <= names
